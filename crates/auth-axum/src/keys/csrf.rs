//! Cross-site request forgery defences of the key router.
//!
//! A cross-site HTML form can POST to the key router with the user's cookies
//! and one of three content types (`application/x-www-form-urlencoded`,
//! `multipart/form-data`, `text/plain`) without a CORS preflight. So:
//!
//! - every request that changes state must declare a JSON body
//!   (`application/json` or `application/*+json`), or have no body and no
//!   `Content-Type` at all; anything else is 415 `unsupported_media_type`.
//!   A browser only sends a JSON content type cross-site after a preflight
//!   the application never approves;
//! - with [`AllowedOrigins`] set on the [`KeyManager`](super::KeyManager)
//!   (for owners identified by a cookie session), a state-changing request
//!   whose `Origin` is not the service's own host (or an allowed origin) is
//!   403 `cross_origin_request`. Without an `Origin`, a browser's
//!   `Sec-Fetch-Site` must say `same-origin` or `none`; a request with
//!   neither header is not from a browser, and carries no ambient cookie
//!   by accident.

use std::sync::Arc;

use auth_core::AuthError;
use axum::{extract::Request, middleware::Next, response::Response, Extension};
use http::{header, HeaderMap, Method, StatusCode};

use super::{
    error::{ErrorStyle, KeyApiError},
    manager::KeyManager,
    origins::AllowedOrigins,
    response::respond,
};

/// Methods that change state (everything but GET, HEAD and OPTIONS).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `Content-Type` names JSON: `application/json` or `application/*+json`.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether the request may carry a body (a length other than 0, or chunked).
fn has_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => false,
        Some(v) => v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0),
    }
}

/// 415 unless the body is declared JSON (or there is no body and no type).
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), KeyApiError> {
    match headers.get(header::CONTENT_TYPE) {
        Some(ct) if ct.to_str().is_ok_and(is_json) => Ok(()),
        None if !has_body(headers) => Ok(()),
        Some(_) | None => Err(KeyApiError::Auth(AuthError::custom(
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request body must be JSON, declared with Content-Type: application/json",
        ))),
    }
}

/// 403 for a request from another origin than the allowed ones. The host is
/// the `Host` header or else the URI's authority (HTTP/2 sends `:authority`
/// and no `Host`).
pub(crate) fn check_origin(
    allowed: &AllowedOrigins,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<(), KeyApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    let refused = match headers.get(header::ORIGIN) {
        Some(origin) => !origin.to_str().is_ok_and(|o| allowed.allows(o, host)),
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|s| !matches!(s.to_str(), Ok("same-origin" | "none"))),
    };
    if refused {
        return Err(KeyApiError::Auth(AuthError::custom(
            "cross_origin_request",
            StatusCode::FORBIDDEN,
            "Cross-origin request refused: key management accepts changes only from this site",
        )));
    }
    Ok(())
}

/// The middleware in front of every key route: both checks, for
/// state-changing methods only.
pub(crate) async fn guard(
    style: ErrorStyle,
    Extension(m): Extension<Arc<KeyManager>>,
    req: Request,
    next: Next,
) -> Response {
    if changes_state(req.method()) {
        let checked = match &m.origins {
            Some(allowed) => check_origin(
                allowed,
                req.headers(),
                req.uri().authority().map(|a| a.as_str()),
            ),
            None => Ok(()),
        }
        .and_then(|()| check_content_type(req.headers()));
        if let Err(e) = checked {
            return respond(&style, Err(e));
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_json_bodies_pass() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            let h = headers(&[("content-type", ok), ("content-length", "2")]);
            assert!(check_content_type(&h).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "text/json",
            "",
        ] {
            let h = headers(&[("content-type", bad), ("content-length", "0")]);
            let e = check_content_type(&h).unwrap_err();
            assert!(
                matches!(e, KeyApiError::Auth(ref e) if e.status() == 415),
                "{bad}"
            );
        }
        // No type and no body (DELETE, rotate without options): fine.
        assert!(check_content_type(&headers(&[])).is_ok());
        assert!(check_content_type(&headers(&[("content-length", "0")])).is_ok());
        // A body without a type is refused.
        assert!(check_content_type(&headers(&[("content-length", "12")])).is_err());
        assert!(check_content_type(&headers(&[("transfer-encoding", "chunked")])).is_err());
    }

    #[test]
    fn origin_must_be_this_host_or_listed() {
        let same = AllowedOrigins::same_host();
        let listed = AllowedOrigins::with(["https://App.example.com/"]);
        let h = |origin: &'static str| headers(&[("host", "keys.example.com"), ("origin", origin)]);
        assert!(check_origin(&same, &h("https://keys.example.com"), None).is_ok());
        assert!(check_origin(&same, &h("http://KEYS.example.com"), None).is_ok());
        assert!(check_origin(&same, &h("https://evil.example"), None).is_err());
        assert!(check_origin(&same, &h("https://keys.example.com.evil.example"), None).is_err());
        assert!(check_origin(&same, &h("null"), None).is_err());
        assert!(check_origin(&listed, &h("https://app.example.com"), None).is_ok());
        assert!(check_origin(&listed, &h("http://app.example.com"), None).is_err());
        // No Origin: the fetch metadata decides; neither header: not a browser.
        let fetch = |site: &'static str| headers(&[("host", "k"), ("sec-fetch-site", site)]);
        assert!(check_origin(&same, &fetch("same-origin"), None).is_ok());
        assert!(check_origin(&same, &fetch("none"), None).is_ok());
        assert!(check_origin(&same, &fetch("cross-site"), None).is_err());
        assert!(check_origin(&same, &fetch("same-site"), None).is_err());
        assert!(check_origin(&same, &headers(&[("host", "k")]), None).is_ok());
        // HTTP/2: no Host header, the authority comes with the URI.
        let h2 = headers(&[("origin", "https://keys.example.com")]);
        assert!(check_origin(&same, &h2, Some("keys.example.com")).is_ok());
        assert!(check_origin(&same, &h2, Some("evil.example")).is_err());
        assert!(
            check_origin(&same, &h2, None).is_err(),
            "no host at all: refused"
        );
        let e = check_origin(&same, &h("https://evil.example"), None).unwrap_err();
        assert!(
            matches!(e, KeyApiError::Auth(ref e) if e.status() == 403 && e.code().as_str() == "cross_origin_request")
        );
    }
}
