//! auth-axum behind a real `AuthLayer`: HTTP requests in process
//! (`oneshot`, from 127.0.0.1 as a socket would give), WebSockets over a real
//! socket on 127.0.0.1 with tokio-tungstenite. Real verifier, store and keys.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use auth_axum::{
    connect_info_ip, Access, Auth, AuthenticatedUpgrade, GrantResolver, Grants, Match,
    RequireScopeLayer, ScopeRule, Scoped,
};
use auth_core::{
    audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, response::ErrorFormat, AccessLevel,
    AuthContext, KeyIssuer, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix,
    Verifier,
};
use auth_tower::{AuthLayer, ResolveError, Subject, SubjectDecision, SubjectResolver};
use axum::{
    body::Body,
    extract::{ws::Message, ConnectInfo, Path},
    http::Request,
    response::Response,
    routing::{get, post, put},
    Extension, Json, Router,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use keygate_test_support::logs::CapturedLogs;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use tower::ServiceExt;

// ---------------------------------------------------------------- fixtures

struct Keys {
    issuer: KeyIssuer,
    verifier: Verifier,
}

impl Keys {
    fn new() -> Self {
        let store = Arc::new(MemoryKeyStore::new());
        let hasher = SecretHasher::for_tests();
        Self {
            issuer: KeyIssuer::new(
                store.clone(),
                hasher.clone(),
                TokenPrefix::new("sk_").unwrap(),
            ),
            verifier: Verifier::builder(store).hasher(hasher).build(),
        }
    }

    async fn key(&self, owner: Principal, scopes: &[&str]) -> String {
        let issued = self
            .issuer
            .issue(NewKey::new(owner, "test", ScopeSet::parse(scopes).unwrap()))
            .await
            .unwrap();
        issued.token.expose_secret().to_owned()
    }
}

/// The pod's scopes: the new scope or the legacy one.
struct ReadEntities;
impl ScopeRule for ReadEntities {
    const SCOPES: &'static [&'static str] = &["hub-protocol.read", "read:entities"];
    const MATCH: Match = Match::Any;
}

/// Grants by (user, document).
struct DocGrants(HashMap<(&'static str, &'static str), AccessLevel>);

#[async_trait]
impl GrantResolver for DocGrants {
    async fn level(&self, who: &Principal, doc: &str) -> Result<Option<AccessLevel>, ResolveError> {
        if doc == "doc_boom" {
            return Err(ResolveError::new("grants table unreachable"));
        }
        Ok(self
            .0
            .iter()
            .find(|((u, d), _)| *u == who.user_id() && *d == doc)
            .map(|(_, l)| *l))
    }
}

/// Admins may act as anyone in their organisation, within the subject's own scopes.
struct OrgAdmins;

#[async_trait]
impl SubjectResolver for OrgAdmins {
    async fn resolve(
        &self,
        actor: &AuthContext,
        user_id: &str,
    ) -> Result<SubjectDecision, ResolveError> {
        if actor.actor().user_id() != "admin" {
            return Ok(SubjectDecision::Deny);
        }
        let ceiling = ScopeSet::parse(["read:entities"]).unwrap();
        Ok(SubjectDecision::Allow(Subject::new(
            Principal::in_org(user_id, "acme"),
            ceiling,
        )))
    }
}

async fn me(Auth(ctx): Auth) -> Json<AuthContext> {
    Json(ctx)
}

async fn hello(auth: Option<Auth>) -> String {
    match auth {
        Some(ctx) => format!("hello {}", ctx.effective_user()),
        None => "hello stranger".to_owned(),
    }
}

async fn entities(Scoped(ctx, _): Scoped<ReadEntities>) -> String {
    format!("entities of {}", ctx.effective_user())
}

async fn edit_doc(
    access: Access,
    Path(id): Path<String>,
) -> Result<String, auth_axum::AuthRejection> {
    let level = access.require(&id, AccessLevel::Editor).await?;
    Ok(format!(
        "{} edits {id} as {level}",
        access.context().effective_user()
    ))
}

/// Greets, then echoes; remembers the upgrade's `Debug` output.
async fn chat(
    ws: AuthenticatedUpgrade,
    Extension(seen): Extension<Arc<Mutex<String>>>,
    Extension(verifier): Extension<Verifier>,
) -> Response {
    seen.lock().unwrap().push_str(&format!("{ws:?}"));
    ws.on_upgrade(&verifier, |mut socket| async move {
        let hello = format!("hello {}", socket.context().effective_user());
        if socket.send(Message::Text(hello.into())).await.is_err() {
            return;
        }
        while let Some(Ok(Message::Text(t))) = socket.recv().await {
            if socket.send(Message::Text(t)).await.is_err() {
                return;
            }
        }
    })
}

struct Server {
    router: Router,
    audit: Arc<MemoryAuditLog>,
    debug_seen: Arc<Mutex<String>>,
}

impl Server {
    async fn start(keys: &Keys) -> Self {
        let audit = Arc::new(MemoryAuditLog::new(100));
        let debug_seen = Arc::new(Mutex::new(String::new()));
        let grants = Grants::new(DocGrants(HashMap::from([
            (("alice", "doc_1"), AccessLevel::Editor),
            (("bob", "doc_1"), AccessLevel::Viewer),
            (("stu1", "doc_1"), AccessLevel::Owner),
        ])));
        let layer = AuthLayer::builder(keys.verifier.clone())
            .optional()
            .error_format(ErrorFormat::Envelope)
            .subject_resolver(OrgAdmins)
            .audit(audit.clone())
            .client_ip(connect_info_ip)
            .build();
        let app = Router::new()
            .route("/me", get(me))
            .route("/hello", get(hello))
            .route("/entities", get(entities))
            .route("/docs/{id}", put(edit_doc))
            .route("/chat", get(chat))
            .route(
                "/skills/invoke",
                post(|| async { "invoked" }).layer(RequireScopeLayer::one("skills.invoke")),
            )
            .route(
                "/admin",
                get(|| async { "admin" })
                    .layer(RequireScopeLayer::all(["admin:read", "admin:write"])),
            )
            .layer(Extension(grants))
            .layer(Extension(debug_seen.clone()))
            .layer(Extension(keys.verifier.clone()))
            .layer(layer);
        Self {
            router: app,
            audit,
            debug_seen,
        }
    }

    /// Serves the same app on 127.0.0.1:0, for WebSocket clients.
    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.router.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        addr
    }

    /// Status, `WWW-Authenticate` and body of `method path`, sent in
    /// process from 127.0.0.1.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
        answer(self.router.clone().oneshot(req).await.unwrap()).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Option<String>, String) {
        self.send("GET", path, token, &[]).await
    }
}

/// Status, `WWW-Authenticate` and body.
async fn answer(res: Response) -> (u16, Option<String>, String) {
    let status = res.status().as_u16();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, www, String::from_utf8(body.to_vec()).unwrap())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn extractors_answer_in_the_configured_format() {
    let keys = Keys::new();
    let alice = keys
        .key(Principal::in_org("alice", "acme"), &["read:entities"])
        .await;
    let server = Server::start(&keys).await;

    let (status, _, body) = server.get("/me", Some(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["user"], "alice");

    // Optional layer, required extractor: the extractor refuses, in the layer's format.
    let (status, www, body) = server.get("/me", None).await;
    assert_eq!(status, 401);
    assert_eq!(www.as_deref(), Some("Bearer realm=\"api\""));
    assert_eq!(
        json(&body),
        json!({"success": false, "error": {"code": "UNAUTHORIZED", "message": "Invalid or missing API token"}})
    );

    assert_eq!(server.get("/hello", None).await.2, "hello stranger");
    assert_eq!(server.get("/hello", Some(&alice)).await.2, "hello alice");
    let (status, www, _) = server.get("/hello", Some("sk_forged")).await;
    assert_eq!(status, 401, "optional mode still refuses a bad credential");
    assert_eq!(
        www.as_deref(),
        Some("Bearer realm=\"api\", error=\"invalid_token\"")
    );

    let events = server
        .audit
        .query(&AuditQuery::default().limit(10))
        .await
        .unwrap()
        .events;
    let outcomes: Vec<_> = events
        .iter()
        .rev()
        .map(|e| (e.outcome.as_str(), e.path.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("success", "/me"),
            ("success", "/hello"),
            ("failure", "/hello")
        ],
        "anonymous requests are not attempts"
    );
    assert!(events
        .iter()
        .all(|e| e.client_ip == Some("127.0.0.1".parse().unwrap())));
}

#[tokio::test]
async fn missing_layer_fails_closed() {
    let app = Router::new()
        .route("/me", get(me))
        .route("/hello", get(hello));
    for path in ["/me", "/hello"] {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let (status, _, body) = answer(app.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(status, 500, "{path}");
        assert_eq!(json(&body)["error"], "internal");
    }
}

#[tokio::test]
async fn scope_guards_as_extractors_and_route_layers() {
    let keys = Keys::new();
    let legacy = keys.key(Principal::user("alice"), &["read:entities"]).await;
    let modern = keys
        .key(
            Principal::user("bob"),
            &["hub-protocol.read", "skills.invoke"],
        )
        .await;
    let neither = keys.key(Principal::user("carol"), &["admin:read"]).await;
    let server = Server::start(&keys).await;

    assert_eq!(
        server.get("/entities", Some(&legacy)).await.2,
        "entities of alice"
    );
    assert_eq!(
        server.get("/entities", Some(&modern)).await.2,
        "entities of bob"
    );
    let (status, www, body) = server.get("/entities", Some(&neither)).await;
    assert_eq!(status, 403);
    assert_eq!(
        json(&body)["error"],
        json!({"code": "FORBIDDEN", "message": "Token lacks the required scope: one of 'hub-protocol.read', 'read:entities' is needed"})
    );
    assert_eq!(
        www.as_deref(),
        Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"hub-protocol.read read:entities\"")
    );
    assert_eq!(server.get("/entities", None).await.0, 401);

    let invoke = |token| server.send("POST", "/skills/invoke", Some(token), &[]);
    let (status, _, body) = invoke(&modern).await;
    assert_eq!((status, body.as_str()), (200, "invoked"));
    let (status, www, body) = invoke(&legacy).await;
    assert_eq!(status, 403);
    assert_eq!(
        json(&body)["error"]["message"],
        "Token lacks the required scope 'skills.invoke'"
    );
    assert!(www.unwrap().contains("scope=\"skills.invoke\""));

    let (status, _, body) = server.get("/admin", Some(&neither)).await;
    assert_eq!(status, 403);
    assert_eq!(
        json(&body)["error"]["message"],
        "Token lacks the required scope 'admin:write'"
    );
    let (status, _, _) = server.get("/admin", None).await;
    assert_eq!(status, 401, "a guard without a context answers 401");
}

#[tokio::test]
async fn access_levels_and_impersonation() {
    let keys = Keys::new();
    let alice = keys.key(Principal::in_org("alice", "acme"), &[]).await;
    let bob = keys.key(Principal::in_org("bob", "acme"), &[]).await;
    let admin = keys
        .key(
            Principal::in_org("admin", "acme"),
            &["read:entities", "sudo"],
        )
        .await;
    let server = Server::start(&keys).await;
    let server = &server;
    let edit = |doc: &'static str, token: &str, subject: Option<&'static str>| {
        let token = token.to_owned();
        async move {
            let headers: &[(&str, &str)] = match subject {
                Some(s) => &[("x-subject-user", s)],
                None => &[],
            };
            server
                .send("PUT", &format!("/docs/{doc}"), Some(&token), headers)
                .await
        }
    };

    let (status, _, body) = edit("doc_1", &alice, None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "alice edits doc_1 as editor")
    );

    let (status, _, body) = edit("doc_1", &bob, None).await;
    assert_eq!(status, 403, "a viewer may not edit");
    assert_eq!(
        json(&body)["error"]["message"],
        "This action needs editor access to the resource; you have viewer access"
    );
    let (status, _, body) = edit("doc_2", &alice, None).await;
    assert_eq!(
        (status, json(&body)["error"]["message"].as_str()),
        (403, Some("No access to this resource"))
    );
    let (status, _, body) = edit("doc_boom", &alice, None).await;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (503, Some("UNAVAILABLE"))
    );

    // The admin has no grant on doc_1, but acting as stu1 (its owner) it is stu1's level that counts.
    let (status, _, _) = edit("doc_1", &admin, None).await;
    assert_eq!(status, 403);
    let (status, _, body) = edit("doc_1", &admin, Some("stu1")).await;
    assert_eq!((status, body.as_str()), (200, "stu1 edits doc_1 as owner"));
    // Bob may not act as anyone.
    let (status, _, _) = edit("doc_1", &bob, Some("stu1")).await;
    assert_eq!(status, 403);

    let events = server
        .audit
        .query(&AuditQuery::default().limit(100))
        .await
        .unwrap()
        .events;
    let acting = events
        .iter()
        .find(|e| e.subject.as_deref() == Some("stu1") && e.status == Some(200))
        .unwrap();
    assert_eq!(
        acting.actor.as_deref(),
        Some("admin"),
        "audit events carry actor and subject"
    );
    let refused = events
        .iter()
        .find(|e| e.actor.as_deref() == Some("bob") && e.subject.is_some())
        .unwrap();
    assert_eq!(refused.status, Some(403));
}

/// A browser-style WebSocket request: the token as a subprotocol.
fn ws_request(addr: SocketAddr, protocols: &str) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/chat").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    req
}

#[tokio::test]
async fn websocket_authenticates_from_the_subprotocol() {
    // Everything runs on this thread: the capture sees server and client logs.
    let (logs, _guard) = CapturedLogs::on_this_thread();

    let keys = Keys::new();
    let alice = keys.key(Principal::user("alice"), &[]).await;
    let server = Server::start(&keys).await;
    let addr = server.serve().await;

    let (mut socket, res) =
        tokio_tungstenite::connect_async(ws_request(addr, &format!("Bearer, {alice}")))
            .await
            .expect("handshake accepted: the server selected a protocol the client offered");
    assert_eq!(
        res.headers()["sec-websocket-protocol"],
        "Bearer",
        "the marker is selected, never the token"
    );
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        tungstenite::Message::text("hello alice")
    );
    socket
        .send(tungstenite::Message::text("ping"))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        tungstenite::Message::text("ping")
    );
    socket.close(None).await.unwrap();

    // The client's spelling is kept: a browser compares exactly.
    let (_, res) =
        tokio_tungstenite::connect_async(ws_request(addr, &format!("chat, bearer, {alice}")))
            .await
            .unwrap();
    assert_eq!(res.headers()["sec-websocket-protocol"], "bearer");

    // Non-browser clients may use Authorization; no protocol is selected then.
    let mut req = format!("ws://{}/chat", addr).into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let (mut socket, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(!res.headers().contains_key("sec-websocket-protocol"));
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        tungstenite::Message::text("hello alice")
    );

    let revoked_like = format!("{alice}x");
    match tokio_tungstenite::connect_async(ws_request(addr, &format!("Bearer, {revoked_like}")))
        .await
    {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401);
            let body = String::from_utf8(res.body().clone().unwrap_or_default()).unwrap();
            assert!(!body.contains(&alice[3..]), "{body}");
        }
        other => panic!("expected a 401 handshake, got {other:?}"),
    }
    match tokio_tungstenite::connect_async(format!("ws://{}/chat", addr)).await {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401, "an anonymous upgrade is refused")
        }
        other => panic!("expected a 401 handshake, got {other:?}"),
    }

    let logs = logs.text();
    let debug = server.debug_seen.lock().unwrap().clone();
    assert!(
        debug.contains("AuthenticatedUpgrade") && debug.contains("\"Bearer\""),
        "{debug}"
    );
    assert!(!logs.is_empty());
    let secret = &alice[3..];
    assert!(!logs.contains(secret), "token in logs:\n{logs}");
    assert!(!debug.contains(secret), "token in Debug output:\n{debug}");
}
