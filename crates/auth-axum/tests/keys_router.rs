//! The key-management router of auth-axum, called in process (`oneshot`,
//! no socket): create, list, show, revoke, rotate with grace, activity,
//! validation, ownership, error formats and store outages.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use auth_axum::{
    keys_router, AllowedOrigins, Auth, DefaultScopes, EnforcedPolicy, KeyManager, KeyOwner,
    RequireScopeLayer,
};
use auth_core::{
    audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, policy::Credits, policy::KeyPolicy,
    policy::KeyRateLimit, policy::Refill, policy::RefillEvery, response::ErrorFormat,
    token::mint_token, KeyId, KeyIssuer, MemoryKeyStore, NewKey, Principal, RejectReason, ScopeSet,
    SecretHasher, TokenPrefix, Verifier,
};
use auth_tower::AuthLayer;
use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequestParts},
    http::{request::Parts, HeaderMap, Method, Request, StatusCode},
    response::Response,
    Router,
};
use http_body_util::BodyExt;
use keygate_test_support::{fixtures, stores::TestStore};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tower::ServiceExt;

const SCOPES: [&str; 3] = ["read", "write", "tokens:manage"];

/// A session-style owner: the user named by a header an upstream proxy
/// sets, who may grant `read` and `write`. No `AuthLayer` needed.
struct HeaderUser(Principal, ScopeSet);

impl<S: Send + Sync> FromRequestParts<S> for HeaderUser {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        let user = parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .filter(|u| !u.is_empty())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        Ok(Self(
            Principal::user(user),
            ScopeSet::parse(["read", "write"]).unwrap(),
        ))
    }
}

impl KeyOwner for HeaderUser {
    fn principal(&self) -> &Principal {
        &self.0
    }
    fn grantable_scopes(&self) -> &ScopeSet {
        &self.1
    }
}

struct Fixture {
    app: Router,
    issuer: KeyIssuer,
    store: Arc<TestStore>,
    audit: Arc<MemoryAuditLog>,
}

/// The host the requests name, and so the origin of same-host requests.
const HOST: &str = "keys.test";
const BASE: &str = "http://keys.test";

/// A request being built, sent in process to the fixture's app.
struct Call<'f> {
    app: &'f Router,
    req: axum::http::request::Builder,
    body: String,
}

impl Call<'_> {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.req = self.req.header(name, value);
        self
    }

    fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    /// Sent as a client over TCP would: with its length, from 127.0.0.1
    /// (what the server reads from the connection, so keys with an
    /// allowlist can be used).
    async fn send(self) -> Reply {
        let mut req = self.req;
        if !self.body.is_empty() {
            req = req.header("content-length", self.body.len());
        }
        let mut req = req.body(Body::from(self.body)).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
        Reply::from(self.app.clone().oneshot(req).await.unwrap()).await
    }
}

impl Fixture {
    /// `/api/tokens` managed with API keys (`Auth` owner, scope
    /// `tokens:manage`) behind an `AuthLayer` in `format`; `/me` to use keys;
    /// `/session/tokens` managed by `HeaderUser`.
    async fn start(format: ErrorFormat) -> Self {
        let store = TestStore::memory();
        let audit = Arc::new(MemoryAuditLog::default());
        let issuer = fixtures::issuer(store.clone());
        let verifier = fixtures::verifier(store.clone());
        let manager = KeyManager::new(issuer.clone(), audit.clone() as Arc<dyn AuditLog>)
            .known_scopes(ScopeSet::parse(SCOPES).unwrap())
            .max_rotation_grace(Duration::from_secs(86_400));
        // Nothing enforces per-key rate limits or credits behind this one.
        let unenforced = manager.clone();
        // The routers below stand for a service that runs both.
        let manager = manager
            .enforces(EnforcedPolicy::RateLimit)
            .enforces(EnforcedPolicy::Credits);
        let api = Router::new()
            .route(
                "/me",
                axum::routing::get(
                    |Auth(ctx): Auth| async move { ctx.effective_user().to_owned() },
                ),
            )
            .nest(
                "/api/tokens",
                keys_router::<Auth, _>(manager.clone())
                    .route_layer(RequireScopeLayer::one("tokens:manage")),
            )
            .nest(
                "/inherit-api/tokens",
                keys_router::<Auth, _>(
                    manager
                        .clone()
                        .default_scopes(DefaultScopes::OwnerGrantable),
                )
                .route_layer(RequireScopeLayer::one("tokens:manage")),
            )
            .layer(
                AuthLayer::builder(verifier)
                    .error_format(format)
                    .audit(audit.clone())
                    .client_ip(auth_axum::connect_info_ip)
                    .build(),
            );
        let app = Router::new()
            .nest(
                "/strict/tokens",
                keys_router::<HeaderUser, _>(
                    manager.clone().check_origin(AllowedOrigins::same_host()),
                ),
            )
            .nest(
                "/inherit/tokens",
                keys_router::<HeaderUser, _>(
                    manager
                        .clone()
                        .default_scopes(DefaultScopes::OwnerGrantable)
                        .expiring_within(Duration::from_secs(90 * 86_400)),
                ),
            )
            .nest("/session/tokens", keys_router::<HeaderUser, _>(manager))
            .nest(
                "/unenforced/tokens",
                keys_router::<HeaderUser, _>(unenforced),
            )
            .merge(api);
        Self {
            app,
            issuer,
            store,
            audit,
        }
    }

    /// `method path`, with `Host` as a client would send it.
    fn request(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            app: &self.app,
            req: Request::builder()
                .method(method)
                .uri(path)
                .header("host", HOST),
            body: String::new(),
        }
    }

    async fn key(&self, user: &str, scopes: &[&str]) -> (KeyId, String) {
        let k = self
            .issuer
            .issue(NewKey::new(
                Principal::user(user),
                "fixture",
                ScopeSet::parse(scopes).unwrap(),
            ))
            .await
            .unwrap();
        (k.record.id, k.token.expose_secret().to_owned())
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<&str>) -> Reply {
        let mut req = self.request(method, path).bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        req.send().await
    }

    async fn session(&self, method: Method, path: &str, user: &str, body: Option<&str>) -> Reply {
        let mut req = self.request(method, path).header("x-user", user);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        req.send().await
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Reply {
    async fn from(res: Response) -> Self {
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

const ALL: &[&str] = &["read", "write", "tokens:manage"];

#[tokio::test]
async fn created_token_is_shown_once_and_lists_hold_no_secret() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;

    let body = r#"{"name":"n8n automation","scopes":["read"],"expires_at":"2999-01-01T00:00:00Z"}"#;
    let created = f
        .call(Method::POST, "/api/tokens", &admin, Some(body))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let token = created.json["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("st_"));
    let id = created.json["id"].as_str().unwrap().to_owned();
    assert_eq!(created.json["name"], "n8n automation");
    assert_eq!(created.json["scopes"], json!(["read"]));
    assert_eq!(created.json["expires_at"], "2999-01-01T00:00:00Z");
    assert_eq!(created.json["revoked_at"], Value::Null);
    assert_eq!(created.json["last_used_at"], Value::Null);
    assert!(created.json["created_at"].is_string());
    let hint = created.json["hint"].as_str().unwrap();
    assert!(hint.starts_with("st_") && hint.ends_with(&token[token.len() - 4..]));

    // The new token works.
    let me = f.call(Method::GET, "/me", &token, None).await;
    assert_eq!((me.status, me.text.as_str()), (StatusCode::OK, "alice"));

    // Listing and showing never give the token, its secret or a hash again.
    let list = f.call(Method::GET, "/api/tokens", &admin, None).await;
    assert_eq!(list.status, StatusCode::OK);
    let keys = list.json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["id"], id.as_str(), "newest first");
    for field in [
        "id",
        "name",
        "scopes",
        "hint",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ] {
        assert!(keys[0].get(field).is_some(), "list lacks {field}");
    }
    let shown = f
        .call(Method::GET, &format!("/api/tokens/{id}"), &admin, None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json["id"], id.as_str());
    let secret_part = &token[3 + 11..3 + 11 + 44];
    for text in [&list.text, &shown.text] {
        assert!(!text.contains(&token) && !text.contains(secret_part));
        assert!(!text.contains("argon2") && !text.contains("\"token\"") && !text.contains("hash"));
    }
}

#[tokio::test]
async fn invalid_requests_get_clear_messages() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", &["read", "tokens:manage"]).await;
    let create = |body: &'static str| f.call(Method::POST, "/api/tokens", &admin, Some(body));

    for (body, status, needle) in [
        (r#"{"name":"","scopes":[]}"#, 422, "name"),
        (r#"{"name":"   ","scopes":[]}"#, 422, "name"),
        (r#"{"scopes":["read"]}"#, 422, "missing field `name`"),
        (
            r#"{"name":"ci","scopes":["nope"]}"#,
            422,
            "Unknown scope 'nope'",
        ),
        (
            r#"{"name":"ci","scopes":["bad scope"]}"#,
            422,
            "invalid scope",
        ),
        (
            r#"{"name":"ci","scopes":["read"],"expires_at":"2001-01-01T00:00:00Z"}"#,
            422,
            "future",
        ),
        (
            r#"{"name":"ci","scopes":["read"],"expires_at":"soon"}"#,
            422,
            "expires_at",
        ),
        (
            r#"{"name":"ci","scope":["read"]}"#,
            422,
            "unknown field `scope`",
        ),
        (r#"name=ci"#, 400, "JSON"),
        // Known, but beyond what the calling key holds:
        (
            r#"{"name":"ci","scopes":["read","write"]}"#,
            403,
            "may not grant the scope 'write'",
        ),
    ] {
        let r = create(body).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
        let message = r.json["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
        let code = r.json["error"].as_str().unwrap();
        assert_eq!(
            code,
            match status {
                400 => "bad_request",
                403 => "forbidden",
                _ => "unprocessable_entity",
            }
        );
    }
    let long = format!(r#"{{"name":"{}","scopes":[]}}"#, "x".repeat(101));
    let r = f
        .call(Method::POST, "/api/tokens", &admin, Some(&long))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json["message"].as_str().unwrap().contains("1-100"));

    // A key without the management scope cannot reach the router at all.
    let (_, reader) = f.key("alice", &["read"]).await;
    let r = f.call(Method::GET, "/api/tokens", &reader, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .contains("tokens:manage"));
    // Nothing was issued by the refused requests.
    assert_eq!(f.issuer.list("alice").await.unwrap().len(), 2);
}

#[tokio::test]
async fn revocation_is_immediate_and_only_for_the_owner() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, alice) = f.key("alice", ALL).await;
    let (bob_key, bob) = f.key("bob", ALL).await;
    let (victim_id, victim) = f.key("alice", &["read"]).await;
    assert_eq!(
        f.call(Method::GET, "/me", &victim, None).await.status,
        StatusCode::OK
    );

    // Bob cannot see, revoke, rotate or read the activity of Alice's key.
    let path = format!("/api/tokens/{victim_id}");
    for (method, p) in [
        (Method::GET, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::POST, format!("{path}/rotate")),
        (Method::GET, format!("{path}/activity")),
    ] {
        let r = f.call(method.clone(), &p, &bob, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {p}");
        assert_eq!(
            r.json,
            json!({"error": "not_found", "message": "No such key"})
        );
    }
    assert_eq!(
        f.call(Method::GET, "/me", &victim, None).await.status,
        StatusCode::OK
    );
    let bob_list = f.call(Method::GET, "/api/tokens", &bob, None).await;
    let ids: Vec<&str> = bob_list.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [bob_key.to_string()]);

    // Unknown and malformed ids look the same.
    for id in ["AAAAAAAAAAA", "nope", "%00"] {
        let r = f
            .call(Method::DELETE, &format!("/api/tokens/{id}"), &alice, None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}");
    }

    let r = f.call(Method::DELETE, &path, &alice, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    // The very next request with the revoked key is refused.
    let r = f.call(Method::GET, "/me", &victim, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"], "unauthorized");
    let shown = f.call(Method::GET, &path, &alice, None).await;
    assert!(shown.json["revoked_at"].is_string());
    // Revoking again is harmless.
    assert_eq!(
        f.call(Method::DELETE, &path, &alice, None).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_key_working_until_it_ends() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let (old_id, old) = f.key("alice", &["read"]).await;

    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{old_id}/rotate"),
            &admin,
            Some(r#"{"grace_seconds":3600}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let new = r.json["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(r.json["rotated_from"], old_id.to_string().as_str());
    assert_eq!(r.json["scopes"], json!(["read"]));
    let ends = OffsetDateTime::parse(
        r.json["previous_key_ends_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = ends - OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(50) && left <= time::Duration::hours(1),
        "{left}"
    );
    // Both work during the grace period.
    assert_eq!(
        f.call(Method::GET, "/me", &old, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        f.call(Method::GET, "/me", &new, None).await.status,
        StatusCode::OK
    );

    // A key is rotated once: 409 conflict.
    let again = f
        .call(
            Method::POST,
            &format!("/api/tokens/{old_id}/rotate"),
            &admin,
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json["error"], "conflict");
    assert_eq!(again.header("content-type"), Some("application/json"));

    // Too long a grace period.
    let new_id = r.json["id"].as_str().unwrap().to_owned();
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{new_id}/rotate"),
            &admin,
            Some(r#"{"grace_seconds":86401}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json["message"].as_str().unwrap().contains("86400"));

    // Without a body: no grace, the rotated key stops at once.
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{new_id}/rotate"),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let newest = r.json["token"].as_str().unwrap().to_owned();
    assert_eq!(
        f.call(Method::GET, "/me", &new, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.call(Method::GET, "/me", &newest, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn activity_lists_the_keys_requests_newest_first_by_page() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let (id, key) = f.key("alice", &["read"]).await;
    for _ in 0..3 {
        assert_eq!(
            f.call(Method::GET, "/me", &key, None).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        f.call(Method::GET, "/api/tokens", &key, None).await.status,
        StatusCode::FORBIDDEN
    );

    let path = format!("/api/tokens/{id}/activity");
    let page1 = f
        .call(Method::GET, &format!("{path}?limit=2"), &admin, None)
        .await;
    assert_eq!(page1.status, StatusCode::OK, "{}", page1.text);
    let events = page1.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0]["path"].as_str(), events[0]["status"].as_u64()),
        (Some("/api/tokens"), Some(403))
    );
    assert_eq!(events[1]["path"], "/me");
    assert!(events
        .iter()
        .all(|e| e["key_id"] == id.to_string().as_str() && e["actor"] == "alice"));
    assert!(events[0]["id"].as_i64() > events[1]["id"].as_i64());
    let cursor = page1.json["next_cursor"].as_i64().unwrap();

    let page2 = f
        .call(
            Method::GET,
            &format!("{path}?limit=2&before={cursor}"),
            &admin,
            None,
        )
        .await;
    let events = page2.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e["path"] == "/me" && e["id"].as_i64().unwrap() < cursor));
    assert_eq!(page2.json["next_cursor"], Value::Null);

    let bad = f
        .call(Method::GET, &format!("{path}?limit=lots"), &admin, None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json["message"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn refusals_follow_the_layers_error_format() {
    let f = Fixture::start(ErrorFormat::Envelope).await;
    let (_, admin) = f.key("alice", ALL).await;
    let (id, _) = f.key("alice", &["read"]).await;

    let r = f
        .call(Method::DELETE, "/api/tokens/AAAAAAAAAAA", &admin, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json,
        json!({"success": false, "error": {"code": "NOT_FOUND", "message": "No such key"}})
    );

    let r = f
        .call(
            Method::POST,
            "/api/tokens",
            &admin,
            Some(r#"{"name":"","scopes":[]}"#),
        )
        .await;
    assert_eq!(r.json["error"]["code"], "UNPROCESSABLE_ENTITY");

    let rotate = format!("/api/tokens/{id}/rotate");
    assert_eq!(
        f.call(Method::POST, &rotate, &admin, None).await.status,
        StatusCode::CREATED
    );
    let r = f.call(Method::POST, &rotate, &admin, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["success"], false);
    assert_eq!(r.json["error"]["code"], "CONFLICT");
}

#[tokio::test]
async fn any_extractor_can_identify_the_owner() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let r = f.session(Method::GET, "/session/tokens", "", None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the extractor's own rejection"
    );

    let r = f
        .session(
            Method::POST,
            "/session/tokens",
            "carol",
            Some(r#"{"name":"script","scopes":["read","write"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let token = r.json["token"].as_str().unwrap().to_owned();
    assert_eq!(f.call(Method::GET, "/me", &token, None).await.text, "carol");

    // The session user's ceiling has no `tokens:manage`.
    let r = f
        .session(
            Method::POST,
            "/session/tokens",
            "carol",
            Some(r#"{"name":"x","scopes":["tokens:manage"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Another user sees nothing of carol's.
    let r = f
        .session(Method::GET, "/session/tokens", "dave", None)
        .await;
    assert_eq!(r.json["keys"], json!([]));
    let r = f
        .session(
            Method::DELETE,
            &format!("/session/tokens/{id}"),
            "dave",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Without an AuthLayer in front, refusals use the flat format.
    assert_eq!(r.json["error"], "not_found");

    let r = f
        .session(
            Method::DELETE,
            &format!("/session/tokens/{id}"),
            "carol",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        f.call(Method::GET, "/me", &token, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn store_outage_is_503_without_details() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    f.store.set_down(true);
    for (method, path, body) in [
        (
            Method::POST,
            "/session/tokens",
            Some(r#"{"name":"x","scopes":[]}"#),
        ),
        (Method::GET, "/session/tokens", None),
        (Method::DELETE, "/session/tokens/AAAAAAAAAAA", None),
    ] {
        let r = f.session(method.clone(), path, "carol", body).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.json["error"], "unavailable");
        assert!(!r.text.contains("db.internal"), "{}", r.text);
    }
    f.store.set_down(false);
    let r = f
        .session(Method::GET, "/session/tokens", "carol", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

// ------------------------------------------------------------ key lifecycle

impl Fixture {
    /// A key of `user` with `scopes` that expires at `at`.
    async fn key_until(&self, user: &str, scopes: &[&str], at: OffsetDateTime) -> (KeyId, String) {
        let k = self
            .issuer
            .issue(
                NewKey::new(
                    Principal::user(user),
                    "fixture",
                    ScopeSet::parse(scopes).unwrap(),
                )
                .expires_at(at),
            )
            .await
            .unwrap();
        (k.record.id, k.token.expose_secret().to_owned())
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Now plus `d`, to the second (what an RFC 3339 body carries).
fn in_(d: time::Duration) -> OffsetDateTime {
    let t = OffsetDateTime::now_utc() + d;
    t.replace_nanosecond(0).unwrap()
}

#[tokio::test]
async fn a_key_only_makes_keys_that_end_no_later_than_itself() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let ends = in_(time::Duration::hours(1));
    let (hour_id, hour) = f.key_until("alice", ALL, ends).await;

    // No expiry, or one ten days later: refused, naming the limit.
    for body in [
        r#"{"name":"forever","scopes":["read"]}"#.to_owned(),
        format!(
            r#"{{"name":"later","scopes":["read"],"expires_at":"{}"}}"#,
            rfc3339(in_(time::Duration::days(10)))
        ),
    ] {
        let r = f
            .call(Method::POST, "/api/tokens", &hour, Some(body.as_str()))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.json["error"], "unprocessable_entity");
        let message = r.json["message"].as_str().unwrap();
        assert!(message.contains(&rfc3339(ends)), "{message}");
    }
    assert_eq!(
        f.issuer.list("alice").await.unwrap().len(),
        1,
        "nothing was created"
    );

    // Ending before (or with) the calling key is fine.
    let body = format!(
        r#"{{"name":"short","scopes":["read"],"expires_at":"{}"}}"#,
        rfc3339(in_(time::Duration::minutes(30)))
    );
    let r = f
        .call(Method::POST, "/api/tokens", &hour, Some(body.as_str()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["created_by"], hour_id.to_string().as_str());
    // The audit log says it too: the minting request's event names the new key.
    let made = r.json["id"].as_str().unwrap().to_owned();
    let log = f
        .call(
            Method::GET,
            &format!("/api/tokens/{hour_id}/activity"),
            &hour,
            None,
        )
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let minted = log.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "POST" && e["status"] == 201)
        .unwrap_or_else(|| panic!("no audit event for the creation: {}", log.text));
    assert_eq!(minted["key_id"], hour_id.to_string().as_str());
    assert_eq!(minted["created_key"], made.as_str());
    let body = format!(
        r#"{{"name":"same","scopes":["read"],"expires_at":"{}"}}"#,
        rfc3339(ends)
    );
    let r = f
        .call(Method::POST, "/api/tokens", &hour, Some(body.as_str()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // Rotation makes a key with the rotated key's expiry: the same limit.
    let (forever_id, _) = f.key("alice", &["read"]).await;
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{forever_id}/rotate"),
            &hour,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.json["message"].as_str().unwrap().contains(&rfc3339(ends)));
    let stored = f.issuer.get(forever_id).await.unwrap().unwrap();
    assert_eq!(stored.replaced_by, None, "not rotated");
    let (short_id, _) = f
        .key_until("alice", &["read"], in_(time::Duration::minutes(5)))
        .await;
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{short_id}/rotate"),
            &hour,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["created_by"], hour_id.to_string().as_str());

    // A key without an end may make keys without one.
    let (_, admin) = f.key("alice", ALL).await;
    let r = f
        .call(
            Method::POST,
            "/api/tokens",
            &admin,
            Some(r#"{"name":"forever","scopes":["read"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// Rotation keeps the old key's scopes: a key that may manage keys but holds
/// little else must not rotate a broader key of the same user into a token
/// it could never have minted.
#[tokio::test]
async fn a_narrow_key_cannot_rotate_a_broader_one() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, narrow) = f.key("alice", &["tokens:manage"]).await;
    let (broad_id, _) = f.key("alice", ALL).await;
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{broad_id}/rotate"),
            &narrow,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.json.get("token").is_none(), "{}", r.text);
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .contains("may not grant"));
    let broad = f.issuer.get(broad_id).await.unwrap().unwrap();
    assert_eq!((broad.replaced_by, broad.revoked_at), (None, None));
}

#[tokio::test]
async fn a_replaced_key_works_for_the_api_but_cannot_manage_keys() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (old_id, old) = f.key("alice", ALL).await;
    let (other_id, _) = f.key("alice", &["read"]).await;
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{old_id}/rotate"),
            &old,
            Some(r#"{"grace_seconds":3600}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let new_id = r.json["id"].as_str().unwrap().to_owned();
    let new = r.json["token"].as_str().unwrap().to_owned();
    assert_eq!(r.json["created_by"], old_id.to_string().as_str());

    // The old key still works for the API during its grace period...
    let me = f.call(Method::GET, "/me", &old, None).await;
    assert_eq!(me.status, StatusCode::OK);
    // ...but every key-management route refuses it.
    for (method, path, body) in [
        (
            Method::POST,
            "/api/tokens".to_owned(),
            Some(r#"{"name":"sneaky","scopes":["read"]}"#),
        ),
        (Method::POST, format!("/api/tokens/{new_id}/rotate"), None),
        (Method::DELETE, format!("/api/tokens/{new_id}"), None),
        (Method::DELETE, format!("/api/tokens/{other_id}"), None),
        (Method::GET, "/api/tokens".to_owned(), None),
        (Method::GET, format!("/api/tokens/{new_id}"), None),
        (Method::GET, format!("/api/tokens/{new_id}/activity"), None),
        (
            Method::GET,
            format!("/api/tokens/{new_id}/usage?bucket=hour&since=2026-01-01T00:00:00Z"),
            None,
        ),
        (Method::GET, "/api/tokens/options".to_owned(), None),
    ] {
        let r = f.call(method.clone(), &path, &old, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.json["error"], "forbidden");
        assert!(r.json["message"].as_str().unwrap().contains("replaced"));
    }
    // Nothing changed: the replacement is neither rotated nor revoked.
    let replacement = f
        .issuer
        .get(new_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (replacement.replaced_by, replacement.revoked_at),
        (None, None)
    );
    assert_eq!(f.issuer.list("alice").await.unwrap().len(), 3);
    // The replacement manages keys.
    let r = f.call(Method::GET, "/api/tokens", &new, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn listings_show_which_key_made_each_key() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (admin_id, admin) = f.key("alice", ALL).await;
    let r = f
        .call(
            Method::POST,
            "/api/tokens",
            &admin,
            Some(r#"{"name":"child","scopes":["read"]}"#),
        )
        .await;
    let child = r.json["id"].as_str().unwrap().to_owned();
    let r = f
        .session(
            Method::POST,
            "/session/tokens",
            "alice",
            Some(r#"{"name":"from a session","scopes":["read"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let session_made = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["created_by"], Value::Null);

    let list = f.call(Method::GET, "/api/tokens", &admin, None).await;
    let keys = list.json["keys"].as_array().unwrap();
    let created_by = |id: &str| {
        keys.iter()
            .find(|k| k["id"] == id)
            .map(|k| k["created_by"].clone())
            .unwrap()
    };
    assert_eq!(created_by(&child), json!(admin_id.to_string()));
    // Made by the command line (the fixture's issuer) or a session: null,
    // and the field is there.
    assert_eq!(created_by(&admin_id.to_string()), Value::Null);
    assert_eq!(created_by(&session_made), Value::Null);
    assert!(keys.iter().all(|k| k.get("created_by").is_some()));
    let shown = f
        .call(Method::GET, &format!("/api/tokens/{child}"), &admin, None)
        .await;
    assert_eq!(shown.json["created_by"], json!(admin_id.to_string()));
}

/// Lets `alice` act as `bob`, with `bob` granted what alice's key holds.
struct AliceAsBob;

#[async_trait]
impl auth_tower::SubjectResolver for AliceAsBob {
    async fn resolve(
        &self,
        actor: &auth_core::AuthContext,
        user_id: &str,
    ) -> Result<auth_tower::SubjectDecision, auth_tower::ResolveError> {
        Ok(if actor.actor().user_id() == "alice" && user_id == "bob" {
            auth_tower::SubjectDecision::Allow(auth_tower::Subject::new(
                Principal::user("bob"),
                ScopeSet::parse(["read", "tokens:manage", "sudo"]).unwrap(),
            ))
        } else {
            auth_tower::SubjectDecision::Deny
        })
    }
}

#[tokio::test]
async fn keys_acting_as_another_user_cannot_make_keys_unless_allowed() {
    use tower::ServiceExt;

    let store = Arc::new(MemoryKeyStore::new());
    let hasher = SecretHasher::for_tests();
    let issuer = KeyIssuer::new(
        store.clone(),
        hasher.clone(),
        TokenPrefix::new("st_").unwrap(),
    );
    let verifier = Verifier::builder(store).hasher(hasher).build();
    let app = |allow: bool| {
        let audit = Arc::new(MemoryAuditLog::default());
        let manager = KeyManager::new(issuer.clone(), audit as Arc<dyn AuditLog>)
            .allow_minting_as_subject(allow);
        Router::new()
            .nest(
                "/api/tokens",
                keys_router::<Auth, _>(manager)
                    .route_layer(RequireScopeLayer::one("tokens:manage")),
            )
            .layer(
                AuthLayer::builder(verifier.clone())
                    .subject_resolver(AliceAsBob)
                    .build(),
            )
    };
    let alice = issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "sudo",
            ScopeSet::parse(["read", "tokens:manage", "sudo"]).unwrap(),
        ))
        .await
        .unwrap();
    let bobs = issuer
        .issue(NewKey::new(
            Principal::user("bob"),
            "bob's",
            ScopeSet::parse(["read"]).unwrap(),
        ))
        .await
        .unwrap();
    let token = alice.token.expose_secret().to_owned();
    let send = |app: Router, method: &'static str, path: String, body: &'static str| {
        let token = token.clone();
        async move {
            let req = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .header("x-subject-user", "bob")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    let create = r#"{"name":"as bob","scopes":["read"]}"#;
    let rotate = format!("/api/tokens/{}/rotate", bobs.record.id);

    let strict = app(false);
    assert_eq!(
        send(strict.clone(), "POST", "/api/tokens".into(), create).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(strict.clone(), "POST", rotate.clone(), "").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(issuer.list("bob").await.unwrap().len(), 1, "nothing made");
    // Managing bob's existing keys stays possible.
    assert_eq!(
        send(strict, "GET", "/api/tokens".into(), "").await,
        StatusCode::OK
    );

    let opted_in = app(true);
    assert_eq!(
        send(opted_in.clone(), "POST", "/api/tokens".into(), create).await,
        StatusCode::CREATED
    );
    assert_eq!(
        send(opted_in, "POST", rotate, "").await,
        StatusCode::CREATED
    );
    let bob_keys = issuer.list("bob").await.unwrap();
    assert_eq!(bob_keys.len(), 3);
    assert!(bob_keys
        .iter()
        .filter(|k| k.id != bobs.record.id)
        .all(|k| k.created_by == Some(alice.record.id)));
}

/// CSRF: a cross-site form can send `text/plain` (or a form
/// encoding) without a preflight, with the victim's cookies. The key router
/// refuses any body not declared JSON, and, with `check_origin`, any change
/// from another origin.
#[tokio::test]
async fn key_api_refuses_non_json_bodies_and_foreign_origins() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let body = r#"{"name":"csrf","scopes":["read"]}"#;
    let send = |path: &str, ct: Option<&'static str>, origin: Option<&'static str>| {
        let mut req = f
            .request(Method::POST, path)
            .header("x-user", "alice")
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let r = send("/session/tokens", ct, None).await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct:?}: {}",
            r.text
        );
        assert_eq!(r.json["error"], "unsupported_media_type");
        assert!(r.json["message"]
            .as_str()
            .unwrap()
            .contains("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    // A form posting nothing to rotate is refused too (it declares a type).
    let (id, _) = f.key("alice", &["read"]).await;
    let r = f
        .request(Method::POST, &format!("/session/tokens/{id}/rotate"))
        .header("x-user", "alice")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 415);
    // The same request declared as JSON works; nothing else was issued.
    assert_eq!(f.issuer.list("alice").await.unwrap().len(), 1);
    let r = send("/session/tokens", Some("application/json"), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // API keys: the same rule.
    let (_, admin) = f.key("bob", &["read", "tokens:manage"]).await;
    let r = f
        .request(Method::POST, "/api/tokens")
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 415);

    // With the Origin check: a foreign origin is 403, this host passes.
    let host_origin: &'static str = BASE;
    let json = Some("application/json");
    let r = send("/strict/tokens", json, Some("https://evil.example")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.json["error"], "cross_origin_request");
    let r = send("/strict/tokens", json, Some("null")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send("/strict/tokens", json, Some(host_origin)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Revoking cross-origin is refused as well; reading is not a change.
    let r = f
        .request(Method::DELETE, &format!("/strict/tokens/{id}"))
        .header("x-user", "alice")
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 403);
    assert!(f
        .issuer
        .get(id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    let r = f
        .request(Method::GET, "/strict/tokens")
        .header("x-user", "alice")
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 200);
}

/// The chart's route: counts per bucket and outcome for the owner's key only.
#[tokio::test]
async fn usage_counts_the_keys_requests_per_bucket() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (id, token) = f.key("alice", &["read", "tokens:manage"]).await;
    let (other_id, _) = f.key("bob", &["read"]).await;
    for _ in 0..3 {
        assert_eq!(f.call(Method::GET, "/me", &token, None).await.status, 200);
    }
    let r = f
        .call(
            Method::GET,
            &format!("/api/tokens/{id}/usage"),
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["bucket"], "hour");
    let buckets = r.json["buckets"].as_array().unwrap();
    // Seven days of hours, every one present, the last one now's.
    assert!((168..=169).contains(&buckets.len()), "{}", buckets.len());
    let total = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_u64().unwrap())
            .sum::<u64>()
    };
    // Three calls to /me and this one (the layer audits it before it runs: in
    // the count or not, depending on the moment; at least the three).
    assert!(total("success") >= 3, "{}", r.text);
    assert_eq!(total("refused") + total("rate_limited"), 0);
    let last = OffsetDateTime::parse(
        buckets.last().unwrap()["start"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(OffsetDateTime::now_utc() - last < time::Duration::HOUR);

    let r = f
        .call(
            Method::GET,
            &format!("/api/tokens/{id}/usage?bucket=day&since=2000-01-01T00:00:00Z"),
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json["message"].as_str().unwrap().contains("1000"));
    let r = f
        .call(
            Method::GET,
            &format!("/api/tokens/{id}/usage?bucket=week"),
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Someone else's key: no such key.
    let r = f
        .call(
            Method::GET,
            &format!("/api/tokens/{other_id}/usage"),
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // What the "New key" form offers this owner.
    let r = f
        .call(Method::GET, "/api/tokens/options", &token, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["owner"], "alice");
    let offered: Vec<(String, bool)> = r.json["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["grantable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        offered,
        [
            ("read".to_owned(), true),
            ("tokens:manage".to_owned(), true),
            ("write".to_owned(), false)
        ]
    );
}

// ---- Default scopes, policy fields, edits, disable -------------------------

#[tokio::test]
async fn omitted_scopes_follow_the_managers_policy() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let create =
        |path: &'static str, body: &'static str| f.session(Method::POST, path, "alice", Some(body));
    // OwnerGrantable: the user's rights (HeaderUser may grant read and write).
    let r = create("/inherit/tokens", r#"{"name":"ci"}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["scopes"], json!(["read", "write"]));
    // An explicit empty list still means none.
    let r = create("/inherit/tokens", r#"{"name":"ci","scopes":[]}"#).await;
    assert_eq!(r.json["scopes"], json!([]));
    // The default policy: none.
    let r = create("/session/tokens", r#"{"name":"ci"}"#).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json["scopes"], json!([]));
    // A key owner inherits the calling key's scopes (within the known ones).
    let (_, reader) = f.key("bob", &["read", "tokens:manage"]).await;
    let r = f
        .call(
            Method::POST,
            "/inherit-api/tokens",
            &reader,
            Some(r#"{"name":"ci"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["scopes"], json!(["read", "tokens:manage"]));
}

#[tokio::test]
async fn policy_fields_are_set_at_creation_and_listed() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let body = r#"{"name":"billing","scopes":["read"],
        "meta":{"plan":"pro","seats":3},
        "ip_allowlist":["203.0.113.7/24","2001:db8::/32","198.51.100.1"],
        "rate_limit":{"limit":100,"period_seconds":60},
        "remaining":1000,"refill":{"amount":1000,"every":"day"}}"#;
    let r = f
        .session(Method::POST, "/session/tokens", "alice", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let list = f
        .session(Method::GET, "/session/tokens", "alice", None)
        .await;
    let key = &list.json["keys"][0];
    assert_eq!(key["id"], id.as_str());
    assert_eq!(key["state"], "active");
    assert_eq!(key["meta"], json!({"plan": "pro", "seats": 3}));
    assert_eq!(key["external_id"], Value::Null, "the application's to set");
    assert_eq!(
        key["ip_allowlist"],
        json!(["203.0.113.0/24", "2001:db8::/32", "198.51.100.1/32"])
    );
    assert_eq!(
        key["rate_limit"],
        json!({"limit": 100, "period_seconds": 60})
    );
    assert_eq!(key["credits"]["remaining"], 1000);
    assert_eq!(
        key["credits"]["refill"],
        json!({"amount": 1000, "every": "day"})
    );
    assert_eq!(key["disabled_at"], Value::Null);
    assert_eq!(key["last_used_ip"], Value::Null);
    // Without them: empty, null.
    let r = f
        .session(
            Method::POST,
            "/session/tokens",
            "alice",
            Some(r#"{"name":"plain"}"#),
        )
        .await;
    assert_eq!(r.json["meta"], json!({}));
    assert_eq!(r.json["ip_allowlist"], json!([]));
    assert_eq!(r.json["credits"], Value::Null);
    assert_eq!(r.json["external_id"], Value::Null);
}

#[tokio::test]
async fn bad_policy_fields_are_422_with_codes_naming_them() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let big = format!(r#"{{"name":"ci","meta":{{"x":"{}"}}}}"#, "y".repeat(4096));
    let many = format!(
        r#"{{"name":"ci","ip_allowlist":[{}]}}"#,
        vec![r#""10.0.0.1""#; 65].join(",")
    );
    let cases: Vec<(String, &str, &str)> = vec![
        (big, "meta_too_large", "4096"),
        (
            r#"{"name":"ci","meta":[1,2]}"#.into(),
            "unprocessable_entity",
            "map",
        ),
        (
            r#"{"name":"ci","ip_allowlist":["10.0.0.0/8","300.1.1.1/8"]}"#.into(),
            "invalid_ip_allowlist",
            "300.1.1.1/8",
        ),
        (
            r#"{"name":"ci","ip_allowlist":["evil.example.com"]}"#.into(),
            "invalid_ip_allowlist",
            "evil.example.com",
        ),
        (many, "invalid_ip_allowlist", "64"),
        (
            r#"{"name":"ci","rate_limit":{"limit":0,"period_seconds":60}}"#.into(),
            "invalid_rate_limit",
            "positive",
        ),
        (
            r#"{"name":"ci","refill":{"amount":5,"every":"day"}}"#.into(),
            "invalid_credits",
            "remaining",
        ),
        (
            r#"{"name":"ci","remaining":5,"refill":{"amount":5,"every":"year"}}"#.into(),
            "unprocessable_entity",
            "year",
        ),
        (
            r#"{"name":"ci","remaining":9223372036854775808}"#.into(),
            "invalid_credits",
            "at most",
        ),
    ];
    for (body, code, needle) in cases {
        let r = f
            .session(Method::POST, "/session/tokens", "alice", Some(&body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert_eq!(r.json["error"], code, "{body}");
        let message = r.json["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert!(f.issuer.list("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn patch_edits_what_it_is_given() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let r = f
        .call(
            Method::POST,
            "/api/tokens",
            &admin,
            Some(r#"{"name":"ci","scopes":["read","write"],"expires_at":"2999-01-01T00:00:00Z","remaining":7}"#),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let token = r.json["token"].as_str().unwrap().to_owned();
    let path = format!("/api/tokens/{id}");
    let patch = |body: &'static str| f.call(Method::PATCH, &path, &admin, Some(body));

    let r = patch(
        r#"{"name":"deploy","scopes":["read"],"expires_at":"2998-01-01T00:00:00Z",
            "meta":{"team":"infra"},"ip_allowlist":["127.0.0.1"]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.json["name"], "deploy");
    assert_eq!(r.json["scopes"], json!(["read"]));
    assert_eq!(r.json["expires_at"], "2998-01-01T00:00:00Z");
    assert_eq!(r.json["meta"], json!({"team": "infra"}));
    assert_eq!(r.json["ip_allowlist"], json!(["127.0.0.1/32"]));
    // Untouched fields stay, and nothing secret is in the answer.
    assert_eq!(r.json["credits"]["remaining"], 7);
    assert!(!r.text.contains(&token) && !r.text.contains("hash"));
    let shown = f.call(Method::GET, &path, &admin, None).await;
    assert_eq!(shown.json["name"], "deploy");
    // The key works with its narrowed scopes at once.
    assert_eq!(
        f.call(Method::GET, "/me", &token, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        f.store
            .inner()
            .get(id.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .scopes,
        ScopeSet::parse(["read"]).unwrap()
    );

    // Clearing: null and empty values (the allowlist from a session: an
    // API key may only narrow it).
    let r = f
        .session(
            Method::PATCH,
            &format!("/session/tokens/{id}"),
            "alice",
            Some(r#"{"meta":null,"ip_allowlist":[]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.json["meta"], &r.json["ip_allowlist"]),
        (&json!({}), &json!([]))
    );
    let r = patch("{}").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"], "nothing_to_change");
}

#[tokio::test]
async fn patch_cannot_widen_extend_or_reach_other_keys() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let r = f
        .call(
            Method::POST,
            "/api/tokens",
            &admin,
            Some(r#"{"name":"ci","scopes":["read"],"expires_at":"2999-01-01T00:00:00Z"}"#),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let path = format!("/api/tokens/{id}");
    let before = f
        .store
        .inner()
        .get(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    for (body, status, code) in [
        // Widening, even within what the caller could grant.
        (r#"{"scopes":["read","write"]}"#, 422, "scopes_not_narrowed"),
        (r#"{"scopes":["nope"]}"#, 422, "unprocessable_entity"),
        // Extending or removing the expiry.
        (
            r#"{"expires_at":"3000-01-01T00:00:00Z"}"#,
            422,
            "expiry_not_shortened",
        ),
        (r#"{"expires_at":null}"#, 422, "expiry_not_shortened"),
        (
            r#"{"expires_at":"2001-01-01T00:00:00Z"}"#,
            422,
            "unprocessable_entity",
        ),
        (r#"{"expires_at":"soon"}"#, 422, "unprocessable_entity"),
        (r#"{"name":""}"#, 422, "unprocessable_entity"),
        (r#"{"owner":"bob"}"#, 422, "unprocessable_entity"),
        (r#"{"revoked_at":null}"#, 422, "unprocessable_entity"),
        (
            r#"{"ip_allowlist":["1.2.3.4/40"]}"#,
            422,
            "invalid_ip_allowlist",
        ),
    ] {
        let r = f.call(Method::PATCH, &path, &admin, Some(body)).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
        assert_eq!(r.json["error"], code, "{body}");
    }
    let big = format!(r#"{{"meta":{{"x":"{}"}}}}"#, "y".repeat(5000));
    let r = f.call(Method::PATCH, &path, &admin, Some(&big)).await;
    assert_eq!(r.json["error"], "meta_too_large");
    // Nothing changed.
    assert_eq!(
        f.store.inner().get(id.parse().unwrap()).await.unwrap(),
        Some(before)
    );

    // Another user's key is "no such key", whatever the body.
    let (_, bob) = f.key("bob", ALL).await;
    let r = f
        .call(Method::PATCH, &path, &bob, Some(r#"{"enabled":false}"#))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json,
        json!({"error": "not_found", "message": "No such key"})
    );
    let r = f
        .session(
            Method::PATCH,
            &format!("/session/tokens/{id}"),
            "bob",
            Some(r#"{"name":"x"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A narrow key cannot steer a broader one (disable, enable or rename it).
    let (broad_id, _) = f.key("alice", &["read", "write"]).await;
    let (_, narrow) = f.key("alice", &["read", "tokens:manage"]).await;
    let r = f
        .call(
            Method::PATCH,
            &format!("/api/tokens/{broad_id}"),
            &narrow,
            Some(r#"{"enabled":false}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.json["message"].as_str().unwrap().contains("'write'"));

    // Revoked and replaced keys cannot be edited.
    assert_eq!(
        f.call(Method::DELETE, &path, &admin, None).await.status,
        StatusCode::NO_CONTENT
    );
    let r = f
        .call(Method::PATCH, &path, &admin, Some(r#"{"enabled":true}"#))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let (old, _) = f.key("alice", &["read"]).await;
    f.call(
        Method::POST,
        &format!("/api/tokens/{old}/rotate"),
        &admin,
        None,
    )
    .await;
    let r = f
        .call(
            Method::PATCH,
            &format!("/api/tokens/{old}"),
            &admin,
            Some(r#"{"name":"x"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Same CSRF rules as the other mutating routes.
    let r = f
        .request(Method::PATCH, &format!("/session/tokens/{broad_id}"))
        .header("x-user", "alice")
        .header("content-type", "text/plain")
        .body(r#"{"enabled":false}"#)
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 415);
    let r = f
        .request(Method::PATCH, &format!("/strict/tokens/{broad_id}"))
        .header("x-user", "alice")
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(r#"{"enabled":false}"#)
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 403);
    assert_eq!(
        f.store
            .inner()
            .get(broad_id)
            .await
            .unwrap()
            .unwrap()
            .disabled_at,
        None
    );
}

#[tokio::test]
async fn a_disabled_key_is_refused_like_an_unknown_one_until_enabled() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let (id, victim) = f.key("alice", &["read"]).await;
    // Cached by the layer's verifier.
    assert_eq!(
        f.call(Method::GET, "/me", &victim, None).await.status,
        StatusCode::OK
    );

    let path = format!("/api/tokens/{id}");
    let r = f
        .call(Method::PATCH, &path, &admin, Some(r#"{"enabled":false}"#))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "disabled");
    assert!(r.json["disabled_at"].is_string());

    // The very next request is refused, exactly as a key that never existed.
    let disabled = f.call(Method::GET, "/me", &victim, None).await;
    let (unknown_id, unknown) = mint_token(&TokenPrefix::new("st_").unwrap());
    assert!(f.store.inner().get(unknown_id).await.unwrap().is_none());
    let never = f
        .call(Method::GET, "/me", unknown.expose_secret(), None)
        .await;
    assert_eq!(disabled.status, StatusCode::UNAUTHORIZED);
    assert_eq!(disabled.status, never.status);
    assert_eq!(disabled.text, never.text);
    let headers = |r: &Reply| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(headers(&disabled), headers(&never));

    // Only the audit log says why.
    f.audit.flush().await.unwrap();
    let page = f
        .audit
        .query(&AuditQuery::default().key_id(id).limit(10))
        .await
        .unwrap();
    assert_eq!(page.events[0].reason, Some(RejectReason::Disabled));
    assert_eq!(RejectReason::Disabled.as_str(), "disabled");

    // Listed as disabled; enabling again works at once.
    let list = f.call(Method::GET, "/api/tokens", &admin, None).await;
    let listed = list.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.to_string())
        .unwrap()
        .clone();
    assert_eq!(listed["state"], "disabled");
    // (From a session: an API key may not re-enable a key.)
    let r = f
        .session(
            Method::PATCH,
            &format!("/session/tokens/{id}"),
            "alice",
            Some(r#"{"enabled":true}"#),
        )
        .await;
    assert_eq!(r.json["state"], "active");
    assert_eq!(r.json["disabled_at"], Value::Null);
    assert_eq!(
        f.call(Method::GET, "/me", &victim, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn listings_show_each_keys_state() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let soon = rfc3339(in_(time::Duration::days(2)));
    let later = rfc3339(in_(time::Duration::days(60)));
    let (f, admin) = (&f, &admin);
    let create = |name: &str, expires: &str| {
        let body = format!(r#"{{"name":"{name}","scopes":["read"],"expires_at":"{expires}"}}"#);
        async move {
            let r = f
                .call(Method::POST, "/api/tokens", admin, Some(&body))
                .await;
            r.json["id"].as_str().unwrap().to_owned()
        }
    };
    let expiring = create("expiring", &soon).await;
    let active = create("active", &later).await;
    let revoked = create("revoked", &later).await;
    let rotated = create("rotated", &later).await;
    f.call(
        Method::DELETE,
        &format!("/api/tokens/{revoked}"),
        admin,
        None,
    )
    .await;
    f.call(
        Method::POST,
        &format!("/api/tokens/{rotated}/rotate"),
        admin,
        Some(r#"{"grace_seconds":0}"#),
    )
    .await;
    let list = f.call(Method::GET, "/api/tokens", admin, None).await;
    let state = |id: &str| {
        list.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .map(|k| k["state"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(state(&expiring), "expiring");
    assert_eq!(state(&active), "active");
    assert_eq!(state(&revoked), "revoked");
    assert_eq!(state(&rotated), "replaced");
    // The window is the manager's: 90 days on this route.
    let wide = f
        .session(Method::GET, "/inherit/tokens", "alice", None)
        .await;
    let wide_state = wide.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == active.as_str())
        .map(|k| k["state"].clone())
        .unwrap();
    assert_eq!(wide_state, "expiring");
}

// ------------------------------------------------- policy of key-backed callers

impl Fixture {
    /// A key of `user` with `scopes` and `policy`.
    async fn key_with(&self, user: &str, scopes: &[&str], policy: KeyPolicy) -> (KeyId, String) {
        let k = self
            .issuer
            .issue(
                NewKey::new(
                    Principal::user(user),
                    "limited",
                    ScopeSet::parse(scopes).unwrap(),
                )
                .policy(policy),
            )
            .await
            .unwrap();
        (k.record.id, k.token.expose_secret().to_owned())
    }
}

fn refused(r: &Reply, status: StatusCode, code: &str, names: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json["error"], code, "{}", r.text);
    assert!(r.text.contains(names), "{}", r.text);
}

#[tokio::test]
async fn a_key_cannot_mint_a_key_with_a_looser_policy_than_its_own() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let limited = KeyPolicy::default()
        .ip_allowlist(vec!["127.0.0.0/8".parse().unwrap()])
        .rate_limit(KeyRateLimit::new(
            10.try_into().unwrap(),
            60.try_into().unwrap(),
        ))
        .credits(
            Credits::new(100, OffsetDateTime::now_utc())
                .with_refill(Refill::new(100, RefillEvery::Day)),
        );
    let (_, key) = f.key_with("alice", ALL, limited).await;
    let ok_rest = r#""rate_limit":{"limit":5,"period_seconds":60},"remaining":10,
        "refill":{"amount":50,"every":"week"}"#;
    let ok_nets = r#""ip_allowlist":["127.0.0.1"]"#;
    let (f, key) = (&f, &key);
    let create = |fields: String| {
        let body = format!(r#"{{"name":"child","scopes":["read"],{fields}}}"#);
        async move { f.call(Method::POST, "/api/tokens", key, Some(&body)).await }
    };
    for (fields, names) in [
        // No allowlist at all, one reaching outside, none of each limit.
        (ok_rest.to_owned(), "ip_allowlist"),
        (
            format!(r#""ip_allowlist":["10.0.0.0/8"],{ok_rest}"#),
            "10.0.0.0/8",
        ),
        (
            format!(r#""ip_allowlist":["0.0.0.0/0"],{ok_rest}"#),
            "ip_allowlist",
        ),
        (format!(r#"{ok_nets},"remaining":10"#), "rate_limit"),
        (
            format!(r#"{ok_nets},"rate_limit":{{"limit":11,"period_seconds":60}},"remaining":1"#),
            "rate_limit",
        ),
        (
            format!(r#"{ok_nets},"rate_limit":{{"limit":1,"period_seconds":5}},"remaining":1"#),
            "rate_limit",
        ),
        (
            format!(r#"{ok_nets},"rate_limit":{{"limit":5,"period_seconds":60}}"#),
            "remaining",
        ),
        (
            format!(r#"{ok_nets},"rate_limit":{{"limit":5,"period_seconds":60}},"remaining":1000"#),
            "remaining",
        ),
        (
            format!(
                r#"{ok_nets},"rate_limit":{{"limit":5,"period_seconds":60}},"remaining":1,
                "refill":{{"amount":100,"every":"hour"}}"#
            ),
            "refill",
        ),
    ] {
        let r = create(fields.clone()).await;
        refused(&r, StatusCode::FORBIDDEN, "policy_exceeds_caller", names);
        assert!(!r.text.contains("\"token\""), "{fields}: {}", r.text);
    }
    // As tight or tighter: made.
    let r = create(format!("{ok_nets},{ok_rest}")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let child_id = r.json["id"].as_str().unwrap().to_owned();

    // Rotation copies the rotated key's policy: a limited key cannot rotate
    // an unlimited sibling into a fresh unlimited key.
    let (sibling, _) = f.key("alice", &["read"]).await;
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{sibling}/rotate"),
            key,
            None,
        )
        .await;
    refused(
        &r,
        StatusCode::FORBIDDEN,
        "policy_exceeds_caller",
        "ip_allowlist",
    );
    // Its own child is within its limits.
    let r = f
        .call(
            Method::POST,
            &format!("/api/tokens/{child_id}/rotate"),
            key,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // A session is bounded by its scopes only.
    let r = f
        .session(
            Method::POST,
            "/session/tokens",
            "alice",
            Some(r#"{"name":"free","scopes":["read"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn rotating_a_key_with_credits_moves_them_and_allows_no_grace() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let r = f
        .call(
            Method::POST,
            "/api/tokens",
            &admin,
            Some(r#"{"name":"metered","scopes":["read"],"remaining":5}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let old = r.json["token"].as_str().unwrap().to_owned();
    let rotate = format!("/api/tokens/{id}/rotate");

    // With grace, both keys would spend their own 5 credits: refused.
    let r = f
        .call(
            Method::POST,
            &rotate,
            &admin,
            Some(r#"{"grace_seconds":60}"#),
        )
        .await;
    refused(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "grace_not_allowed_with_credits",
        "grace_seconds",
    );
    assert_eq!(
        f.call(Method::GET, "/me", &old, None).await.status,
        StatusCode::OK
    );

    // Without: the credits move as stored, and the old key ends at once.
    let stored = f
        .store
        .inner()
        .get(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let r = f.call(Method::POST, &rotate, &admin, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["credits"]["remaining"],
        stored.credits.unwrap().remaining,
        "{}",
        r.text
    );
    assert_eq!(
        f.call(Method::GET, "/me", &old, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_key_can_only_narrow_allowlists_and_cannot_re_enable_keys() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let (id, _) = f
        .key_with(
            "alice",
            &["read"],
            KeyPolicy::default().ip_allowlist(vec!["10.0.0.0/8".parse().unwrap()]),
        )
        .await;
    let path = format!("/api/tokens/{id}");
    let patch = |body: &'static str| f.call(Method::PATCH, &path, &admin, Some(body));

    // Widening, escaping or clearing: refused.
    for (body, names) in [
        (r#"{"ip_allowlist":[]}"#, "empty"),
        (r#"{"ip_allowlist":["0.0.0.0/0"]}"#, "0.0.0.0/0"),
        (
            r#"{"ip_allowlist":["10.1.0.0/16","192.0.2.1"]}"#,
            "192.0.2.1/32",
        ),
    ] {
        let r = patch(body).await;
        refused(&r, StatusCode::FORBIDDEN, "policy_exceeds_caller", names);
    }
    // Narrowing is fine.
    let r = patch(r#"{"ip_allowlist":["10.1.0.0/16"]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["ip_allowlist"], json!(["10.1.0.0/16"]));

    // Disabling is fine; enabling again is for a session.
    let r = patch(r#"{"enabled":false}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = patch(r#"{"enabled":true}"#).await;
    refused(&r, StatusCode::FORBIDDEN, "forbidden", "re-enable");
    let stored = f.store.inner().get(id).await.unwrap().unwrap();
    assert!(stored.disabled_at.is_some());

    // A session may widen, clear and enable.
    let r = f
        .session(
            Method::PATCH,
            &format!("/session/tokens/{id}"),
            "alice",
            Some(r#"{"ip_allowlist":[],"enabled":true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"], "active");
    assert_eq!(r.json["ip_allowlist"], json!([]));
}

// ------------------------------------------------------ authority over keys

/// Every route acting on one key, with the key's id filled in.
fn acting_routes(id: &str) -> Vec<(Method, String, Option<&'static str>)> {
    vec![
        (Method::GET, format!("/api/tokens/{id}"), None),
        (Method::GET, format!("/api/tokens/{id}/activity"), None),
        (
            Method::GET,
            format!("/api/tokens/{id}/usage?bucket=day"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/tokens/{id}"),
            Some(r#"{"name":"renamed"}"#),
        ),
        (Method::POST, format!("/api/tokens/{id}/rotate"), None),
        (Method::DELETE, format!("/api/tokens/{id}"), None),
    ]
}

#[tokio::test]
async fn a_narrow_key_cannot_read_revoke_or_steer_a_broader_key() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (narrow_id, narrow) = f.key("alice", &["tokens:manage"]).await;
    let (broad_id, broad) = f.key("alice", ALL).await;
    let before = f.issuer.get(broad_id).await.unwrap().unwrap();
    for (method, path, body) in acting_routes(&broad_id.to_string()) {
        let r = f.call(method.clone(), &path, &narrow, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.text
        );
        assert!(
            // Rotation's own scope check, shared with sessions, says "grant".
            r.text.contains("no broader than itself") || r.text.contains("may not grant"),
            "{method} {path}: {}",
            r.text
        );
        assert!(r.json.get("token").is_none() && r.json.get("events").is_none());
    }
    // The broader key is untouched and still works.
    assert_eq!(f.issuer.get(broad_id).await.unwrap().unwrap(), before);
    assert_eq!(
        f.call(Method::GET, "/me", &broad, None).await.status,
        StatusCode::OK
    );
    // The narrow key's listing leaves it out; the broad key's shows both.
    let ids = |r: &Reply| -> Vec<String> {
        r.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = f.call(Method::GET, "/api/tokens", &narrow, None).await;
    assert_eq!(ids(&list), vec![narrow_id.to_string()], "{}", list.text);
    let list = f.call(Method::GET, "/api/tokens", &broad, None).await;
    assert_eq!(ids(&list).len(), 2, "{}", list.text);

    // A key acts on keys no broader than itself: its own, or a narrower one.
    let (small_id, _) = f.key("alice", &["read"]).await;
    for (method, path, body) in acting_routes(&small_id.to_string()) {
        let r = f.call(method.clone(), &path, &broad, body).await;
        assert!(r.status.is_success(), "{method} {path}: {}", r.text);
    }
    // A session is bounded by ownership only: it reads and revokes any key
    // of its user.
    for (method, path) in [
        (Method::GET, format!("/session/tokens/{broad_id}/activity")),
        (Method::DELETE, format!("/session/tokens/{broad_id}")),
    ] {
        let r = f.session(method.clone(), &path, "alice", None).await;
        assert!(r.status.is_success(), "{method} {path}: {}", r.text);
    }
    assert_eq!(
        f.call(Method::GET, "/me", &broad, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_key_cannot_act_on_a_key_that_outlives_or_outreaches_it() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let rate = |limit: u32, period: u32| {
        KeyRateLimit::new(limit.try_into().unwrap(), period.try_into().unwrap())
    };
    let now = OffsetDateTime::now_utc();
    let tight = KeyPolicy::default()
        .ip_allowlist(vec!["127.0.0.0/8".parse().unwrap()])
        .rate_limit(rate(10, 60))
        .credits(Credits::new(100, now));
    // Same scopes, each broader in one field only.
    let (_, caller) = f
        .issuer
        .issue(
            NewKey::new(
                Principal::user("alice"),
                "caller",
                ScopeSet::parse(ALL).unwrap(),
            )
            .policy(tight.clone())
            .expires_at(in_(time::Duration::hours(1))),
        )
        .await
        .map(|k| (k.record.id, k.token.expose_secret().to_owned()))
        .unwrap();
    let mut outlives = tight.clone();
    outlives.credits = Some(Credits::new(5, now));
    let mut anywhere = outlives.clone();
    anywhere.ip_allowlist = vec![];
    let mut bursty = outlives.clone();
    // Slower on average than 10/60 s, but 1000 at once.
    bursty.rate_limit = Some(rate(1000, 6000));
    let mut richer = outlives.clone();
    richer.credits = Some(Credits::new(500, now));
    let short = in_(time::Duration::minutes(30));
    let cases = [
        (outlives, None, "expires_at"),
        (anywhere, Some(short), "ip_allowlist"),
        (bursty, Some(short), "rate_limit"),
        (richer, Some(short), "remaining"),
    ];
    for (policy, ends, field) in cases {
        let mut new = NewKey::new(
            Principal::user("alice"),
            "target",
            ScopeSet::parse(["read"]).unwrap(),
        )
        .policy(policy);
        new.expires_at = ends;
        let target = f.issuer.issue(new).await.unwrap().record.id;
        for (method, path, body) in acting_routes(&target.to_string()) {
            let r = f.call(method.clone(), &path, &caller, body).await;
            // Rotating a key that outlives the caller is refused first by
            // the rule for the replacement's end: 422, naming expires_at.
            let expected = if method == Method::POST && field == "expires_at" {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(r.status, expected, "{field}: {method} {path}: {}", r.text);
            assert!(
                r.text.contains(field),
                "{field}: {method} {path}: {}",
                r.text
            );
        }
        let stored = f.issuer.get(target).await.unwrap().unwrap();
        assert_eq!(
            (stored.revoked_at, stored.replaced_by),
            (None, None),
            "{field}"
        );
    }
    // Within every bound: the caller acts on it.
    let mut within = tight;
    within.credits = Some(Credits::new(5, now));
    within.rate_limit = Some(rate(5, 60));
    let target = f
        .issuer
        .issue(
            NewKey::new(
                Principal::user("alice"),
                "target",
                ScopeSet::parse(["read"]).unwrap(),
            )
            .policy(within)
            .expires_at(in_(time::Duration::minutes(30))),
        )
        .await
        .unwrap()
        .record
        .id;
    let r = f
        .call(
            Method::GET,
            &format!("/api/tokens/{target}/activity"),
            &caller,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = f
        .call(
            Method::DELETE,
            &format!("/api/tokens/{target}"),
            &caller,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

// ------------------------------------------- fields the application vouches for

#[tokio::test]
async fn external_id_is_the_applications_to_set_never_a_key_holders() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    // The application's own id, set through the issuer.
    let (own_id, own) = f
        .key_with("alice", ALL, KeyPolicy::default().external_id("cust_alice"))
        .await;
    for body in [
        r#"{"name":"ci","scopes":["read"],"external_id":"cust_other"}"#,
        r#"{"name":"ci","scopes":["read"],"external_id":null}"#,
        r#"{"name":"ci","scopes":["read"],"external_id":42}"#,
    ] {
        let r = f
            .call(Method::POST, "/api/tokens", &admin, Some(body))
            .await;
        refused(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_settable",
            "external_id",
        );
        let r = f
            .session(Method::POST, "/session/tokens", "alice", Some(body))
            .await;
        refused(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_settable",
            "external_id",
        );
    }
    assert_eq!(
        f.issuer.list("alice").await.unwrap().len(),
        2,
        "nothing made"
    );
    // Nor by editing: not on the key's own record, not from a session.
    for body in [
        r#"{"external_id":"cust_other"}"#,
        r#"{"name":"x","external_id":null}"#,
    ] {
        let path = format!("/api/tokens/{own_id}");
        let r = f.call(Method::PATCH, &path, &own, Some(body)).await;
        refused(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_settable",
            "external_id",
        );
        let path = format!("/session/tokens/{own_id}");
        let r = f.session(Method::PATCH, &path, "alice", Some(body)).await;
        refused(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_settable",
            "external_id",
        );
    }
    let stored = f.issuer.get(own_id).await.unwrap().unwrap();
    assert_eq!(stored.external_id.as_deref(), Some("cust_alice"));
    assert_eq!(stored.name, "limited", "the refused edit changed nothing");
    // Listings show it; `meta` stays the key holder's to write.
    let r = f
        .call(
            Method::PATCH,
            &format!("/api/tokens/{own_id}"),
            &own,
            Some(r#"{"meta":{"a":1}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["external_id"], "cust_alice");
    assert_eq!(r.json["meta"], json!({"a": 1}));
}

// ------------------------------------------ a policy accepted is a policy enforced

#[tokio::test]
async fn policies_the_service_does_not_enforce_are_refused_by_name() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    for (body, names) in [
        (r#"{"name":"ci","remaining":3}"#, "remaining"),
        (
            r#"{"name":"ci","remaining":3,"refill":{"amount":3,"every":"day"}}"#,
            "remaining",
        ),
        (
            r#"{"name":"ci","rate_limit":{"limit":10,"period_seconds":60}}"#,
            "rate_limit",
        ),
    ] {
        let r = f
            .session(Method::POST, "/unenforced/tokens", "alice", Some(body))
            .await;
        refused(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_not_enforced",
            names,
        );
        // Where the service declares it enforces them, they are taken.
        let r = f
            .session(Method::POST, "/session/tokens", "alice", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{body}: {}", r.text);
    }
    assert_eq!(f.issuer.list("alice").await.unwrap().len(), 3);
    // What the verifier and the layer enforce always needs no declaration.
    let r = f
        .session(
            Method::POST,
            "/unenforced/tokens",
            "alice",
            Some(r#"{"name":"ci","ip_allowlist":["127.0.0.1"],"meta":{"a":1}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn an_explicit_null_is_refused_unless_its_meaning_is_documented() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    // `"scopes": null` is not "omitted": it would take every scope the
    // owner may grant here.
    for field in [
        "scopes",
        "meta",
        "ip_allowlist",
        "rate_limit",
        "remaining",
        "refill",
    ] {
        let body = format!(r#"{{"name":"ci","{field}":null}}"#);
        let r = f
            .session(Method::POST, "/inherit/tokens", "alice", Some(&body))
            .await;
        refused(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "null_not_allowed",
            field,
        );
    }
    assert!(f.issuer.list("alice").await.unwrap().is_empty());
    // `"expires_at": null` is documented: no expiry.
    let r = f
        .session(
            Method::POST,
            "/inherit/tokens",
            "alice",
            Some(r#"{"name":"ci","scopes":["read"],"expires_at":null}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let path = format!("/inherit/tokens/{id}");
    for field in ["name", "scopes", "enabled", "ip_allowlist"] {
        let body = format!(r#"{{"{field}":null,"meta":{{"a":1}}}}"#);
        let r = f.session(Method::PATCH, &path, "alice", Some(&body)).await;
        refused(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "null_not_allowed",
            field,
        );
    }
    let stored = f.issuer.get(id.parse().unwrap()).await.unwrap().unwrap();
    assert!(
        stored.meta.is_empty(),
        "nothing of a refused edit is applied"
    );
    // `"meta": null` is documented: it clears.
    let r = f
        .session(Method::PATCH, &path, "alice", Some(r#"{"meta":null}"#))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

// ------------------------------------------------ rate limits: burst and rate

#[tokio::test]
async fn a_key_cannot_mint_a_burstier_child_even_at_a_lower_rate() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let rate = |limit: u32, period: u32| {
        KeyRateLimit::new(limit.try_into().unwrap(), period.try_into().unwrap())
    };
    let (_, parent) = f
        .key_with("alice", ALL, KeyPolicy::default().rate_limit(rate(10, 60)))
        .await;
    let create = |limit: u32, period: u32| {
        let body = format!(
            r#"{{"name":"child","scopes":["read"],"rate_limit":{{"limit":{limit},"period_seconds":{period}}}}}"#
        );
        let (f, parent) = (&f, &parent);
        async move {
            f.call(Method::POST, "/api/tokens", parent, Some(&body))
                .await
        }
    };
    // 1000 per 6000 s is slower than 10 per 60 s, but 1000 at once.
    let r = create(1000, 6000).await;
    refused(
        &r,
        StatusCode::FORBIDDEN,
        "policy_exceeds_caller",
        "rate_limit",
    );
    assert!(r.json.get("token").is_none());
    // Faster with a smaller burst: refused too.
    let r = create(5, 1).await;
    refused(
        &r,
        StatusCode::FORBIDDEN,
        "policy_exceeds_caller",
        "rate_limit",
    );
    // No larger burst and no faster: made.
    for (limit, period) in [(10, 60), (5, 60), (10, 600)] {
        let r = create(limit, period).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{limit}/{period}: {}",
            r.text
        );
    }
}

// ------------------------------------------------ concurrent changes of one key

/// A key of alice's holding `read` and `write`, made by `admin`: its id
/// and the path to edit it.
async fn editable_key(f: &Fixture, admin: &str) -> (String, String) {
    let r = f
        .call(
            Method::POST,
            "/api/tokens",
            admin,
            Some(r#"{"name":"ci","scopes":["read","write"]}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let path = format!("/api/tokens/{id}");
    (id, path)
}

#[tokio::test]
async fn an_edit_racing_a_rotation_revocation_or_edit_is_409_not_lost() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let narrow = Some(r#"{"scopes":["read"]}"#);

    // The edit has read and checked the key; a rotation (then a revocation,
    // then another edit) commits before the edit's write.
    type Other = fn(&str) -> (Method, String, Option<&'static str>);
    let others: [(&str, Other); 3] = [
        ("rotate", |path| {
            (Method::POST, format!("{path}/rotate"), None)
        }),
        ("revoke", |path| (Method::DELETE, path.to_owned(), None)),
        ("edit", |path| {
            (
                Method::PATCH,
                path.to_owned(),
                Some(r#"{"name":"renamed"}"#),
            )
        }),
    ];
    for (what, other) in others {
        let (id, path) = editable_key(&f, &admin).await;
        let (arrived, go) = f.store.update_gate().arm();
        let (method, other_path, body) = other(&path);
        let (edit, done) = tokio::join!(f.call(Method::PATCH, &path, &admin, narrow), async {
            arrived.await.unwrap();
            let r = f.call(method, &other_path, &admin, body).await;
            go.send(()).unwrap();
            r
        });
        assert!(done.status.is_success(), "{what}: {}", done.text);
        assert_eq!(edit.status, StatusCode::CONFLICT, "{what}: {}", edit.text);
        assert_eq!(edit.json["error"], "conflict");
        // The other change stands, and nothing of the refused edit landed.
        let stored = f
            .store
            .inner()
            .get(id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.scopes,
            ScopeSet::parse(["read", "write"]).unwrap(),
            "{what}"
        );
    }
    // Unraced, the same edit goes through.
    let (_, path) = editable_key(&f, &admin).await;
    let r = f.call(Method::PATCH, &path, &admin, narrow).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn an_edit_landing_while_a_rotation_is_under_way_reaches_the_replacement() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", ALL).await;
    let (_, path) = editable_key(&f, &admin).await;
    // The rotation has read the key and is about to retire it when the
    // narrowing commits.
    let (arrived, go) = f.store.rotate_gate().arm();
    let rotate = format!("{path}/rotate");
    let (rotated, edit) = tokio::join!(f.call(Method::POST, &rotate, &admin, None), async {
        arrived.await.unwrap();
        let r = f
            .call(
                Method::PATCH,
                &path,
                &admin,
                Some(r#"{"scopes":["read"],"ip_allowlist":["127.0.0.1"]}"#),
            )
            .await;
        go.send(()).unwrap();
        r
    });
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.text);
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    // The replacement holds the narrowing, as answered and as stored.
    assert_eq!(rotated.json["scopes"], json!(["read"]), "{}", rotated.text);
    let new_id: KeyId = rotated.json["id"].as_str().unwrap().parse().unwrap();
    let stored = f.store.inner().get(new_id).await.unwrap().unwrap();
    assert_eq!(stored.scopes, ScopeSet::parse(["read"]).unwrap());
    assert_eq!(stored.ip_allowlist, vec!["127.0.0.1/32".parse().unwrap()]);
}

// ------------------------------------------------ owners that forget the key

/// An owner identified by the request's API key that forgets to say so
/// (no `acting_key`): it would drop every key-backed restriction.
struct Forgetful(Principal, ScopeSet);

impl<S: Send + Sync> FromRequestParts<S> for Forgetful {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, StatusCode> {
        let Auth(ctx) = Auth::from_request_parts(parts, state)
            .await
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        Ok(Self(
            ctx.effective_principal().clone(),
            ctx.scopes().clone(),
        ))
    }
}

impl KeyOwner for Forgetful {
    fn principal(&self) -> &Principal {
        &self.0
    }
    fn grantable_scopes(&self) -> &ScopeSet {
        &self.1
    }
}

#[tokio::test]
async fn an_owner_that_forgets_the_acting_key_fails_closed() {
    let store = Arc::new(MemoryKeyStore::new());
    let issuer = fixtures::issuer(store.clone());
    let audit = Arc::new(MemoryAuditLog::default());
    let manager = KeyManager::new(issuer.clone(), audit as Arc<dyn AuditLog>);
    let store_for_admin = store.clone();
    let app = Router::new()
        .nest("/api/tokens", keys_router::<Forgetful, _>(manager))
        .layer(AuthLayer::builder(fixtures::verifier(store)).build());
    // A key that ends in an hour and may not make keys that outlive it.
    let hour = issuer
        .issue(
            NewKey::new(
                Principal::user("alice"),
                "hour",
                ScopeSet::parse(ALL).unwrap(),
            )
            .expires_at(in_(time::Duration::hours(1))),
        )
        .await
        .unwrap();
    let broad = issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "broad",
            ScopeSet::parse(ALL).unwrap(),
        ))
        .await
        .unwrap();
    let token = hour.token.expose_secret().to_owned();
    let send = |method: Method, path: String, body: Option<&'static str>| {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Body::from(body.unwrap_or(""))).unwrap();
        let app = app.clone();
        async move { Reply::from(app.oneshot(req).await.unwrap()).await }
    };
    for (method, path, body) in [
        (
            Method::POST,
            "/api/tokens".to_owned(),
            Some(r#"{"name":"forever","scopes":["read"]}"#),
        ),
        (Method::GET, "/api/tokens".to_owned(), None),
        (
            Method::DELETE,
            format!("/api/tokens/{}", broad.record.id),
            None,
        ),
        (
            Method::POST,
            format!("/api/tokens/{}/rotate", broad.record.id),
            None,
        ),
    ] {
        let r = send(method.clone(), path.clone(), body).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {path}: {}",
            r.text
        );
        assert!(!r.text.contains("\"token\""));
    }
    assert_eq!(issuer.list("alice").await.unwrap().len(), 2, "nothing made");
    let broad = issuer.get(broad.record.id).await.unwrap().unwrap();
    assert_eq!((broad.revoked_at, broad.replaced_by), (None, None));

    // The same for an administrator that forgets the key it came with.
    let manager = KeyManager::new(
        issuer.clone(),
        Arc::new(MemoryAuditLog::default()) as Arc<dyn AuditLog>,
    );
    let admin_app = Router::new()
        .nest(
            "/admin/keys",
            auth_axum::admin_keys_router::<ForgetfulAdmin, _>(manager),
        )
        .layer(AuthLayer::builder(fixtures::verifier(store_for_admin)).build());
    let req = Request::delete(format!("/admin/keys/{}", broad.id))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let r = Reply::from(admin_app.oneshot(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    let broad = issuer.get(broad.id).await.unwrap().unwrap();
    assert_eq!(broad.revoked_at, None);
}

/// A service-wide administrator that forgets `acting_key`.
struct ForgetfulAdmin;

impl<S: Send + Sync> FromRequestParts<S> for ForgetfulAdmin {
    type Rejection = StatusCode;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        Ok(Self)
    }
}

impl auth_axum::KeyAdmin for ForgetfulAdmin {
    fn organisation(&self) -> Option<&str> {
        None
    }
}

/// Creations, rotations, edits and revocations, refused attempts included,
/// are key management for the audit log, so that a durable log never sheds
/// them; reading keys and using one are not. The mark is not part of an
/// event's JSON.
#[tokio::test]
async fn key_changes_are_audited_as_key_management() {
    let f = Fixture::start(ErrorFormat::Flat).await;
    let (_, admin) = f.key("alice", &SCOPES).await;
    let (target, _) = f.key("alice", &["read"]).await;
    let (rotated, _) = f.key("alice", &["read"]).await;
    let one = format!("/api/tokens/{target}");
    let calls = [
        (
            Method::POST,
            "/api/tokens".to_owned(),
            Some(r#"{"name":"made","scopes":["read"]}"#),
            StatusCode::CREATED,
        ),
        (
            Method::PATCH,
            one.clone(),
            Some(r#"{"name":"renamed"}"#),
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            one.clone(),
            Some("{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            format!("/api/tokens/{rotated}/rotate"),
            None,
            StatusCode::CREATED,
        ),
        (Method::GET, one.clone(), None, StatusCode::OK),
        (Method::GET, format!("{one}/activity"), None, StatusCode::OK),
        (Method::DELETE, one.clone(), None, StatusCode::NO_CONTENT),
        (
            Method::DELETE,
            "/api/tokens/AAAAAAAAAAA".to_owned(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (Method::GET, "/me".to_owned(), None, StatusCode::OK),
    ];
    for (method, path, body, status) in &calls {
        let r = f.call(method.clone(), path, &admin, *body).await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text);
    }
    let events = f
        .audit
        .query(&AuditQuery::default().limit(100))
        .await
        .unwrap()
        .events;
    assert_eq!(events.len(), calls.len());
    for e in &events {
        let changes_keys = e.path.starts_with("/api/tokens")
            && [Method::POST, Method::PATCH, Method::DELETE].contains(&e.method);
        assert_eq!(
            e.key_management, changes_keys,
            "{} {} {:?}",
            e.method, e.path, e.status
        );
        let json = serde_json::to_value(e).unwrap();
        assert!(json.get("key_management").is_none(), "{json}");
        assert_eq!(json["method"], e.method.as_str());
    }
}
