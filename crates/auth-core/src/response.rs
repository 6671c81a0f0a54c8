//! Rendering [`AuthError`]s as HTTP responses in the format a service chose.

use std::{fmt, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use serde::Serialize;

use crate::{AuthError, ErrorCode, RejectReason};

/// A function that renders errors in an application's own format.
pub type RenderFn = dyn Fn(&AuthError) -> Response<Bytes> + Send + Sync;

/// How error responses look. Every format is JSON with a machine-readable code.
///
/// ```
/// use auth_core::{AuthError, response::ErrorFormat, RejectReason};
/// let res = ErrorFormat::Envelope.render(&AuthError::unauthorized(RejectReason::Missing));
/// assert_eq!(res.status(), 401);
/// assert_eq!(
///     res.body().as_ref(),
///     br#"{"success":false,"error":{"code":"UNAUTHORIZED","message":"Invalid or missing API token"}}"#
/// );
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ErrorFormat {
    /// `{"error":"unauthorized","message":"…"}`.
    #[default]
    Flat,
    /// `{"success":false,"error":{"code":"UNAUTHORIZED","message":"…"}}`.
    Envelope,
    /// RFC 9457 `application/problem+json`, with the code as the `code` member.
    Problem,
    /// The application's own renderer. It should set the status and body;
    /// `WWW-Authenticate` and `Retry-After` are added when it does not.
    Custom(Arc<RenderFn>),
}

impl fmt::Debug for ErrorFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flat => "Flat",
            Self::Envelope => "Envelope",
            Self::Problem => "Problem",
            Self::Custom(_) => "Custom(..)",
        })
    }
}

/// Realm used in `WWW-Authenticate` by [`ErrorFormat::render`].
pub const DEFAULT_REALM: &str = "api";

impl ErrorFormat {
    /// An application-defined format.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&AuthError) -> Response<Bytes> + Send + Sync + 'static,
    {
        Self::Custom(Arc::new(f))
    }

    /// Renders `err` with realm [`DEFAULT_REALM`].
    pub fn render(&self, err: &AuthError) -> Response<Bytes> {
        self.render_in_realm(err, DEFAULT_REALM)
    }

    /// Renders `err`, naming `realm` in `WWW-Authenticate`.
    pub fn render_in_realm(&self, err: &AuthError, realm: &str) -> Response<Bytes> {
        let code = err.code().as_str();
        let message = err.message();
        let (body, content_type) = match self {
            Self::Flat => (
                to_json(&Flat {
                    error: code,
                    message,
                }),
                "application/json",
            ),
            Self::Envelope => (
                to_json(&Envelope {
                    success: false,
                    error: EnvelopeError {
                        code: &code.to_ascii_uppercase(),
                        message,
                    },
                }),
                "application/json",
            ),
            Self::Problem => (
                to_json(&Problem {
                    r#type: "about:blank",
                    title: err.status().canonical_reason().unwrap_or("Error"),
                    status: err.status().as_u16(),
                    detail: message,
                    code,
                }),
                "application/problem+json",
            ),
            Self::Custom(f) => {
                let mut res = f(err);
                add_auth_headers(&mut res, err, realm);
                return res;
            }
        };
        let mut res = Response::new(body);
        *res.status_mut() = err.status();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        add_auth_headers(&mut res, err, realm);
        res
    }
}

#[derive(Serialize)]
struct Flat<'a> {
    error: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    success: bool,
    error: EnvelopeError<'a>,
}

#[derive(Serialize)]
struct EnvelopeError<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Problem<'a> {
    r#type: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

fn to_json(v: &impl Serialize) -> Bytes {
    // Serializing these plain structs cannot fail.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn add_auth_headers(res: &mut Response<Bytes>, err: &AuthError, realm: &str) {
    let headers = res.headers_mut();
    if let Some(value) = www_authenticate(err, realm) {
        headers.entry(header::WWW_AUTHENTICATE).or_insert(value);
    }
    if let Some(after) = err.retry_after() {
        // Round up and never say 0: a client told "0" retries at once and fails again.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers
            .entry(header::RETRY_AFTER)
            .or_insert_with(|| HeaderValue::from(secs.max(1)));
    }
}

/// `WWW-Authenticate` per RFC 6750 §3: no error code when no credential came.
fn www_authenticate(err: &AuthError, realm: &str) -> Option<HeaderValue> {
    let realm = quote(realm);
    let value = match (err.code(), err.reason()) {
        (ErrorCode::Unauthorized, RejectReason::Missing) => format!("Bearer realm=\"{realm}\""),
        (ErrorCode::Unauthorized, _) => {
            format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
        }
        (ErrorCode::Forbidden, RejectReason::InsufficientScope) => match err.scope() {
            Some(scope) => format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                quote(scope)
            ),
            None => format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\""),
        },
        _ => return None,
    };
    HeaderValue::from_str(&value).ok()
}

fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn header(res: &Response<Bytes>, name: header::HeaderName) -> Option<&str> {
        res.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn flat_is_the_seed_format() {
        let res = ErrorFormat::Flat.render(&AuthError::unauthorized(RejectReason::Missing));
        assert_eq!(
            res.body().as_ref(),
            br#"{"error":"unauthorized","message":"Invalid or missing API token"}"#
        );
        assert_eq!(header(&res, header::CONTENT_TYPE), Some("application/json"));
        assert_eq!(
            header(&res, header::WWW_AUTHENTICATE),
            Some("Bearer realm=\"api\"")
        );
    }

    #[test]
    fn presented_credential_gets_invalid_token() {
        let res = ErrorFormat::Flat
            .render_in_realm(&AuthError::unauthorized(RejectReason::Revoked), "pod");
        assert_eq!(
            header(&res, header::WWW_AUTHENTICATE),
            Some("Bearer realm=\"pod\", error=\"invalid_token\"")
        );
    }

    #[test]
    fn missing_scope_names_it() {
        let res = ErrorFormat::Problem.render(&AuthError::missing_scope("chat.stream"));
        assert_eq!(res.status(), 403);
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            Some("application/problem+json")
        );
        assert!(header(&res, header::WWW_AUTHENTICATE)
            .unwrap()
            .contains("scope=\"chat.stream\""));
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["code"], "forbidden");
        assert_eq!(v["status"], 403);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        for (d, want) in [
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(1500), "2"),
            (Duration::ZERO, "1"),
        ] {
            let res = ErrorFormat::Flat.render(&AuthError::rate_limited(d));
            assert_eq!(res.status(), 429);
            assert_eq!(header(&res, header::RETRY_AFTER), Some(want));
        }
    }

    #[test]
    fn custom_format_keeps_auth_headers() {
        let f = ErrorFormat::custom(|e| {
            let mut r = Response::new(Bytes::from(e.code().as_str()));
            *r.status_mut() = e.status();
            r
        });
        let res = f.render(&AuthError::unauthorized(RejectReason::Missing));
        assert_eq!(res.body().as_ref(), b"unauthorized");
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
