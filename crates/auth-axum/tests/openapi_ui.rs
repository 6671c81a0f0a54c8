//! Swagger UI (feature `openapi-ui`): served from the binary, under a
//! Content-Security-Policy that allows this origin only, and pointing at
//! nothing off-site.

use auth_axum::openapi::{swagger_ui, CONTENT_SECURITY_POLICY};
use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    routing::get,
    Json, Router,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn app() -> Router {
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { Json(auth_axum::openapi::document("/api/tokens", None)) }),
        )
        .merge(swagger_ui("/docs", "/openapi.json"))
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn get_path(path: &str) -> Answer {
    let res = app()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn header(a: &Answer, name: header::HeaderName) -> &str {
    a.headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

/// The values of every `attr="..."` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

#[test]
fn the_policy_names_no_other_origin_and_allows_no_inline_script() {
    for directive in CONTENT_SECURITY_POLICY.split(';') {
        for source in directive.split_whitespace().skip(1) {
            assert!(
                ["'self'", "'none'", "data:"].contains(&source) || source.starts_with("'sha256-"),
                "{directive}"
            );
        }
    }
    assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
    assert!(CONTENT_SECURITY_POLICY.contains("default-src 'none'"));
}

#[tokio::test]
async fn the_page_and_its_main_script_are_served_from_here_under_the_policy() {
    // Without the slash the page's relative files would resolve one level up.
    let bare = get_path("/docs").await;
    assert!(bare.status.is_redirection(), "{}", bare.status);
    assert_eq!(header(&bare, header::LOCATION), "/docs/");

    let page = get_path("/docs/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(header(&page, header::CONTENT_TYPE).starts_with("text/html"));
    assert_eq!(
        header(&page, header::CONTENT_SECURITY_POLICY),
        CONTENT_SECURITY_POLICY
    );
    assert_eq!(header(&page, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header(&page, header::X_FRAME_OPTIONS), "DENY");

    // Every URL in the page is relative to it: nothing off-site.
    let urls: Vec<&str> = attribute_values(&page.body, "src")
        .into_iter()
        .chain(attribute_values(&page.body, "href"))
        .collect();
    assert!(urls.len() >= 4, "{urls:?}");
    for url in &urls {
        assert!(
            !url.contains(':') && !url.starts_with("//") && !url.starts_with('/'),
            "{url} points off the page's own directory"
        );
    }
    // No inline script: every script has a `src` and an empty body.
    for script in page.body.split("<script").skip(1) {
        let (open, rest) = script.split_once('>').unwrap();
        assert!(open.contains("src=\""), "inline script: {script}");
        assert!(rest.split("</script>").next().unwrap().trim().is_empty());
    }

    // Each script and stylesheet the page names is here, under the policy.
    let scripts = attribute_values(&page.body, "src");
    assert!(scripts.iter().any(|s| s.ends_with("swagger-ui-bundle.js")));
    for file in scripts
        .iter()
        .chain(attribute_values(&page.body, "href").iter())
    {
        let path = format!("/docs/{}", file.trim_start_matches("./"));
        let a = get_path(&path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!(
            header(&a, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(header(&a, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        if path.ends_with(".js") {
            assert!(
                header(&a, header::CONTENT_TYPE).contains("javascript"),
                "{path}"
            );
        }
    }
    let main = get_path("/docs/swagger-ui-bundle.js").await;
    assert!(main.body.len() > 100_000, "{} bytes", main.body.len());
    assert!(main.body.contains("SwaggerUIBundle"));

    // The configuration points at this application's document, with the
    // online validator off, and at no other site.
    let init = get_path("/docs/swagger-initializer.js").await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(
        init.body.contains("\"url\": \"/openapi.json\""),
        "{}",
        init.body
    );
    assert!(
        init.body.contains("\"validatorUrl\": \"none\""),
        "{}",
        init.body
    );
    assert!(!init.body.contains("http"), "{}", init.body);

    assert_eq!(
        get_path("/docs/no-such-file.js").await.status,
        StatusCode::NOT_FOUND
    );
}
