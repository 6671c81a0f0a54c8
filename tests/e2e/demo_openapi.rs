//! The `server` demo serves the key API's OpenAPI document at
//! `/openapi.json`, and its real answers validate against it.

use keygate_demo::{server, support};

use crate::client;

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
        .json(r#"{"name":"ci","remaining":3}"#)
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
