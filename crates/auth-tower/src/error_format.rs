//! Finding the error format an [`AuthLayer`](crate::AuthLayer) was configured
//! with, from anywhere behind it.
//!
//! The layer leaves its [`ErrorFormat`] in the request extensions (and an
//! [`AuthRealm`] when the realm is not [`DEFAULT_REALM`]). An authenticated
//! request with the default format carries only its
//! [`AuthContext`]: the context says a layer ran, and absence of a format
//! means the default, so the hot path makes one extension entry, not two.
//! Extractors, guards and later layers such as a rate limiter render their
//! own refusals with [`RenderAuthError`], so a service answers every
//! auth-related error in one format.
//!
//! A layer that does not want to depend on this crate can read the
//! [`ErrorFormat`] (an `auth-core` type) from the extensions directly,
//! taking [`ErrorFormat::Flat`] when there is none.
//!
//! ```
//! use auth_core::{AuthError, response::ErrorFormat, RejectReason};
//! use auth_tower::RenderAuthError;
//!
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(ErrorFormat::Envelope); // done by AuthLayer
//! let res = req.render_auth_error(&AuthError::unauthorized(RejectReason::Missing));
//! assert_eq!(res.status(), 401);
//! assert!(res.body().starts_with(br#"{"success":false"#));
//! ```

use std::sync::Arc;

use auth_core::{response::ErrorFormat, response::DEFAULT_REALM, AuthContext, AuthError};
use bytes::Bytes;
use http::{request::Parts, Extensions, Request, Response};

/// What an authenticated request without a format entry uses.
static DEFAULT_FORMAT: ErrorFormat = ErrorFormat::Flat;

/// The `WWW-Authenticate` realm, in the extensions when it is not
/// [`DEFAULT_REALM`] (absent means the default, so the common case costs nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRealm(pub Arc<str>);

/// Renders an [`AuthError`] in the format configured on the [`AuthLayer`](crate::AuthLayer)
/// in front of this request.
///
/// Implemented for [`Extensions`], [`Parts`] and [`Request`]. Without a layer
/// in front, the default [`ErrorFormat::Flat`] and [`DEFAULT_REALM`] are used.
pub trait RenderAuthError {
    /// The request's extensions.
    fn auth_extensions(&self) -> &Extensions;

    /// The configured format, if an `AuthLayer` is in front of this request
    /// (`None` means no layer ran: callers fail closed on it).
    fn error_format(&self) -> Option<&ErrorFormat> {
        let ext = self.auth_extensions();
        ext.get::<ErrorFormat>()
            .or_else(|| ext.get::<AuthContext>().map(|_| &DEFAULT_FORMAT))
    }

    /// The configured `WWW-Authenticate` realm.
    fn auth_realm(&self) -> &str {
        self.auth_extensions()
            .get::<AuthRealm>()
            .map_or(DEFAULT_REALM, |r| &r.0)
    }

    /// `err` as a response in the configured format and realm.
    fn render_auth_error(&self, err: &AuthError) -> Response<Bytes> {
        self.error_format()
            .unwrap_or(&DEFAULT_FORMAT)
            .render_in_realm(err, self.auth_realm())
    }
}

impl RenderAuthError for Extensions {
    fn auth_extensions(&self) -> &Extensions {
        self
    }
}

impl RenderAuthError for Parts {
    fn auth_extensions(&self) -> &Extensions {
        &self.extensions
    }
}

impl<B> RenderAuthError for Request<B> {
    fn auth_extensions(&self) -> &Extensions {
        self.extensions()
    }
}

#[cfg(test)]
mod tests {
    use auth_core::RejectReason;

    use super::*;

    #[test]
    fn defaults_without_a_layer() {
        let ext = Extensions::new();
        assert!(ext.error_format().is_none());
        let res = ext.render_auth_error(&AuthError::unauthorized(RejectReason::Missing));
        assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"api\"");
        assert!(res.body().starts_with(br#"{"error":"unauthorized""#));
    }

    #[test]
    fn uses_configured_format_and_realm() {
        let mut ext = Extensions::new();
        ext.insert(ErrorFormat::Problem);
        ext.insert(AuthRealm("pod".into()));
        let res = ext.render_auth_error(&AuthError::unauthorized(RejectReason::Revoked));
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(
            res.headers()["www-authenticate"],
            "Bearer realm=\"pod\", error=\"invalid_token\""
        );
    }
}
