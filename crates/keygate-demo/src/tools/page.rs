//! "Settings → Account → API Access" as a small page: sign in
//! with the current token (kept in the browser tab only), regenerate the
//! key, and see the new token once. Served outside authentication; the page
//! calls `GET /api/me` and `POST /v1/me/token/regenerate` with the token.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

/// Where the page is.
pub const PATH: &str = "/settings/account";

const HTML: &str = include_str!("page/index.html");
const JS: &str = include_str!("page/account.js");

/// The page and its two files.
pub fn routes() -> Router {
    Router::new()
        .route(
            PATH,
            get(|| async { file("text/html; charset=utf-8", HTML, "no-cache") }),
        )
        .route(
            "/settings/account/account.js",
            get(|| async { file("text/javascript; charset=utf-8", JS, "no-cache") }),
        )
        .route(
            "/settings/account/icon.svg",
            get(|| async { file("image/svg+xml", auth_axum::ui::ICON_SVG, "no-cache") }),
        )
        .route(
            "/settings/account/app.css",
            get(|| async {
                file(
                    "text/css; charset=utf-8",
                    auth_axum::ui::STYLESHEET,
                    "no-cache",
                )
            }),
        )
}

fn file(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(auth_axum::ui::CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}
