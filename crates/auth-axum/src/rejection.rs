//! [`AuthRejection`]: a refusal rendered in the format of the `AuthLayer` in front.

use std::fmt;

use auth_core::{AuthError, ErrorCode, RejectReason};
use auth_tower::RenderAuthError;
use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::StatusCode;

/// Why an extractor or guard refused a request: 401 without a context, 403
/// for a missing scope or access level, 503 when a resolver is down, or 500
/// when no `AuthLayer` runs in front of the route (a server misconfiguration;
/// never a pass).
///
/// Rendered, like the layer's own refusals, in the [`ErrorFormat`](auth_core::response::ErrorFormat)
/// the layer was configured with (see [`RenderAuthError`]).
#[derive(Debug)]
pub struct AuthRejection(Box<Refusal>);

/// Boxed: rejections travel in `Result`s and should stay small.
#[derive(Debug)]
struct Refusal {
    error: AuthError,
    response: http::Response<Bytes>,
}

impl AuthRejection {
    /// `error`, rendered as configured for the request whose parts or
    /// extensions are `req`.
    pub fn new(error: AuthError, req: &impl RenderAuthError) -> Self {
        if req.error_format().is_none() {
            return Self::layer_missing();
        }
        let response = req.render_auth_error(&error);
        Self(Box::new(Refusal { error, response }))
    }

    /// No `AuthLayer` ran for this request: 500, and an error in the logs.
    pub(crate) fn layer_missing() -> Self {
        let error = layer_missing();
        // Default format: there is no layer to say otherwise.
        let response = http::Extensions::new().render_auth_error(&error);
        Self(Box::new(Refusal { error, response }))
    }

    /// The refusal.
    pub fn error(&self) -> &AuthError {
        &self.0.error
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.0.response.status()
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        self.0.response.map(Body::from)
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.error, f)
    }
}

impl std::error::Error for AuthRejection {}

/// The 500 for a route with no `AuthLayer` in front of it, logged.
pub(crate) fn layer_missing() -> AuthError {
    misconfigured("an auth extractor or guard ran without an AuthLayer in front of it")
}

/// A 500 for a server misconfiguration, logged with `what`; the client gets a
/// generic message.
pub(crate) fn misconfigured(what: &'static str) -> AuthError {
    tracing::error!("{what}");
    AuthError::new(ErrorCode::Internal, RejectReason::Internal)
        .with_message("Authentication is not configured for this route")
}
