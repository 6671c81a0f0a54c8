//! The demos (`server`, `pod`, `portal`) serve the key API's OpenAPI
//! document at `/openapi.json`, with their own prefixes, and their real
//! answers validate against it.

use keygate_demo::{pod, portal, server, support};

use crate::client;

use std::collections::BTreeSet;

use auth_core::SecretHasher;
use client::Api;
use serde_json::{json, Value};
use support::{commands, serve::spawn, Backend};

/// `body`, the answer with `status` to `method path`, against the schema
/// the served document gives for it.
fn validate(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let content = &doc["paths"][path][method]["responses"][status.to_string()]["content"];
    let schema = content["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: {status} not documented"));
    let validator = jsonschema::draft202012::new(&json!({
        "$ref": schema,
        "components": doc["components"],
    }))
    .unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\n{body}"
    );
}

#[tokio::test]
async fn server_serves_its_openapi_document_and_answers_as_it_says() {
    let backend = Backend::memory(SecretHasher::for_tests());
    let app = server::Server::new(&backend, &server::Options::default()).unwrap();
    let api = Api::at(spawn(app.router()).await);

    // Public, like the health routes: no key needed to read it.
    let doc = api.get("/openapi.json").send().await;
    assert_eq!(doc.status, 200);
    let doc = doc.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(
        paths.iter().all(|p| p.starts_with("/api/tokens")),
        "{paths:?}"
    );
    assert_eq!(paths.len(), 6);

    let scopes = vec!["tokens:manage".to_owned()];
    let admin = commands::issue(&backend, &server::RULES, "alice", &scopes, "test")
        .await
        .unwrap();
    let admin = admin.token.expose_secret().to_owned();
    let one = "/api/tokens/{id}";

    let r = api
        .post("/api/tokens")
        .token(&admin)
        .json(r#"{"name":"ci","scopes":[]}"#)
        .send()
        .await;
    assert_eq!(r.status, 201);
    validate(&doc, "post", "/api/tokens", 201, &r.json);
    let id = r.json["id"].as_str().unwrap().to_owned();
    for (path, documented) in [
        ("/api/tokens".to_owned(), "/api/tokens"),
        ("/api/tokens/options".to_owned(), "/api/tokens/options"),
        (format!("/api/tokens/{id}"), one),
        (format!("/api/tokens/{id}/usage"), "/api/tokens/{id}/usage"),
        (
            format!("/api/tokens/{id}/activity"),
            "/api/tokens/{id}/activity",
        ),
    ] {
        let r = api.get(&path).token(&admin).send().await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        validate(&doc, "get", documented, 200, &r.json);
    }
    // Refusals: no key, a policy this server does not enforce, no such key.
    let r = api.get("/api/tokens").send().await;
    assert_eq!(r.status, 401);
    validate(&doc, "get", "/api/tokens", 401, &r.json);
    let r = api
        .post("/api/tokens")
        .token(&admin)
        .json(r#"{"name":"ci","rate_limit":{"limit":5,"period_seconds":60}}"#)
        .send()
        .await;
    assert_eq!(r.status, 422);
    validate(&doc, "post", "/api/tokens", 422, &r.json);
    let r = api
        .patch(&format!("/api/tokens/{id}"))
        .token(&admin)
        .json("{}")
        .send()
        .await;
    assert_eq!(r.status, 422);
    validate(&doc, "patch", one, 422, &r.json);
}

/// The served document, checked to describe exactly `paths`.
async fn served_document(api: &Api, paths: &[&str]) -> Value {
    // Public, like the health routes: no key needed to read it.
    let doc = api.get("/openapi.json").send().await;
    assert_eq!(doc.status, 200);
    let doc = doc.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let served: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(served, paths.iter().copied().collect());
    doc
}

/// Creates a key at `keys`, then reads the list, the key and its usage,
/// each answer validated against `doc`.
async fn create_and_read(api: &Api, doc: &Value, token: &str, keys: &str) {
    let r = api
        .post(keys)
        .token(token)
        .json(r#"{"name":"ci","scopes":[]}"#)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    validate(doc, "post", keys, 201, &r.json);
    let id = r.json["id"].as_str().unwrap().to_owned();
    for (path, documented) in [
        (keys.to_owned(), keys.to_owned()),
        (format!("{keys}/{id}"), format!("{keys}/{{id}}")),
        (format!("{keys}/{id}/usage"), format!("{keys}/{{id}}/usage")),
    ] {
        let r = api.get(&path).token(token).send().await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        validate(doc, "get", &documented, 200, &r.json);
    }
    let r = api.get(keys).send().await;
    assert_eq!(r.status, 401);
    validate(doc, "get", keys, 401, &r.json);
}

#[tokio::test]
async fn pod_serves_its_openapi_document_at_its_key_prefix() {
    let backend = Backend::memory(SecretHasher::for_tests());
    let app = pod::Pod::new(&backend, &pod::Options::default()).unwrap();
    let api = Api::at(spawn(app.router()).await);
    let keys = "/api/keys";
    let doc = served_document(
        &api,
        &[
            keys,
            "/api/keys/options",
            "/api/keys/{id}",
            "/api/keys/{id}/rotate",
            "/api/keys/{id}/activity",
            "/api/keys/{id}/usage",
        ],
    )
    .await;
    let scopes = vec!["keys.manage".to_owned()];
    let key = commands::issue(&backend, &pod::RULES, "alice", &scopes, "test")
        .await
        .unwrap();
    create_and_read(&api, &doc, key.token.expose_secret(), keys).await;
}

#[tokio::test]
async fn portal_serves_its_openapi_document_with_the_admin_routes() {
    let backend = Backend::memory(SecretHasher::for_tests());
    let app = portal::Portal::new(&backend, &portal::Options::default()).unwrap();
    let api = Api::at(spawn(app.router()).await);
    let doc = served_document(
        &api,
        &[
            "/api/tokens",
            "/api/tokens/options",
            "/api/tokens/{id}",
            "/api/tokens/{id}/rotate",
            "/api/tokens/{id}/activity",
            "/api/tokens/{id}/usage",
            "/api/admin/keys",
            "/api/admin/keys/{id}",
        ],
    )
    .await;
    let pat = commands::issue(&backend, &portal::RULES, "admin1", &[], "test")
        .await
        .unwrap();
    let pat = pat.token.expose_secret().to_owned();
    create_and_read(&api, &doc, &pat, "/api/tokens").await;
    // The administrators' listing: every PAT of the organisation.
    let r = api.get("/api/admin/keys").token(&pat).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.json["keys"].as_array().unwrap().is_empty());
    validate(&doc, "get", "/api/admin/keys", 200, &r.json);
}
