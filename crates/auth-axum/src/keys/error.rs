//! Refusals of the key-management routes, in the `AuthLayer`'s error format.

use std::convert::Infallible;

use auth_core::{store::StoreError, AuthError, ErrorCode, IssueError, RejectReason};
use auth_tower::{AuthRealm, RenderAuthError};
use axum::{body::Body, extract::FromRequestParts, response::Response};
use http::{request::Parts, Extensions};

/// Why a key-management request was refused.
#[derive(Debug)]
pub(crate) enum KeyApiError {
    /// Anything `AuthError` has a code for: 400, 403, 404, 422, 500, 503.
    Auth(AuthError),
    /// 409 `conflict`: the key is revoked, expired or already rotated.
    Conflict(String),
}

impl KeyApiError {
    /// 404 for a key that does not exist or belongs to someone else: the two
    /// look the same, so ids of other users' keys cannot be probed.
    pub(crate) fn no_such_key() -> Self {
        Self::Auth(AuthError::not_found("No such key"))
    }

    /// 422 with `message`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Auth(AuthError::unprocessable(message.into()))
    }

    /// 422 with a code of its own naming what is wrong, e.g. `meta_too_large`.
    pub(crate) fn field(code: &'static str, message: impl Into<String>) -> Self {
        Self::Auth(AuthError::custom(
            code,
            http::StatusCode::UNPROCESSABLE_ENTITY,
            message.into(),
        ))
    }

    /// 400 with `message`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::Auth(AuthError::bad_request(message.into()))
    }

    /// 403: the owner may not grant `scope`.
    pub(crate) fn beyond_ceiling(scope: &str) -> Self {
        Self::Auth(
            AuthError::new(ErrorCode::Forbidden, RejectReason::InsufficientAccess)
                .with_message(format!("You may not grant the scope '{scope}'")),
        )
    }
}

impl From<StoreError> for KeyApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::no_such_key(),
            StoreError::Conflict(m) => Self::Conflict(m),
            // `Unavailable`, `Corrupt` and any failure added later.
            _ => {
                // The detail may describe infrastructure: logs only.
                tracing::warn!(error = %e, "key store failed during key management");
                Self::Auth(AuthError::unavailable("Key store temporarily unavailable"))
            }
        }
    }
}

impl From<IssueError> for KeyApiError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::InvalidName | IssueError::InvalidExpiry => Self::invalid(e.to_string()),
            IssueError::NotFound => Self::no_such_key(),
            IssueError::Conflict(m) => Self::Conflict(m),
            IssueError::Unavailable(store) => store.into(),
            IssueError::Hash(h) => {
                tracing::error!(error = %h, "hashing a new key failed");
                Self::Auth(
                    AuthError::new(ErrorCode::Internal, RejectReason::Internal)
                        .with_message("The key could not be issued"),
                )
            }
            // A failure added later: fail closed, detail in the logs only.
            _ => {
                tracing::error!(error = %e, "issuing a key failed");
                Self::Auth(
                    AuthError::new(ErrorCode::Internal, RejectReason::Internal)
                        .with_message("The key could not be issued"),
                )
            }
        }
    }
}

/// The error format and realm of the `AuthLayer` in front, copied from the
/// request (absent: the flat format, as for any refusal without a layer).
pub(crate) struct ErrorStyle(Extensions);

impl<S: Send + Sync> FromRequestParts<S> for ErrorStyle {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let mut ext = Extensions::new();
        if let Some(format) = parts.error_format() {
            ext.insert(format.clone());
        }
        if let Some(realm) = parts.extensions.get::<AuthRealm>() {
            ext.insert(realm.clone());
        }
        Ok(Self(ext))
    }
}

impl ErrorStyle {
    /// `err` as a response in this style.
    pub(crate) fn render(&self, err: KeyApiError) -> Response {
        match err {
            KeyApiError::Auth(e) => self.0.render_auth_error(&e).map(Body::from),
            KeyApiError::Conflict(message) => self
                .0
                .render_auth_error(&AuthError::conflict(message))
                .map(Body::from),
        }
    }
}
