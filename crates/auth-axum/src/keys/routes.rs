//! [`keys_router`]: the key-management routes and their handlers.

use std::{sync::Arc, time::Duration};

use auth_core::{
    audit::AuditQuery, audit::KeyCreated, store::KeyRecord, IssuedKey, KeyId, NewKey, Principal,
};
use axum::{
    extract::{rejection::PathRejection, rejection::QueryRejection, FromRequestParts, Path, Query},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Router,
};
use bytes::Bytes;
use serde::Serialize;

use super::{
    caller::Action,
    csrf,
    edit::{editable, edits_during_rotation, within_ceiling, EditKey},
    error::{ErrorStyle, KeyApiError},
    manager::{KeyManager, DEFAULT_PAGE, MAX_PAGE},
    owner::{KeyOwner, RequestKey},
    request::{parse_json, query_or, ActivityQuery, CreateKey, RotateKey},
    response::{json, key_managed, respond, CreatedKey, KeyList},
    usage::{dense, UsageParams},
};

type Manager = Extension<Arc<KeyManager>>;
type KeyPath = Result<Path<String>, PathRejection>;

/// The key-management router, with the account owner identified by the
/// extractor `O` (see [`KeyOwner`]). Nest it where the application wants it.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_axum::{keys_router, Auth, KeyManager, RequireScopeLayer};
/// use auth_core::*;
/// use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
/// use auth_tower::AuthLayer;
/// use axum::{body::Body, http::Request, Router};
/// use tower::ServiceExt;
///
/// let store = Arc::new(MemoryKeyStore::new());
/// let audit = Arc::new(MemoryAuditLog::default());
/// let hasher = SecretHasher::default();
/// # let hasher = SecretHasher::for_tests();
/// let issuer = KeyIssuer::new(store.clone(), hasher.clone(), TokenPrefix::new("st_").unwrap());
/// let verifier = Verifier::builder(store).hasher(hasher).build();
///
/// let keys = KeyManager::new(issuer.clone(), audit.clone())
///     .known_scopes(ScopeSet::parse(["nodes:read", "nodes:write", "tokens:manage"]).unwrap());
/// let app: Router = Router::new()
///     // The owner is the caller's effective user; a key may only grant what it holds.
///     .nest("/api/tokens", keys_router::<Auth, _>(keys).route_layer(RequireScopeLayer::one("tokens:manage")))
///     .layer(AuthLayer::builder(verifier).audit(audit).build());
///
/// let admin = issuer
///     .issue(NewKey::new(Principal::user("admin"), "bootstrap", ScopeSet::parse(["nodes:read", "tokens:manage"]).unwrap()))
///     .await
///     .unwrap();
/// let create = |scopes: &str| {
///     Request::post("/api/tokens")
///         .header("authorization", format!("Bearer {}", admin.token.expose_secret()))
///         .header("content-type", "application/json")
///         .body(Body::from(format!(r#"{{"name":"ci","scopes":{scopes}}}"#)))
///         .unwrap()
/// };
/// assert_eq!(app.clone().oneshot(create(r#"["nodes:read"]"#)).await.unwrap().status(), 201);
/// // Beyond what the calling key holds:
/// assert_eq!(app.clone().oneshot(create(r#"["nodes:write"]"#)).await.unwrap().status(), 403);
/// // Not a scope of this service:
/// assert_eq!(app.oneshot(create(r#"["nodes:delete"]"#)).await.unwrap().status(), 422);
/// # });
/// ```
pub fn keys_router<O, S>(manager: KeyManager) -> Router<S>
where
    O: KeyOwner + FromRequestParts<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(list::<O>).post(create::<O>))
        .route("/options", get(options::<O>))
        .route("/{id}", get(show::<O>).patch(edit::<O>).delete(revoke::<O>))
        .route("/{id}/rotate", post(rotate::<O>))
        .route("/{id}/activity", get(activity::<O>))
        .route("/{id}/usage", get(usage::<O>))
        .layer(axum::middleware::from_fn(csrf::guard))
        .layer(Extension(Arc::new(manager)))
}

/// 201 with the new key, marked so that the request's audit event names it
/// next to the key that made it.
fn created(issued: &IssuedKey, body: CreatedKey<'_>) -> Response {
    let mut res = json(StatusCode::CREATED, &body);
    res.extensions_mut().insert(KeyCreated(issued.record.id));
    res
}

async fn create<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
    body: Bytes,
) -> Response {
    key_managed(respond(&style, create_key(&m, &owner, &key, &body).await))
}

async fn create_key<O: KeyOwner>(
    m: &KeyManager,
    owner: &O,
    key: &RequestKey,
    body: &[u8],
) -> Result<Response, KeyApiError> {
    let caller = m.caller(owner, key, Action::Mint).await?;
    let mut req: CreateKey = parse_json(body, false)?;
    auth_core::policy::validate_name(&req.name)?;
    let expires_at = req.expiry()?;
    m.check_lifetime(expires_at)?;
    caller.check_end(expires_at)?;
    let scopes = match req.scopes()? {
        Some(asked) => m.checked_scopes(owner, &asked)?,
        None => m.default_scopes_for(owner),
    };
    let policy = req.policy(time::OffsetDateTime::now_utc())?;
    m.check_enforced(&policy)?;
    caller.check_policy(&policy)?;
    let mut new = NewKey::new(owner.principal().clone(), req.name, scopes).policy(policy);
    new.expires_at = expires_at;
    new.created_by = caller.key;
    let issued = m.issuer.issue(new).await?;
    Ok(created(&issued, CreatedKey::new(&issued)))
}

async fn list<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
) -> Response {
    let result = async {
        let caller = m.caller(&owner, &key, Action::Manage).await?;
        let who = owner.principal();
        let ceiling = owner.grantable_scopes();
        let now = time::OffsetDateTime::now_utc();
        // A key lists only the keys it may act on: a broader key's
        // metadata, last address and activity are not a narrow key's to see.
        let keys = m
            .issuer
            .list(who.user_id())
            .await?
            .into_iter()
            .filter(|r| r.owner == *who && caller.has_authority(r, ceiling))
            .map(|r| r.metadata_at(now, m.expiring()))
            .collect();
        Ok(json(StatusCode::OK, &KeyList { keys }))
    };
    respond(&style, result.await)
}

/// The owner's key named by the path; someone else's key is "no such key".
async fn owned_key(
    m: &KeyManager,
    owner: &Principal,
    path: KeyPath,
) -> Result<KeyRecord, KeyApiError> {
    let Ok(Path(id)) = path else {
        return Err(KeyApiError::no_such_key());
    };
    let id: KeyId = id.parse().map_err(|_| KeyApiError::no_such_key())?;
    match m.issuer.get(id).await? {
        Some(record) if record.owner == *owner => Ok(record),
        _ => Err(KeyApiError::no_such_key()),
    }
}

/// The owner's key named by the path, once the caller may manage keys and
/// has authority over that key (`Caller::check_authority`): every route
/// acting on one existing key goes through here (rotation, which also
/// mints, checks the same rule itself).
async fn managed_key<O: KeyOwner>(
    m: &KeyManager,
    owner: &O,
    key: &RequestKey,
    path: KeyPath,
) -> Result<KeyRecord, KeyApiError> {
    let caller = m.caller(owner, key, Action::Manage).await?;
    let record = owned_key(m, owner.principal(), path).await?;
    caller.check_authority(&record, owner.grantable_scopes())?;
    Ok(record)
}

async fn show<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
    path: KeyPath,
) -> Response {
    let result = async {
        let record = managed_key(&m, &owner, &key, path).await?;
        let now = time::OffsetDateTime::now_utc();
        Ok(json(StatusCode::OK, &record.metadata_at(now, m.expiring())))
    };
    respond(&style, result.await)
}

async fn edit<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
    path: KeyPath,
    body: Bytes,
) -> Response {
    key_managed(respond(
        &style,
        edit_key(&m, &owner, &key, path, &body).await,
    ))
}

async fn edit_key<O: KeyOwner>(
    m: &KeyManager,
    owner: &O,
    key: &RequestKey,
    path: KeyPath,
    body: &[u8],
) -> Result<Response, KeyApiError> {
    let record = managed_key(m, owner, key, path).await?;
    let req: EditKey = parse_json(body, false)?;
    if req.is_empty() {
        return Err(KeyApiError::field(
            "nothing_to_change",
            "Give at least one of name, scopes, expires_at, meta, enabled, ip_allowlist",
        ));
    }
    req.check_fields()?;
    let now = time::OffsetDateTime::now_utc();
    editable(&record, now)?;
    within_ceiling(&record, owner.grantable_scopes())?;
    // Key-backed callers may not loosen a key's address limit nor undo a
    // disabling (a leaked key could otherwise free itself or a sibling).
    if owner.acting_key().is_some() {
        req.check_tightening(&record)?;
    }
    // Compare-and-set: applied only to the key as read and checked above;
    // a concurrent rotation, revocation or edit makes it 409, never a
    // 200 for an edit that landed on a key already replaced or changed.
    let update = req.checked(m, owner, &record, now)?.if_unchanged(&record);
    // Every instance's cache drops the key before this returns here, and
    // within the change feed's propagation time elsewhere.
    let updated = m.issuer.store().update(record.id, &update).await?;
    Ok(json(
        StatusCode::OK,
        &updated.metadata_at(now, m.expiring()),
    ))
}

async fn revoke<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
    path: KeyPath,
) -> Response {
    let result = async {
        let record = managed_key(&m, &owner, &key, path).await?;
        if !m.issuer.revoke(record.id).await? {
            return Err(KeyApiError::no_such_key());
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    key_managed(respond(&style, result.await))
}

async fn rotate<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
    path: KeyPath,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = m.caller(&owner, &key, Action::Mint).await?;
        let record = owned_key(&m, owner.principal(), path).await?;
        // The replacement keeps the old key's scopes: no more than the
        // caller may grant, or a narrow key could mint a broad one.
        let ceiling = owner.grantable_scopes();
        if let Some(beyond) = record.scopes.iter().find(|s| !ceiling.has(s)) {
            return Err(KeyApiError::beyond_ceiling(beyond));
        }
        // The replacement keeps the old key's expiry, within the service's
        // maximum lifetime.
        let latest = m.latest_expiry();
        let expires_at = match (record.expires_at, latest) {
            (Some(e), Some(l)) => Some(e.min(l)),
            (e, l) => e.or(l),
        };
        caller.check_end(expires_at)?;
        // The replacement copies the old key's policy: the caller must have
        // authority over the old key (which bounds the copy too).
        caller.check_authority(&record, ceiling)?;
        let req: RotateKey = parse_json(&body, true)?;
        let grace = Duration::from_secs(req.grace_seconds);
        if grace > m.max_grace {
            return Err(KeyApiError::invalid(format!(
                "grace_seconds may be at most {}",
                m.max_grace.as_secs()
            )));
        }
        // The replacement gets the credits as they stand; an old key still
        // working would spend its own copy too, doubling them per rotation.
        if record.credits.is_some() && !grace.is_zero() {
            return Err(KeyApiError::field(
                "grace_not_allowed_with_credits",
                "A key with credits is rotated without grace: its credits move to the \
                 replacement and it stops at once (send grace_seconds 0 or no body)",
            ));
        }
        let mut issued = m
            .issuer
            .rotate_within(record.id, grace, caller.key, latest)
            .await?;
        let old = m.issuer.get(record.id).await?;
        // An edit that committed after the rotation read the old key and
        // before it retired it is carried over, before anyone holds the
        // new token; any later edit of the old key is refused (409).
        if let Some(old) = &old {
            let missed = edits_during_rotation(old, &issued.record, latest);
            if !missed.is_empty() {
                issued.record = m.issuer.store().update(issued.record.id, &missed).await?;
            }
        }
        let previous_ends = old.and_then(|old| old.revoked_at);
        let mut body = CreatedKey::new(&issued);
        body.rotated_from = Some(record.id);
        body.previous_key_ends_at = previous_ends;
        Ok(created(&issued, body))
    };
    key_managed(respond(&style, result.await))
}

/// What the activity route's query string takes.
const ACTIVITY_QUERY: &str =
    "Query parameters: limit (1-200) and before (a next_cursor), both integers";
/// What the usage route's query string takes.
const USAGE_QUERY: &str = "Query parameters: bucket (hour or day) and since (RFC 3339)";

/// [`managed_key`], then the query string (400 naming what it takes).
async fn managed_key_and_query<O: KeyOwner, T>(
    m: &KeyManager,
    owner: &O,
    key: &RequestKey,
    path: KeyPath,
    query: Result<Query<T>, QueryRejection>,
    takes: &'static str,
) -> Result<(KeyRecord, T), KeyApiError> {
    let record = managed_key(m, owner, key, path).await?;
    Ok((record, query_or(query, takes)?))
}

async fn activity<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
    path: KeyPath,
    query: Result<Query<ActivityQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let (record, q) =
            managed_key_and_query(&m, &owner, &key, path, query, ACTIVITY_QUERY).await?;
        let page = m
            .activity
            .query(
                &AuditQuery::default()
                    .key_id(record.id)
                    .before(q.before)
                    .limit(q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)),
            )
            .await?;
        Ok(json(StatusCode::OK, &page))
    };
    respond(&style, result.await)
}

async fn usage<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
    path: KeyPath,
    query: Result<Query<UsageParams>, QueryRejection>,
) -> Response {
    let result = async {
        let (record, params) =
            managed_key_and_query(&m, &owner, &key, path, query, USAGE_QUERY).await?;
        let now = time::OffsetDateTime::now_utc();
        let q = params.query(record.id, now)?;
        let counted = m.activity.usage(&q).await?;
        Ok(json(StatusCode::OK, &dense(&q, counted, now)))
    };
    respond(&style, result.await)
}

/// `GET /options`: what a "New key" form offers this owner.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct KeyOptions<'a> {
    /// The owner's user id.
    owner: &'a str,
    scopes: Vec<ScopeOption<'a>>,
    max_grace_seconds: u64,
}

/// A scope the form may offer.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct ScopeOption<'a> {
    name: &'a str,
    description: Option<&'a str>,
    /// Whether this owner may grant it.
    grantable: bool,
}

async fn options<O: KeyOwner>(
    style: ErrorStyle,
    Extension(m): Manager,
    owner: O,
    key: RequestKey,
) -> Response {
    if let Err(e) = m.caller(&owner, &key, Action::Manage).await {
        return respond(&style, Err(e));
    }
    let ceiling = owner.grantable_scopes();
    // Described scopes first, in their order; then the other known (or,
    // without a list of known scopes, grantable) ones.
    let mut names: Vec<&str> = m.descriptions.iter().map(|(n, _)| n.as_str()).collect();
    let rest: Vec<&str> = match &m.known_scopes {
        Some(known) => known.iter().collect(),
        None => ceiling.iter().collect(),
    };
    for name in rest {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if let Some(known) = &m.known_scopes {
        names.retain(|n| known.has(n));
    }
    let scopes = names
        .into_iter()
        .map(|name| ScopeOption {
            name,
            description: m
                .descriptions
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| d.as_str()),
            grantable: ceiling.has(name),
        })
        .collect();
    let body = KeyOptions {
        owner: owner.principal().user_id(),
        scopes,
        max_grace_seconds: m.max_grace.as_secs(),
    };
    respond(&style, Ok(json(StatusCode::OK, &body)))
}
