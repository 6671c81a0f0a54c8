//! The OpenAPI document against the real routers: every documented route
//! is mounted, every mounted route (read from the router definitions) is
//! documented, and real answers, successes and refusals, validate against
//! the document's schemas.

use std::{collections::BTreeSet, sync::Arc};

use auth_axum::{admin_keys_router, keys_router, Auth, KeyAdmin, KeyManager};
use auth_core::{
    audit::AuditOutcome, audit::MemoryAuditLog, store::KeyState, AuditEvent, AuthContext, KeyId,
    KeyIssuer, MemoryKeyStore, NewKey, Principal, RejectReason, ScopeSet, SecretHasher,
    TokenPrefix, Verifier,
};
use auth_tower::AuthLayer;
use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{request::Parts, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const KEYS: &str = "/api/tokens";
const ADMIN: &str = "/admin/keys";

/// A service-wide administrator: whoever the layer let through.
struct Operator(Option<KeyId>);

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        Ok(Self(
            parts
                .extensions
                .get::<AuthContext>()
                .and_then(AuthContext::key_id),
        ))
    }
}

impl KeyAdmin for Operator {
    fn organisation(&self) -> Option<&str> {
        None
    }

    fn acting_key(&self) -> Option<KeyId> {
        self.0
    }
}

struct Fixture {
    app: Router,
    issuer: KeyIssuer,
    token: String,
    key_id: KeyId,
}

async fn fixture() -> Fixture {
    let store = Arc::new(MemoryKeyStore::new());
    let audit = Arc::new(MemoryAuditLog::default());
    let hasher = SecretHasher::for_tests();
    let issuer = KeyIssuer::new(
        store.clone(),
        hasher.clone(),
        TokenPrefix::new("st_").unwrap(),
    );
    let verifier = Verifier::builder(store).hasher(hasher).build();
    let scopes = ScopeSet::parse(["nodes:read", "nodes:write", "tokens:manage"]).unwrap();
    let manager = || KeyManager::new(issuer.clone(), audit.clone()).known_scopes(scopes.clone());
    let app = Router::new()
        .nest(KEYS, keys_router::<Auth, _>(manager()))
        .nest(ADMIN, admin_keys_router::<Operator, _>(manager()))
        .layer(AuthLayer::builder(verifier).audit(audit.clone()).build());
    let issued = issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "admin",
            scopes.clone(),
        ))
        .await
        .unwrap();
    Fixture {
        app,
        issuer,
        token: issued.token.expose_secret().to_owned(),
        key_id: issued.record.id,
    }
}

fn document() -> Value {
    serde_json::to_value(auth_axum::openapi::document(KEYS, Some(ADMIN))).unwrap()
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String("<not JSON>".into()))
    };
    (status, value)
}

/// A request (method, URI, token, JSON body) and the status it must get.
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<&'a str>,
    StatusCode,
);

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (path, method) pairs of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_owned()));
            }
        }
    }
    out
}

/// (path, method) pairs of a router definition, read from its source: each
/// `.route("<path>", get(..).post(..))` call.
fn mounted_in(source: &str, prefix: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for call in source.split(".route(\"").skip(1) {
        let (path, rest) = call.split_once('"').unwrap();
        let handlers = rest.split(".layer(").next().unwrap();
        let full = if path == "/" {
            prefix.to_owned()
        } else {
            format!("{prefix}{path}")
        };
        let mut any = false;
        for m in METHODS {
            // `get(list::<O>)` as well as `.post(create::<O>)`.
            if handlers.contains(&format!(" {m}(")) || handlers.contains(&format!(".{m}(")) {
                out.insert((full.clone(), m.to_owned()));
                any = true;
            }
        }
        assert!(any, "no method found for the route {path}");
    }
    out
}

#[test]
fn every_mounted_route_is_documented_and_every_documented_route_is_mounted() {
    let mut mounted = mounted_in(include_str!("../src/keys/routes.rs"), KEYS);
    mounted.extend(mounted_in(include_str!("../src/keys/admin.rs"), ADMIN));
    assert_eq!(mounted.len(), 12, "{mounted:?}");
    assert_eq!(documented(&document()), mounted);
}

#[tokio::test]
async fn every_documented_route_answers_and_no_other_method_does() {
    let f = fixture().await;
    let doc = document();
    // A narrower key of the same owner to act on (the probes revoke it).
    let victim = f
        .issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "victim",
            ScopeSet::parse(["nodes:read"]).unwrap(),
        ))
        .await
        .unwrap();
    let id = victim.record.id.to_string();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{id}", &id);
        for m in METHODS {
            let body = matches!(m, "post" | "patch" | "put").then_some(r#"{"name":"probe"}"#);
            let (status, value) = send(&f.app, &m.to_uppercase(), &uri, Some(&f.token), body).await;
            if item.get(m).is_some() {
                // A route's own refusals carry a JSON body; axum's "no such
                // route" and "no such method" do not.
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}");
                assert!(
                    status != StatusCode::NOT_FOUND || value.get("error").is_some(),
                    "{m} {uri} is documented but not mounted"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {uri} is mounted but not documented"
                );
            }
        }
    }
}

/// The component schema an operation documents for `status`.
fn response_schema(doc: &Value, path: &str, method: &str, status: StatusCode) -> Option<String> {
    let content = &doc["paths"][path][method]["responses"][status.as_str()]["content"];
    let r = content["application/json"]["schema"]["$ref"].as_str()?;
    Some(r.trim_start_matches("#/components/schemas/").to_owned())
}

/// Property names of a component schema, through `allOf`.
fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return properties(doc, &doc["components"]["schemas"][name]);
    }
    if let Some(props) = schema["properties"].as_object() {
        out.extend(props.keys().cloned());
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        out.extend(properties(doc, part));
    }
    out
}

/// `body` (the answer with `status` to `method path`) validates against
/// the schema the document gives for it, and has no undocumented field.
fn check(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    if status == StatusCode::NO_CONTENT {
        assert!(
            doc["paths"][path][method]["responses"]["204"].is_object(),
            "{method} {path}: 204 not documented"
        );
        assert_eq!(body, &Value::Null);
        return;
    }
    let name = response_schema(doc, path, method, status)
        .unwrap_or_else(|| panic!("{method} {path}: {status} not documented"));
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\n{body}"
    );
    let known = properties(doc, &doc["components"]["schemas"][&name]);
    for field in body.as_object().unwrap().keys() {
        assert!(
            known.contains(field),
            "{method} {path} {status}: field {field} not in {name}"
        );
    }
    // The error code is one the document names for this answer.
    if let Some(code) = body["error"].as_str() {
        let description = doc["paths"][path][method]["responses"][status.as_str()]["description"]
            .as_str()
            .unwrap();
        assert!(
            description.contains(&format!("`{code}`")),
            "{method} {path} {status}: code {code} not documented in {description:?}"
        );
    }
}

#[tokio::test]
async fn real_answers_validate_against_the_document() {
    let f = fixture().await;
    let doc = document();
    let t = Some(f.token.as_str());
    let one = format!("{KEYS}/{{id}}");
    let admin_one = format!("{ADMIN}/{{id}}");
    let at = |id: &str| format!("{KEYS}/{id}");

    // Successes.
    let (s, created) = send(
        &f.app,
        "POST",
        KEYS,
        t,
        Some(r#"{"name":"ci","scopes":["nodes:read"],"meta":{"team":"a"},"ip_allowlist":["203.0.113.0/24"]}"#),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    check(&doc, "post", KEYS, s, &created);
    let id = created["id"].as_str().unwrap().to_owned();

    let (s, body) = send(&f.app, "GET", KEYS, t, None).await;
    assert_eq!(s, StatusCode::OK);
    check(&doc, "get", KEYS, s, &body);
    for key in body["keys"].as_array().unwrap() {
        check(&doc, "get", &one, s, key);
    }
    let (s, body) = send(&f.app, "GET", &format!("{KEYS}/options"), t, None).await;
    check(&doc, "get", &format!("{KEYS}/options"), s, &body);
    let (s, body) = send(&f.app, "GET", &at(&id), t, None).await;
    assert_eq!(s, StatusCode::OK);
    check(&doc, "get", &one, s, &body);
    let (s, body) = send(
        &f.app,
        "PATCH",
        &at(&id),
        t,
        Some(r#"{"enabled":false,"name":"ci2"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    check(&doc, "patch", &one, s, &body);
    let (s, body) = send(&f.app, "PATCH", &at(&id), t, Some(r#"{"enabled":true}"#)).await;
    // A key-backed caller may not undo a disabling.
    check(&doc, "patch", &one, s, &body);
    let (s, body) = send(
        &f.app,
        "GET",
        &format!("{}/activity", at(&f.key_id.to_string())),
        t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!body["events"].as_array().unwrap().is_empty());
    check(&doc, "get", &format!("{one}/activity"), s, &body);
    let (s, body) = send(
        &f.app,
        "GET",
        &format!("{}/usage?bucket=day", at(&f.key_id.to_string())),
        t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    check(&doc, "get", &format!("{one}/usage"), s, &body);

    // A second key, rotated with grace.
    let (_, second) = send(
        &f.app,
        "POST",
        KEYS,
        t,
        Some(r#"{"name":"rot","scopes":[]}"#),
    )
    .await;
    let second = second["id"].as_str().unwrap().to_owned();
    let rotate = format!("{}/rotate", at(&second));
    let (s, body) = send(&f.app, "POST", &rotate, t, Some(r#"{"grace_seconds":60}"#)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert!(body["rotated_from"].is_string() && body["previous_key_ends_at"].is_string());
    check(&doc, "post", &format!("{one}/rotate"), s, &body);
    // 409: rotating it again.
    let (s, body) = send(&f.app, "POST", &rotate, t, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    check(&doc, "post", &format!("{one}/rotate"), s, &body);

    // Admin.
    let (s, body) = send(
        &f.app,
        "GET",
        &format!("{ADMIN}?owner=alice&limit=1"),
        t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body["next_cursor"].is_string());
    check(&doc, "get", ADMIN, s, &body);
    let (s, body) = send(&f.app, "GET", &format!("{ADMIN}/{id}"), t, None).await;
    check(&doc, "get", &admin_one, s, &body);
    let (s, body) = send(&f.app, "GET", &format!("{ADMIN}?state=sleepy"), t, None).await;
    assert!(s.is_client_error());
    check(&doc, "get", ADMIN, s, &body);
    let (s, body) = send(
        &f.app,
        "DELETE",
        &format!("{ADMIN}/{}", KeyId::random()),
        t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    check(&doc, "delete", &admin_one, s, &body);

    // Refusals of the key router.
    let cases: Vec<Case<'_>> = vec![
        (
            "post",
            KEYS.into(),
            None,
            Some(r#"{"name":"x"}"#),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "post",
            KEYS.into(),
            t,
            Some("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "post",
            KEYS.into(),
            t,
            Some(r#"{"name":"x","scopes":null}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "post",
            KEYS.into(),
            t,
            Some(r#"{"name":"x","external_id":"c1"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "post",
            KEYS.into(),
            t,
            Some(r#"{"name":"x","rate_limit":{"limit":5,"period_seconds":1}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "post",
            KEYS.into(),
            t,
            Some(r#"{"name":"x","scopes":["nodes:delete"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "get",
            at(&KeyId::random().to_string()),
            t,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "patch",
            at(&id),
            t,
            Some("{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "patch",
            at(&id),
            t,
            Some(r#"{"scopes":["nodes:write"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "get",
            format!("{}/usage?bucket=week", at(&id)),
            t,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "get",
            format!("{}/activity?limit=many", at(&id)),
            t,
            None,
            StatusCode::BAD_REQUEST,
        ),
        ("delete", at(&id), t, None, StatusCode::NO_CONTENT),
        (
            "patch",
            at(&id),
            t,
            Some(r#"{"name":"late"}"#),
            StatusCode::CONFLICT,
        ),
    ];
    for (method, uri, token, body, expected) in cases {
        let (s, value) = send(&f.app, &method.to_uppercase(), &uri, token, body).await;
        assert_eq!(s, expected, "{method} {uri}: {value}");
        let path = uri
            .split('?')
            .next()
            .unwrap()
            .replace(&id, "{id}")
            .split('/')
            .map(|seg| {
                if seg.parse::<KeyId>().is_ok() {
                    "{id}"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        check(&doc, method, &path, s, &value);
    }

    // 415 without a JSON content type.
    let req = Request::post(KEYS)
        .header("authorization", format!("Bearer {}", f.token))
        .header("content-type", "text/plain")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    let res = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    check(
        &doc,
        "post",
        KEYS,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &body,
    );
}

#[test]
fn the_document_is_openapi_3_1_with_the_bearer_scheme_and_examples() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for ((path, method), _) in documented(&doc).iter().map(|p| (p.clone(), ())) {
        let op = &doc["paths"][&path][&method];
        assert!(op["operationId"].is_string(), "{method} {path}");
        assert_eq!(op["security"][0]["bearer"], json!([]), "{method} {path}");
        for status in ["401", "403", "500", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
        for (status, response) in op["responses"].as_object().unwrap() {
            if let Some(content) = response["content"]["application/json"].as_object() {
                assert!(content.contains_key("example"), "{method} {path} {status}");
            }
        }
    }
    // Each documented example validates against its own schema.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(example) = response["content"]["application/json"].get("example") else {
                    continue;
                };
                let status = StatusCode::from_bytes(status.as_bytes()).unwrap();
                check(&doc, method, path, status, example);
            }
        }
    }
}

#[test]
fn the_schemas_refuse_what_the_routers_never_send() {
    let doc = document();
    let validator = |name: &str| {
        jsonschema::draft202012::new(&json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": doc["components"],
        }))
        .unwrap()
    };
    let ok = doc["paths"][format!("{KEYS}/{{id}}")]["get"]["responses"]["200"]["content"]
        ["application/json"]["example"]
        .clone();
    assert!(validator("KeyMetadata").is_valid(&ok));
    let mut no_id = ok.clone();
    no_id.as_object_mut().unwrap().remove("id");
    assert!(!validator("KeyMetadata").is_valid(&no_id));
    let mut bad_limit = ok;
    bad_limit["rate_limit"] = json!({"limit": 0, "period_seconds": 60});
    assert!(!validator("KeyMetadata").is_valid(&bad_limit));
    assert!(!validator("Error").is_valid(&json!({"error": 401, "message": "no"})));
    assert!(!validator("Error").is_valid(&json!({"message": "no code"})));
    assert!(!validator("CreatedKey").is_valid(
        &doc["paths"][KEYS]["get"]["responses"]["200"]["content"]["application/json"]["example"]
            ["keys"][0]
    ));
}

/// Property names of component `name` (through `allOf`).
fn schema_properties(doc: &Value, name: &str) -> BTreeSet<String> {
    properties(doc, &doc["components"]["schemas"][name])
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The schemas are derived from the types: every field a type sends (with
/// its optional ones present) is a property, and nothing else is.
#[tokio::test]
async fn the_schemas_are_the_serialized_types() {
    let f = fixture().await;
    let doc = document();
    let issued = f
        .issuer
        .issue(NewKey::new(
            Principal::in_org("alice", "acme"),
            "full",
            ScopeSet::parse(["nodes:read"]).unwrap(),
        ))
        .await
        .unwrap();
    let mut record = issued.record.clone();
    record.replaced_by = Some(f.key_id);
    let metadata = serde_json::to_value(record.metadata()).unwrap();
    assert_eq!(schema_properties(&doc, "KeyMetadata"), keys_of(&metadata));

    let mut event = AuditEvent::new(
        time::OffsetDateTime::now_utc(),
        AuditOutcome::Failure,
        http::Method::GET,
        "/api/nodes",
    );
    event.id = Some(1);
    event.created_key = Some(f.key_id);
    let event = serde_json::to_value(&event).unwrap();
    assert_eq!(schema_properties(&doc, "AuditEvent"), keys_of(&event));

    // Enumerations list every name the type sends.
    let names = |name: &str| -> BTreeSet<String> {
        doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an enumeration"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let reasons: BTreeSet<String> = RejectReason::ALL
        .iter()
        .map(|r| {
            serde_json::to_value(r)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names("RejectReason"), reasons);
    let states: BTreeSet<String> = [
        "active", "expiring", "expired", "revoked", "disabled", "replaced",
    ]
    .into_iter()
    .map(|s| {
        serde_json::to_value(KeyState::from_name(s).unwrap())
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    })
    .collect();
    assert_eq!(names("KeyState"), states);

    // Request bodies: strict, and `external_id` (refused by name) is not offered.
    for body in ["CreateKey", "EditKey", "RotateKey"] {
        let schema = &doc["components"]["schemas"][body];
        assert_eq!(schema["additionalProperties"], json!(false), "{body}");
        assert!(
            !schema_properties(&doc, body).contains("external_id"),
            "{body}"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["CreateKey"]["required"],
        json!(["name"])
    );
}
