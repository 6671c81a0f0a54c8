//! Per-resource access levels: who may do what to one resource.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use auth_core::{AccessLevel, AuthContext, AuthError, ErrorCode, Principal, RejectReason};
use auth_tower::{AuthRealm, RenderAuthError, ResolveError};
use axum::extract::FromRequestParts;
use http::{request::Parts, Extensions};

use crate::{auth::required, rejection::misconfigured, AuthRejection};

/// The application's record of grants: a principal's [`AccessLevel`] on a
/// resource (Owner 0, Admin 1, Editor 2, Viewer 3), or `None` for
/// no access.
///
/// ```
/// use async_trait::async_trait;
/// use auth_axum::GrantResolver;
/// use auth_core::{AccessLevel, Principal};
/// use auth_tower::ResolveError;
///
/// struct OwnersOnly;
///
/// #[async_trait]
/// impl GrantResolver for OwnersOnly {
///     async fn level(&self, who: &Principal, resource: &str) -> Result<Option<AccessLevel>, ResolveError> {
///         Ok((resource.starts_with(&format!("{}/", who.user_id()))).then_some(AccessLevel::Owner))
///     }
/// }
/// ```
#[async_trait]
pub trait GrantResolver: Send + Sync + 'static {
    /// `principal`'s level on `resource_id`, if any.
    async fn level(
        &self,
        principal: &Principal,
        resource_id: &str,
    ) -> Result<Option<AccessLevel>, ResolveError>;
}

/// A shared [`GrantResolver`]. Cheap to clone. Put it in the request
/// extensions (`.layer(Extension(grants))`) for the [`Access`] extractor.
#[derive(Clone)]
pub struct Grants(Arc<dyn GrantResolver>);

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Grants(..)")
    }
}

impl Grants {
    /// Wraps `resolver`.
    pub fn new(resolver: impl GrantResolver) -> Self {
        Self(Arc::new(resolver))
    }

    /// The effective principal's level on `resource_id` if it is at least
    /// `required`; else 403 `forbidden` (no grant, or too low), or 503 when
    /// the resolver fails.
    pub async fn require(
        &self,
        ctx: &AuthContext,
        resource_id: &str,
        required: AccessLevel,
    ) -> Result<AccessLevel, AuthError> {
        match self.0.level(ctx.effective_principal(), resource_id).await {
            Ok(Some(level)) if level.allows(required) => Ok(level),
            Ok(Some(level)) => Err(AuthError::new(
                ErrorCode::Forbidden,
                RejectReason::InsufficientAccess,
            )
            .with_message(format!(
                "This action needs {required} access to the resource; you have {level} access"
            ))),
            Ok(None) => Err(
                AuthError::new(ErrorCode::Forbidden, RejectReason::InsufficientAccess)
                    .with_message("No access to this resource"),
            ),
            Err(e) => {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                tracing::warn!(error = %e, cause = cause.as_deref().unwrap_or(""), "grant resolver failed");
                Err(AuthError::new(
                    ErrorCode::Unavailable,
                    RejectReason::StoreUnavailable,
                ))
            }
        }
    }
}

/// A handler argument that checks access levels on resources for the
/// request's effective principal, answering refusals in the configured format.
///
/// Needs [`Grants`] in the request extensions and an `AuthLayer` in front.
///
/// ```
/// use std::sync::Arc;
/// use auth_axum::{Access, Grants, GrantResolver};
/// use auth_core::{AccessLevel, Principal};
/// use axum::{extract::Path, routing::put, Extension, Router};
///
/// async fn edit(access: Access, Path(id): Path<String>) -> Result<String, auth_axum::AuthRejection> {
///     let level = access.require(&id, AccessLevel::Editor).await?;
///     Ok(format!("editing {id} as {level}"))
/// }
///
/// # fn app(verifier: auth_core::Verifier, grants: Grants) -> Router {
/// Router::new()
///     .route("/docs/{id}", put(edit))
///     .layer(Extension(grants))
///     .layer(auth_tower::AuthLayer::new(verifier))
/// # }
/// ```
pub struct Access {
    ctx: AuthContext,
    grants: Grants,
    // What `RenderAuthError` needs, copied from the request.
    render: Extensions,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// The request's context.
    pub fn context(&self) -> &AuthContext {
        &self.ctx
    }

    /// The effective principal's level on `resource_id` if it is at least `required`.
    pub async fn require(
        &self,
        resource_id: &str,
        required: AccessLevel,
    ) -> Result<AccessLevel, AuthRejection> {
        self.grants
            .require(&self.ctx, resource_id, required)
            .await
            .map_err(|e| AuthRejection::new(e, &self.render))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ctx = required(parts)?.clone();
        let Some(grants) = parts.extensions.get::<Grants>().cloned() else {
            let err =
                misconfigured("the Access extractor needs `Grants` in the request extensions");
            return Err(AuthRejection::new(err, parts));
        };
        let mut render = Extensions::new();
        if let Some(format) = parts.error_format() {
            render.insert(format.clone());
        }
        if let Some(realm) = parts.extensions.get::<AuthRealm>() {
            render.insert(realm.clone());
        }
        Ok(Self {
            ctx,
            grants,
            render,
        })
    }
}
