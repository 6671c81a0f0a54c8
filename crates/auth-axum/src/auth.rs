//! [`Auth`]: the request's [`AuthContext`] as a handler argument.

use std::ops::Deref;

use auth_core::{AuthContext, AuthError, RejectReason};
use auth_tower::RenderAuthError;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::AuthRejection;

/// Extracts the [`AuthContext`] the `AuthLayer` put in the request.
///
/// `Auth` refuses with 401 (in the layer's configured format) when the request
/// has no context, which happens behind a layer in optional mode.
/// `Option<Auth>` gives `None` instead. Both refuse with 500 if no `AuthLayer`
/// runs in front of the route, so a forgotten layer fails closed.
///
/// # Why a newtype
///
/// `AuthContext` belongs to `auth-core` and `FromRequestParts` to axum, so
/// neither crate here may implement one for the other. A wrapper keeps
/// `auth-core` free of axum; destructuring (`Auth(ctx): Auth`) or `Deref`
/// gives the context.
///
/// ```
/// use auth_axum::Auth;
/// use axum::{routing::get, Router};
///
/// async fn me(Auth(ctx): Auth) -> String {
///     format!("hello {}", ctx.effective_user())
/// }
///
/// async fn greeting(auth: Option<Auth>) -> String {
///     match auth {
///         Some(ctx) => format!("hello {}", ctx.effective_user()),
///         None => "hello stranger".to_owned(),
///     }
/// }
///
/// # fn app(verifier: auth_core::Verifier) -> Router {
/// Router::new()
///     .route("/me", get(me))
///     .route("/greeting", get(greeting))
///     .layer(auth_tower::AuthLayer::builder(verifier).optional().build())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Auth(pub AuthContext);

impl Deref for Auth {
    type Target = AuthContext;

    fn deref(&self) -> &AuthContext {
        &self.0
    }
}

impl From<Auth> for AuthContext {
    fn from(auth: Auth) -> Self {
        auth.0
    }
}

/// The context, `Ok(None)` if the layer let the request through without one.
pub(crate) fn context(parts: &Parts) -> Result<Option<&AuthContext>, AuthRejection> {
    if parts.error_format().is_none() {
        return Err(AuthRejection::layer_missing());
    }
    Ok(parts.extensions.get::<AuthContext>())
}

/// The context, or 401.
pub(crate) fn required(parts: &Parts) -> Result<&AuthContext, AuthRejection> {
    context(parts)?
        .ok_or_else(|| AuthRejection::new(AuthError::unauthorized(RejectReason::Missing), parts))
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        required(parts).map(|ctx| Auth(ctx.clone()))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Auth {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(context(parts)?.map(|ctx| Auth(ctx.clone())))
    }
}
