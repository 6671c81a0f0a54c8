//! "Settings → Account → API Access" as a small page behind the
//! demos' sign-in ([`crate::support::signin`]): a signed-in user
//! regenerates their key and sees the new token once. The JWT alone cannot
//! regenerate it (a stolen token would lock its owner out), and the page
//! asks for the password again when it was entered too long ago.

use auth_core::jwt::JwtAuthority;
use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use tower_sessions::Session;

use crate::support::signin::{page_needs_sign_in, same_origin, sign_in_first, Accounts, Site};

/// Where the page is.
pub const PATH: &str = "/settings/account";

/// Who signs in to the tools service: its demo users, to this page.
pub const SITE: Site = Site {
    name: "tools",
    users: super::catalog::USER_IDS,
    home: PATH,
};

const HTML: &str = include_str!("page/index.html");
const JS: &str = include_str!("page/account.js");

/// The page, its files, `GET me` and `POST regenerate`, at [`PATH`]; mount
/// them with [`Accounts::mount`].
pub fn routes(jwt: JwtAuthority) -> Router {
    let page = Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", HTML, "no-cache") }),
        )
        .route(
            "/account.js",
            get(|| async { file("text/javascript; charset=utf-8", JS, "no-cache") }),
        )
        .route(
            "/icon.svg",
            get(|| async { file("image/svg+xml", auth_axum::ui::ICON_SVG, "no-cache") }),
        )
        .route(
            "/app.css",
            get(|| async {
                file(
                    "text/css; charset=utf-8",
                    auth_axum::ui::STYLESHEET,
                    "no-cache",
                )
            }),
        )
        .route("/me", get(me))
        .route("/regenerate", post(regenerate).layer(Extension(jwt)))
        .layer(middleware::from_fn(page_needs_sign_in));
    Router::new().nest(PATH, page)
}

/// `GET me`: `{"user"}` of the session.
async fn me(Extension(accounts): Extension<Accounts>, session: Session) -> Response {
    match accounts.signed_in(&session).await {
        Ok(Some(record)) => no_store(Json(serde_json::json!({ "user": record.user }))),
        Ok(None) => sign_in_first(),
        Err(res) => res,
    }
}

/// `POST regenerate`: a new secret for the signed-in user, from this site,
/// with a recently entered password; 201 `{"success", "user", "token"}`.
/// Every older token of the user stops working.
async fn regenerate(
    Extension(accounts): Extension<Accounts>,
    Extension(jwt): Extension<JwtAuthority>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        let body = serde_json::json!({
            "error": "cross_origin_request",
            "message": "Cross-origin request refused: regenerate your key from this site",
        });
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    let user = match accounts.require_recent_password(&session).await {
        Ok(Some(record)) => record.user,
        Ok(None) => return sign_in_first(),
        Err(res) => return res,
    };
    match jwt.regenerate(&user).await {
        Ok(token) => {
            let body = serde_json::json!({ "success": true, "user": user, "token": token });
            let mut res = no_store(Json(body));
            *res.status_mut() = StatusCode::CREATED;
            res
        }
        Err(e) => {
            tracing::warn!(error = %e, "regenerating a user secret failed");
            let body = serde_json::json!({
                "error": "unavailable",
                "message": "Token service temporarily unavailable",
            });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

fn no_store(body: impl IntoResponse) -> Response {
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn file(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    auth_axum::ui::insert_security_headers(h);
    res
}
