//! The API-keys settings page (feature `ui`): one HTML page, a stylesheet
//! and a script, embedded in the crate and served with the key router's
//! JSON routes under any prefix.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /` | the page (`text/html`, `Cache-Control: no-cache`, strict CSP) |
//! | `GET /assets/app.js`, `app.css`, `icon.svg` | the page's files (immutable: their URLs carry a content hash) |
//! | `/api/...` | the [key router](crate::keys_router), with the same owner extractor |
//!
//! The page talks only to `api/` under its own prefix, so it works wherever
//! it is nested. Its Content-Security-Policy allows scripts, styles,
//! images and requests from this origin only (no inline script, no CDN).

use std::{borrow::Cow, fmt::Write as _};

use axum::{
    extract::{FromRequestParts, OriginalUri},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{keys_router, KeyManager, KeyOwner};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page's stylesheet (light and dark), for an application's own small
/// pages that should look the same.
pub const STYLESHEET: &str = APP_CSS;
/// The page's icon (SVG).
pub const ICON_SVG: &str = ICON;
const ICON: &str = include_str!("assets/icon.svg");

/// FNV-1a over the assets: changes whenever one of them does, so their URLs
/// (`?v=...`) can be cached for good.
const VERSION: u64 = {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts: [&[u8]; 3] = [APP_JS.as_bytes(), APP_CSS.as_bytes(), ICON.as_bytes()];
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p];
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        p += 1;
    }
    hash
};

/// The Content-Security-Policy of the page: everything from this origin
/// only, no inline script or style, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The settings page's security headers, for an application's own pages
/// served beside it (a sign-in form, say): [`CONTENT_SECURITY_POLICY`], no
/// sniffing, no framing, a same-origin referrer and opener.
///
/// ```
/// use axum::response::{Html, IntoResponse};
/// let mut res = Html("<form method=post>…</form>").into_response();
/// auth_axum::ui::insert_security_headers(res.headers_mut());
/// assert_eq!(res.headers()["x-frame-options"], "DENY");
/// ```
pub fn insert_security_headers(headers: &mut http::HeaderMap) {
    crate::page_headers::insert(headers, CONTENT_SECURITY_POLICY);
}

/// How the settings page looks in an application: its title and an
/// optional sign-out button.
#[derive(Clone, Debug)]
pub struct SettingsPage {
    title: String,
    sign_out: Option<String>,
    bearer: bool,
}

impl Default for SettingsPage {
    fn default() -> Self {
        Self::new("API keys")
    }
}

impl SettingsPage {
    /// A page titled `title` (e.g. "Settings · API tokens").
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            sign_out: None,
            bearer: false,
        }
    }

    /// Show a "Sign out" button that POSTs (a form, no body) to `action`.
    pub fn sign_out(mut self, action: impl Into<String>) -> Self {
        self.sign_out = Some(action.into());
        self
    }

    /// For applications without a browser session: the page asks for an
    /// API key that may manage keys (the `Auth` owner), keeps it in the
    /// browser tab only (`sessionStorage`) and sends it as `Authorization:
    /// Bearer`. Ambient credentials are never involved, so CSRF cannot be.
    pub fn bearer_sign_in(mut self) -> Self {
        self.bearer = true;
        self
    }

    fn render(&self, base: &str) -> String {
        let mut nav = String::from(
            r#"<nav aria-label="Account"><span id="signed-in-as" class="muted"></span>"#,
        );
        if let Some(action) = &self.sign_out {
            let _ = write!(
                nav,
                r#"<form method="post" action="{}"><button type="submit" class="ghost">Sign out</button></form>"#,
                escape(action)
            );
        }
        nav.push_str("</nav>");
        INDEX
            .replace("{{TITLE}}", &escape(&self.title))
            .replace("{{BASE}}", &escape(base))
            .replace("{{VERSION}}", &format!("{VERSION:016x}"))
            .replace("{{BEARER}}", if self.bearer { "1" } else { "0" })
            .replace("{{NAV}}", &nav)
    }

    /// Only the page and its assets; the application nests a key router at
    /// `<prefix>/api` itself (e.g. inside its `AuthLayer`, for
    /// [`SettingsPage::bearer_sign_in`]).
    pub fn pages<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let page = std::sync::Arc::new(self);
        Router::new()
            .route(
                "/",
                get(move |uri: OriginalUri| {
                    let page = page.clone();
                    async move { index(&page, &uri) }
                }),
            )
            .route(
                "/assets/app.js",
                get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
            )
            .route(
                "/assets/app.css",
                get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
            )
            .route(
                "/assets/icon.svg",
                get(|| async { asset("image/svg+xml", ICON) }),
            )
    }

    /// The page and its assets at `/`, the key router at `/api`, with the
    /// owner identified by the extractor `O`. Nest it where the application
    /// wants it, e.g. `.nest("/settings/tokens", page.router::<Session, _>(keys))`.
    pub fn router<O, S>(self, manager: KeyManager) -> Router<S>
    where
        O: KeyOwner + FromRequestParts<S>,
        S: Clone + Send + Sync + 'static,
    {
        self.pages().nest("/api", keys_router::<O, S>(manager))
    }
}

/// The settings page: [`SettingsPage::router`].
pub fn settings_page<O, S>(manager: KeyManager, page: SettingsPage) -> Router<S>
where
    O: KeyOwner + FromRequestParts<S>,
    S: Clone + Send + Sync + 'static,
{
    page.router::<O, S>(manager)
}

fn index(page: &SettingsPage, uri: &OriginalUri) -> Response {
    // The prefix the page is mounted at: `/settings/tokens` and
    // `/settings/tokens/` both give `/settings/tokens/`.
    let path = uri.path();
    let base = format!("{}/", path.trim_end_matches('/'));
    let mut res = (StatusCode::OK, page.render(&base)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    insert_security_headers(h);
    res
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    insert_security_headers(h);
    res
}

/// `s` safe inside HTML text and double-quoted attributes.
fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_rendered_for_its_prefix_and_escaped() {
        let page = SettingsPage::new("Keys <&> \"x\"").sign_out("/logout");
        let html = page.render("/settings/tokens/");
        assert!(html.contains(r#"<body data-api="/settings/tokens/api" data-bearer="0">"#));
        assert!(html.contains(r#"src="/settings/tokens/assets/app.js?v="#));
        assert!(html.contains("<title>Keys &lt;&amp;&gt; &quot;x&quot;</title>"));
        assert!(html.contains(r#"action="/logout""#));
        assert!(!html.contains("{{"), "a placeholder is left");
        // No inline script or style: everything comes from files.
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
        assert!(!html.contains("onclick=") && !html.contains("javascript:"));
        let evil = page.render("/\"><script>alert(1)</script>/");
        assert!(!evil.contains("<script>alert"));
    }
}
