//! Cross-site request forgery defences of the key router.
//!
//! A cross-site HTML form can POST to the key router with the user's cookies
//! and one of three content types (`application/x-www-form-urlencoded`,
//! `multipart/form-data`, `text/plain`) without a CORS preflight, and a
//! `fetch` with `mode: "no-cors"` can send a body-less `POST` or `DELETE`
//! the same way. So:
//!
//! - every request that changes state must declare a JSON body
//!   (`application/json` or `application/*+json`), or have no body and no
//!   `Content-Type` at all; anything else is 415 `unsupported_media_type`.
//!   A browser only sends a JSON content type cross-site after a preflight
//!   the application never approves;
//! - every state-changing request that carries a `Cookie`, or says where it
//!   comes from (`Origin`, `Sec-Fetch-Site`), must come from an
//!   [`AllowedOrigins`] (by default the service's own host), with or without
//!   a body: otherwise 403 `cross_origin_request`. A cookie-carrying request
//!   that names no origin at all is refused too, since the cookie may have
//!   been attached by a browser on another site's behalf. Only a request
//!   with none of the three (a script with an API key) skips the check: it
//!   carries no ambient credential.

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

/// 403 unless the request comes from an allowed origin (see
/// [`AllowedOrigins::allows_request`]); a request with no `Cookie`, no
/// `Origin` and no `Sec-Fetch-Site` is not a browser's and passes.
pub(crate) fn check_origin(
    allowed: &AllowedOrigins,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<(), KeyApiError> {
    let from_browser = [header::COOKIE, header::ORIGIN]
        .iter()
        .any(|h| headers.contains_key(h))
        || headers.contains_key("sec-fetch-site");
    if from_browser && !allowed.allows_request(headers, authority) {
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
        let checked = check_origin(
            &m.origins,
            req.headers(),
            req.uri().authority().map(|a| a.as_str()),
        )
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
        // No Origin: the fetch metadata decides.
        let fetch = |site: &'static str| headers(&[("host", "k"), ("sec-fetch-site", site)]);
        assert!(check_origin(&same, &fetch("same-origin"), None).is_ok());
        assert!(check_origin(&same, &fetch("none"), None).is_err());
        assert!(check_origin(&same, &fetch("cross-site"), None).is_err());
        assert!(check_origin(&same, &fetch("same-site"), None).is_err());
        // Neither header and no cookie: not a browser, no ambient credential.
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

    #[test]
    fn a_cookie_needs_a_same_origin_witness_even_without_a_body() {
        let same = AllowedOrigins::same_host();
        let cookie = ("cookie", "session=abc");
        // A body-less POST or DELETE with the cookie and nothing else.
        assert!(check_origin(&same, &headers(&[("host", "k"), cookie]), None).is_err());
        assert!(check_origin(
            &same,
            &headers(&[("host", "k"), cookie, ("sec-fetch-site", "same-origin")]),
            None
        )
        .is_ok());
        assert!(check_origin(
            &same,
            &headers(&[("host", "k"), cookie, ("origin", "http://k")]),
            None
        )
        .is_ok());
        // `Origin: null` (a page with `Referrer-Policy: no-referrer`) counts
        // only when the fetch metadata says same-origin.
        let null = ("origin", "null");
        assert!(check_origin(&same, &headers(&[("host", "k"), cookie, null]), None).is_err());
        for site in ["cross-site", "same-site", "none"] {
            let h = headers(&[("host", "k"), cookie, null, ("sec-fetch-site", site)]);
            assert!(check_origin(&same, &h, None).is_err(), "{site}");
        }
        let h = headers(&[
            ("host", "k"),
            cookie,
            null,
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(check_origin(&same, &h, None).is_ok());
    }
}
