//! Swagger UI, its files embedded in the binary (no CDN, no build-time
//! download), for a document the application serves.

use std::sync::Arc;

use axum::{
    extract::{OriginalUri, Path},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};
use utoipa_swagger_ui::Config;

/// The Content-Security-Policy of the UI's page and files: everything from
/// this origin only (no inline script, no CDN, no framing), plus `data:`
/// images, which Swagger UI's stylesheet holds (its icons), and the one
/// inline style Swagger UI's bundle applies, allowed by its hash.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Swagger UI at `path` (e.g. `/docs`), showing the document at
/// `document_url` (e.g. `/openapi.json`, which the application serves
/// itself). Merge it into the application's router: the page is at
/// `<path>/` (`<path>` redirects there) and its files beside it.
///
/// "Try it out" sends requests from the browser to this origin only (the
/// CSP's `connect-src`); the key typed into "Authorize" is not kept beyond
/// the page. Swagger UI's online validator is off, so the page calls no
/// other site.
///
/// ```
/// use axum::{routing::get, Json, Router};
/// let app: Router = Router::new()
///     .route("/openapi.json", get(|| async {
///         Json(auth_axum::openapi::document("/api/tokens", None))
///     }))
///     .merge(auth_axum::openapi::swagger_ui("/docs", "/openapi.json"));
/// ```
pub fn swagger_ui<S>(path: &str, document_url: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let path = path.trim_end_matches('/');
    let config = Arc::new(Config::new([document_url.to_owned()]).validator_url("none"));
    let index_config = config.clone();
    let mut router = Router::new()
        .route(
            &format!("{path}/"),
            get(move || {
                let config = index_config.clone();
                async move { file("index.html", config) }
            }),
        )
        .route(
            &format!("{path}/{{*file}}"),
            get(move |Path(name): Path<String>| {
                let config = config.clone();
                async move { file(&name, config) }
            }),
        );
    if !path.is_empty() {
        // The page's files are relative to it: `/docs` must be `/docs/`.
        router = router.route(
            path,
            get(|uri: OriginalUri| async move { Redirect::permanent(&format!("{}/", uri.path())) }),
        );
    }
    router
}

/// One of Swagger UI's files, with the security headers.
fn file(name: &str, config: Arc<Config<'static>>) -> Response {
    let mut res = match utoipa_swagger_ui::serve(name, config) {
        Ok(Some(file)) => {
            let mut res = (StatusCode::OK, file.bytes.into_owned()).into_response();
            if let Ok(v) = HeaderValue::from_str(&file.content_type) {
                res.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            res
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Swagger UI's configuration could not be written");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    crate::page_headers::insert(h, CONTENT_SECURITY_POLICY);
    res
}
