//! The administrators' view: every key (or every key of one organisation),
//! filtered and paged, and revocation of any of them.

use std::sync::Arc;

use auth_core::{
    store::KeyCursor, store::KeyMetadata, store::KeyQuery, store::KeyRecord, store::StateFilter,
    AuthError, ErrorCode, KeyId, RejectReason,
};
use axum::{
    extract::{rejection::PathRejection, rejection::QueryRejection, FromRequestParts, Path, Query},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Extension, Router,
};
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    csrf,
    error::{ErrorStyle, KeyApiError},
    manager::KeyManager,
    owner::RequestKey,
    request::query_or,
    response::{json, key_managed, respond},
};

/// Default page of the admin listing.
const DEFAULT_ADMIN_PAGE: usize = 100;

/// An administrator of keys, as the application identifies them: implement
/// it on the extractor that does the application's own admin check (and
/// rejects everyone else).
///
/// ```
/// use auth_axum::KeyAdmin;
/// use auth_core::KeyId;
///
/// /// An organisation's administrator sees only that organisation's keys.
/// struct OrgAdmin { org: String, key: Option<KeyId> }
///
/// impl KeyAdmin for OrgAdmin {
///     fn organisation(&self) -> Option<&str> { Some(&self.org) }
///     fn acting_key(&self) -> Option<KeyId> { self.key }
/// }
/// ```
pub trait KeyAdmin: Send + Sync + 'static {
    /// The only organisation whose keys this administrator sees and
    /// revokes; `None` for a service-wide administrator (every key).
    fn organisation(&self) -> Option<&str>;

    /// The API key making the request, if any: a key replaced by rotation
    /// may not administer keys (403), so it cannot revoke its replacement.
    /// Fails closed as [`KeyOwner::acting_key`](crate::KeyOwner::acting_key)
    /// does: a request the `AuthLayer` authenticated with a key this does
    /// not report is refused (500).
    fn acting_key(&self) -> Option<KeyId> {
        None
    }
}

/// The administrators' key router, with the administrator identified (and
/// checked) by the extractor `A`. Mount it behind the application's own
/// admin check:
///
/// | Route | Answer |
/// |---|---|
/// | `GET /?owner=&org=&state=active\|disabled\|revoked\|expired&last_used_before=<RFC 3339>&created_by=<key id>&limit=&after=` | 200 `{"keys": [...], "next_cursor"}`: newest first, `limit` 1-500 (default 100); pass `next_cursor` as `after` for the next page |
/// | `GET /{id}` | 200: one key's metadata |
/// | `DELETE /{id}` | 204: revoked, effective on the next request |
///
/// An administrator limited to an organisation ([`KeyAdmin::organisation`])
/// sees only its keys: asking for another `org` is 403, another
/// organisation's key id is 404, like a key that does not exist.
/// `last_used_before` includes keys never used. Refusals follow the key
/// router's (JSON errors in the `AuthLayer`'s format, 503 when the store is
/// down, the same CSRF checks on `DELETE`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_axum::{admin_keys_router, KeyAdmin, KeyManager};
/// use auth_core::*;
/// use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
/// use axum::{body::Body, extract::FromRequestParts, http::{request::Parts, Request, StatusCode}, Router};
/// use tower::ServiceExt;
///
/// /// Everyone who reaches this router is a service-wide admin (the
/// /// application put its own check in front).
/// struct Operator;
/// impl<S: Send + Sync> FromRequestParts<S> for Operator {
///     type Rejection = StatusCode;
///     async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, StatusCode> { Ok(Operator) }
/// }
/// impl KeyAdmin for Operator {
///     fn organisation(&self) -> Option<&str> { None }
/// }
///
/// let store = Arc::new(MemoryKeyStore::new());
/// let issuer = KeyIssuer::new(store, SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
/// issuer.issue(NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty())).await.unwrap();
/// let manager = KeyManager::new(issuer, Arc::new(MemoryAuditLog::default()));
/// let app: Router = Router::new().nest("/admin/keys", admin_keys_router::<Operator, _>(manager));
///
/// let req = Request::get("/admin/keys?owner=ana&state=active").body(Body::empty()).unwrap();
/// let res = app.oneshot(req).await.unwrap();
/// assert_eq!(res.status(), 200);
/// # });
/// ```
pub fn admin_keys_router<A, S>(manager: KeyManager) -> Router<S>
where
    A: KeyAdmin + FromRequestParts<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(list::<A>))
        .route("/{id}", get(show::<A>).delete(revoke::<A>))
        .layer(axum::middleware::from_fn(csrf::guard))
        .layer(Extension(Arc::new(manager)))
}

type Manager = Extension<Arc<KeyManager>>;

/// `GET /` query parameters, strictly.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Only this user's keys.
    owner: Option<String>,
    /// Only this organisation's keys.
    org: Option<String>,
    #[cfg_attr(feature = "openapi", param(inline))]
    state: Option<StateFilter>,
    /// RFC 3339; keys never used included.
    last_used_before: Option<String>,
    /// Only the keys this key made.
    created_by: Option<String>,
    /// 1-500 (default 100).
    limit: Option<usize>,
    /// A `next_cursor` from the previous page.
    after: Option<String>,
}

/// `GET /`: a page of keys, newest first.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct AdminKeyList {
    keys: Vec<KeyMetadata>,
    /// Pass as `after` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// 403 for a replaced key (see [`KeyAdmin::acting_key`]); 500 for an
/// administrator that does not report the key the layer verified.
async fn check_admin<A: KeyAdmin>(
    m: &KeyManager,
    admin: &A,
    key: &RequestKey,
) -> Result<(), KeyApiError> {
    if key.0.is_some() && admin.acting_key() != key.0 {
        tracing::error!(
            "the KeyAdmin of the admin key router does not report the API key that \
             authenticated the request (KeyAdmin::acting_key): request refused"
        );
        return Err(KeyApiError::Auth(
            AuthError::new(ErrorCode::Internal, RejectReason::Internal).with_message(
                "This service cannot tell which key is making the request, so it administers \
                 no keys for it",
            ),
        ));
    }
    let Some(id) = admin.acting_key() else {
        return Ok(());
    };
    let record = m.issuer.get(id).await?;
    if record.is_none_or(|r| r.replaced_by.is_some()) {
        return Err(KeyApiError::Auth(
            AuthError::new(ErrorCode::Forbidden, RejectReason::Revoked).with_message(
                "This key has been replaced by rotation: it cannot administer keys. Use its replacement",
            ),
        ));
    }
    Ok(())
}

impl ListParams {
    fn query<A: KeyAdmin>(self, admin: &A) -> Result<KeyQuery, KeyApiError> {
        let org = match (admin.organisation(), self.org) {
            (Some(mine), Some(asked)) if asked != mine => {
                return Err(KeyApiError::Auth(AuthError::forbidden(
                    RejectReason::InsufficientAccess,
                    "You administer the keys of your own organisation only",
                )))
            }
            (Some(mine), _) => Some(mine.to_owned()),
            (None, asked) => asked,
        };
        let last_used_before = self
            .last_used_before
            .map(|t| {
                OffsetDateTime::parse(&t, &Rfc3339).map_err(|_| {
                    KeyApiError::invalid("last_used_before must be an RFC 3339 date-time")
                })
            })
            .transpose()?;
        let created_by = self
            .created_by
            .map(|k| {
                k.parse::<KeyId>()
                    .map_err(|_| KeyApiError::invalid("created_by must be a key id"))
            })
            .transpose()?;
        let after = self
            .after
            .map(|c| {
                c.parse::<KeyCursor>().map_err(|_| {
                    KeyApiError::invalid("after must be a next_cursor from a previous page")
                })
            })
            .transpose()?;
        let mut query = KeyQuery::default().limit(self.limit.unwrap_or(DEFAULT_ADMIN_PAGE));
        query.owner = self.owner;
        query.org = org;
        query.state = self.state;
        query.last_used_before = last_used_before;
        query.created_by = created_by;
        query.after = after;
        Ok(query)
    }
}

async fn list<A: KeyAdmin>(
    style: ErrorStyle,
    Extension(m): Manager,
    admin: A,
    key: RequestKey,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let result = async {
        check_admin(&m, &admin, &key).await?;
        let params = query_or(
            params,
            "Query parameters: owner, org, state (active, disabled, revoked or expired), \
             last_used_before (RFC 3339), created_by (key id), limit (1-500), after (a next_cursor)",
        )?;
        let query = params.query(&admin)?;
        let now = m.issuer.wall_clock().now();
        let page = m.issuer.store().list_keys(&query, now).await?;
        let body = AdminKeyList {
            keys: page
                .keys
                .iter()
                .map(|r| r.metadata_at(now, m.expiring()))
                .collect(),
            next_cursor: page.next.map(|c| c.to_string()),
        };
        Ok(json(StatusCode::OK, &body))
    };
    respond(&style, result.await)
}

/// The key named by the path, if this administrator may see it; any other
/// is "no such key", so ids of other organisations' keys cannot be probed.
async fn visible_key<A: KeyAdmin>(
    m: &KeyManager,
    admin: &A,
    path: Result<Path<String>, PathRejection>,
) -> Result<KeyRecord, KeyApiError> {
    let Ok(Path(id)) = path else {
        return Err(KeyApiError::no_such_key());
    };
    let id: KeyId = id.parse().map_err(|_| KeyApiError::no_such_key())?;
    match m.issuer.get(id).await? {
        Some(r)
            if admin
                .organisation()
                .is_none_or(|o| r.owner.org_id() == Some(o)) =>
        {
            Ok(r)
        }
        _ => Err(KeyApiError::no_such_key()),
    }
}

async fn show<A: KeyAdmin>(
    style: ErrorStyle,
    Extension(m): Manager,
    admin: A,
    key: RequestKey,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        check_admin(&m, &admin, &key).await?;
        let record = visible_key(&m, &admin, path).await?;
        let now = m.issuer.wall_clock().now();
        Ok(json(StatusCode::OK, &record.metadata_at(now, m.expiring())))
    };
    respond(&style, result.await)
}

async fn revoke<A: KeyAdmin>(
    style: ErrorStyle,
    Extension(m): Manager,
    admin: A,
    key: RequestKey,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        check_admin(&m, &admin, &key).await?;
        let record = visible_key(&m, &admin, path).await?;
        if !m.issuer.revoke(record.id).await? {
            return Err(KeyApiError::no_such_key());
        }
        tracing::info!(key_id = %record.id, owner = record.owner.user_id(), "key revoked by an administrator");
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    key_managed(respond(&style, result.await))
}
