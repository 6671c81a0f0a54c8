//! The security headers of the pages this crate serves to browsers (the
//! settings page, Swagger UI), each with its own Content-Security-Policy.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

/// `csp` and the headers every page here carries: no sniffing, no framing,
/// a same-origin referrer and opener.
pub(crate) fn insert(h: &mut HeaderMap, csp: &'static str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it, browsers send `Origin: null` on a
        // page's own form posts (sign-out), which no origin check can trust.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}
