//! `AuthLayer` end to end, in process: real verifier, real keys, axum routers
//! and tower stacks driven with `oneshot`.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::Context,
};

use async_trait::async_trait;
use auth_core::{
    audit::AuditLog, audit::AuditOutcome, audit::AuditQuery, audit::MemoryAuditLog,
    response::ErrorFormat, token::mint_token, AuditEvent, AuthContext, KeyId, KeyIssuer,
    MemoryKeyStore, NewKey, Principal, RejectReason, ScopeSet, SecretHasher, TokenPrefix, Verifier,
};
use auth_tower::{
    AuthLayer, AuthMakeSpan, AuthRealm, CredentialSource, RenderAuthError, ResolveError, Subject,
    SubjectDecision, SubjectResolver, WorkspaceResolver,
};
use axum::{body::Body, extract::Request, response::Response, routing::get, Json, Router};
use bytes::Bytes;
use http::{header, HeaderName, StatusCode};
use http_body_util::BodyExt;
use keygate_test_support::{fixtures, logs::CapturedLogs, stores::TestStore};
use serde_json::{json, Value};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::trace::{DefaultMakeSpan, TraceLayer};

// ---------------------------------------------------------------- fixtures

struct Fixture {
    issuer: KeyIssuer,
    verifier: Verifier,
    audit: Arc<MemoryAuditLog>,
}

impl Fixture {
    fn new() -> Self {
        let store = Arc::new(MemoryKeyStore::new());
        Self {
            issuer: fixtures::issuer(store.clone()),
            verifier: fixtures::verifier(store),
            audit: Arc::new(MemoryAuditLog::new(100)),
        }
    }

    /// Issues a key; returns its plaintext and id.
    async fn key(&self, owner: Principal, scopes: &[&str]) -> (String, KeyId) {
        let issued = self
            .issuer
            .issue(NewKey::new(owner, "test", ScopeSet::parse(scopes).unwrap()))
            .await
            .unwrap();
        (issued.token.expose_secret().to_owned(), issued.record.id)
    }

    async fn events(&self) -> Vec<AuditEvent> {
        let mut page = self
            .audit
            .query(&AuditQuery::default().limit(100))
            .await
            .unwrap();
        page.events.reverse(); // oldest first
        page.events
    }
}

/// Echoes the request's context (or null) and whether the layer left its error format.
async fn whoami(req: Request) -> Json<Value> {
    let ctx = req.extensions().get::<AuthContext>();
    Json(json!({
        "ctx": ctx,
        "format": format!("{:?}", req.error_format()),
        "realm": req.extensions().get::<AuthRealm>().map(|r| r.0.to_string()),
    }))
}

fn app(layer: AuthLayer) -> Router {
    Router::new().route("/me", get(whoami)).layer(layer)
}

fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request {
    let mut b = http::Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send<S>(svc: S, req: Request) -> Answer
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

const FLAT_401: &str = r#"{"error":"unauthorized","message":"Invalid or missing API token"}"#;

// ---------------------------------------------------------------- statuses

#[tokio::test]
async fn valid_key_reaches_handler_with_context_and_is_audited() {
    let f = Fixture::new();
    let (token, id) = f.key(Principal::in_org("alice", "acme"), &["read"]).await;
    let app = app(AuthLayer::builder(f.verifier.clone())
        .audit(f.audit.clone())
        .build());

    let res = send(
        app,
        get_with(
            "/me?page=2",
            &[("authorization", &bearer(&token)), ("user-agent", "curl/8")],
        ),
    )
    .await;
    assert_eq!(res.status, 200);
    let v = res.json();
    assert_eq!(v["ctx"]["user"], "alice");
    assert_eq!(v["ctx"]["key_id"], id.to_string());
    assert_eq!(v["ctx"]["scopes"], json!(["read"]));
    assert_eq!(
        v["format"], "Some(Flat)",
        "the layer leaves its format for later layers"
    );
    assert_eq!(
        v["realm"],
        Value::Null,
        "the default realm costs no extension"
    );

    let events = f.events().await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.outcome, AuditOutcome::Success);
    assert_eq!(
        (e.key_id, e.actor.as_deref(), e.subject.as_deref()),
        (Some(id), Some("alice"), None)
    );
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.status),
        ("GET", "/me", Some(200))
    );
    assert_eq!(e.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(e.reason, None);
}

#[tokio::test]
async fn missing_credential_is_401_without_error_code() {
    let f = Fixture::new();
    let app = app(AuthLayer::builder(f.verifier.clone())
        .audit(f.audit.clone())
        .build());
    for headers in [&[][..], &[("authorization", "Basic dXNlcjpwYXNz")][..]] {
        let res = send(app.clone(), get_with("/me", headers)).await;
        assert_eq!(res.status, 401);
        assert_eq!(res.body, FLAT_401);
        assert_eq!(res.header(header::CONTENT_TYPE), Some("application/json"));
        assert_eq!(
            res.header(header::WWW_AUTHENTICATE),
            Some("Bearer realm=\"api\"")
        );
    }
    let events = f.events().await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.outcome == AuditOutcome::Failure
        && e.reason == Some(RejectReason::Missing)
        && e.status == Some(401)
        && e.key_id.is_none()));
}

#[tokio::test]
async fn bad_credentials_are_401_invalid_token_and_indistinguishable() {
    let f = Fixture::new();
    let (good, _) = f.key(Principal::user("alice"), &["read"]).await;
    let (revoked, revoked_id) = f.key(Principal::user("bob"), &["read"]).await;
    f.issuer.revoke(revoked_id).await.unwrap();
    let (_, unknown) = mint_token(&TokenPrefix::new("st_").unwrap());
    let unknown = unknown.expose_secret().to_owned();
    // Same key id as `good`, another token's secret and checksum: a forgery.
    let (_, other) = mint_token(&TokenPrefix::new("st_").unwrap());
    let other = other.expose_secret();
    let forged = format!("{}{}", &good[..3 + 11], &other[3 + 11..]);
    // The cache knows `good`: bytes around it must not ride on its entry.
    f.verifier.verify(&good).await.unwrap();
    let app = app(AuthLayer::builder(f.verifier.clone())
        .audit(f.audit.clone())
        .build());

    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("garbage", vec![("authorization", bearer("not-a-token"))]),
        ("unknown", vec![("authorization", bearer(&unknown))]),
        ("revoked", vec![("authorization", bearer(&revoked))]),
        ("forged", vec![("authorization", bearer(&forged))]),
        ("empty", vec![("authorization", "Bearer ".to_owned())]),
        (
            "two headers",
            vec![
                ("authorization", bearer(&good)),
                ("authorization", bearer(&good)),
            ],
        ),
        (
            "cached token, then more",
            vec![("authorization", bearer(&format!("{good} x")))],
        ),
        (
            "cached token, a tab inside",
            vec![(
                "authorization",
                bearer(&format!("{}\t{}", &good[..20], &good[20..])),
            )],
        ),
    ];
    for (name, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = send(app.clone(), get_with("/me", &headers)).await;
        assert_eq!(res.status, 401, "{name}");
        assert_eq!(
            res.body, FLAT_401,
            "{name}: one message for every bad credential"
        );
        assert_eq!(
            res.header(header::WWW_AUTHENTICATE),
            Some("Bearer realm=\"api\", error=\"invalid_token\""),
            "{name}"
        );
    }
    let events = f.events().await;
    let reasons: Vec<_> = events
        .iter()
        .map(|e| (e.reason.unwrap(), e.status.unwrap()))
        .collect();
    use RejectReason::*;
    let want = [
        Malformed,
        UnknownKey,
        Revoked,
        BadChecksum,
        Malformed,
        Malformed,
        Malformed,
        Malformed,
    ]
    .map(|r| (r, 401));
    assert_eq!(
        reasons, want,
        "audit keeps the reason the client is not told"
    );
    assert_eq!(
        events[2].key_id,
        Some(revoked_id),
        "well-formed tokens are audited with their key id"
    );
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let f = Fixture::new();
    let (token, _) = f.key(Principal::user("alice"), &[]).await;
    let app = app(AuthLayer::new(f.verifier.clone()));
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let res = send(
            app.clone(),
            get_with("/me", &[("authorization", &format!("{scheme}  {token}"))]),
        )
        .await;
        assert_eq!(res.status, 200, "{scheme}");
    }
}

#[tokio::test]
async fn store_outage_is_503_and_never_reaches_the_handler() {
    let store = TestStore::down();
    let verifier = Verifier::builder(store.clone())
        .hasher(SecretHasher::for_tests())
        .build();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let audit = Arc::new(MemoryAuditLog::new(10));
    let app = Router::new()
        .route(
            "/me",
            get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "handler"
            }),
        )
        .layer(
            AuthLayer::builder(verifier)
                .optional()
                .audit(audit.clone())
                .build(),
        );
    let (_, token) = mint_token(&TokenPrefix::new("st_").unwrap());

    let res = send(
        app,
        get_with("/me", &[("authorization", &bearer(token.expose_secret()))]),
    )
    .await;
    assert_eq!(res.status, 503);
    assert_eq!(
        res.json(),
        json!({"error": "unavailable", "message": "Authentication service temporarily unavailable"})
    );
    assert!(
        !String::from_utf8_lossy(&res.body).contains("db.internal"),
        "backend details stay in the logs"
    );
    assert_eq!(store.gets(), 1, "the store was asked");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "fail closed, even in optional mode"
    );
    let events = audit
        .query(&AuditQuery::default().limit(10))
        .await
        .unwrap()
        .events;
    assert_eq!(
        (events[0].reason, events[0].status),
        (Some(RejectReason::StoreUnavailable), Some(503))
    );
}

// ---------------------------------------------------------------- formats

#[tokio::test]
async fn every_error_format() {
    let f = Fixture::new();
    let req = || get_with("/me", &[]);

    let res = send(
        app(AuthLayer::builder(f.verifier.clone())
            .error_format(ErrorFormat::Envelope)
            .build()),
        req(),
    )
    .await;
    assert_eq!(
        res.json(),
        json!({"success": false, "error": {"code": "UNAUTHORIZED", "message": "Invalid or missing API token"}})
    );
    assert_eq!(res.header(header::CONTENT_TYPE), Some("application/json"));

    let res = send(
        app(AuthLayer::builder(f.verifier.clone())
            .error_format(ErrorFormat::Problem)
            .realm("skills")
            .build()),
        req(),
    )
    .await;
    assert_eq!(
        res.header(header::CONTENT_TYPE),
        Some("application/problem+json")
    );
    assert_eq!(res.json()["code"], "unauthorized");
    assert_eq!(res.json()["status"], 401);
    assert_eq!(
        res.header(header::WWW_AUTHENTICATE),
        Some("Bearer realm=\"skills\"")
    );

    let custom = ErrorFormat::custom(|e| {
        let mut r = http::Response::new(Bytes::from(format!(r#"{{"oops":"{}"}}"#, e.code())));
        *r.status_mut() = e.status();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        r
    });
    let res = send(
        app(AuthLayer::builder(f.verifier.clone())
            .error_format(custom)
            .build()),
        req(),
    )
    .await;
    assert_eq!(
        (res.status, res.json()),
        (StatusCode::UNAUTHORIZED, json!({"oops": "unauthorized"}))
    );
    assert_eq!(
        res.header(header::WWW_AUTHENTICATE),
        Some("Bearer realm=\"api\"")
    );
}

#[tokio::test]
async fn format_and_realm_reach_later_layers() {
    let f = Fixture::new();
    let (token, _) = f.key(Principal::user("alice"), &[]).await;
    let layer = AuthLayer::builder(f.verifier.clone())
        .error_format(ErrorFormat::Problem)
        .realm("pod")
        .build();
    // A later layer (think: rate limiter) refusing with the layer's format.
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request| async move {
            let err = auth_core::AuthError::rate_limited(std::time::Duration::from_secs(2));
            Ok::<_, Infallible>(req.render_auth_error(&err).map(Body::from))
        });
    let res = send(svc, get_with("/", &[("authorization", &bearer(&token))])).await;
    assert_eq!(res.status, 429);
    assert_eq!(
        res.header(header::CONTENT_TYPE),
        Some("application/problem+json")
    );
    assert_eq!(res.header(header::RETRY_AFTER), Some("2"));
}

// ---------------------------------------------------------------- modes and sources

#[tokio::test]
async fn optional_mode_passes_anonymous_but_refuses_bad_credentials() {
    let f = Fixture::new();
    let (token, _) = f.key(Principal::user("alice"), &[]).await;
    let app = app(AuthLayer::builder(f.verifier.clone())
        .optional()
        .audit(f.audit.clone())
        .build());

    let res = send(app.clone(), get_with("/me", &[])).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["ctx"], Value::Null);
    assert_eq!(
        res.json()["format"],
        "Some(Flat)",
        "extractors behind can still tell the layer ran"
    );

    let res = send(
        app.clone(),
        get_with("/me", &[("authorization", "Bearer st_nope")]),
    )
    .await;
    assert_eq!(res.status, 401);

    let res = send(app, get_with("/me", &[("authorization", &bearer(&token))])).await;
    assert_eq!(res.json()["ctx"]["user"], "alice");

    let outcomes: Vec<_> = f.events().await.iter().map(|e| e.outcome).collect();
    assert_eq!(
        outcomes,
        [AuditOutcome::Failure, AuditOutcome::Success],
        "anonymous requests are not attempts"
    );
}

#[tokio::test]
async fn custom_header_and_query_parameter_sources() {
    let f = Fixture::new();
    let (token, _) = f.key(Principal::user("alice"), &[]).await;
    let x_api_key = HeaderName::from_static("x-api-key");

    // Query parameters are off by default.
    let default = app(AuthLayer::new(f.verifier.clone()));
    let res = send(default, get_with(&format!("/me?api_key={token}"), &[])).await;
    assert_eq!(res.status, 401);

    let layer = AuthLayer::builder(f.verifier.clone())
        .api_key_header(x_api_key.clone())
        .query_param("api_key")
        .audit(f.audit.clone())
        .build();
    let app = app(layer);
    let res = send(app.clone(), get_with("/me", &[("x-api-key", &token)])).await;
    assert_eq!(res.json()["ctx"]["user"], "alice");
    let res = send(
        app.clone(),
        get_with(&format!("/me?x=1&api_key={token}"), &[]),
    )
    .await;
    assert_eq!(res.json()["ctx"]["user"], "alice");
    assert!(
        f.events().await.iter().all(|e| e.path == "/me"),
        "audit paths never hold the query"
    );

    // Order: the custom header alone first.
    let only_header = AuthLayer::builder(f.verifier.clone())
        .sources([CredentialSource::header(x_api_key)])
        .build();
    let res = send(
        crate::app(only_header.clone()),
        get_with("/me", &[("authorization", &bearer(&token))]),
    )
    .await;
    assert_eq!(res.status, 401, "Bearer is not a source any more");
    let res = send(
        crate::app(only_header),
        get_with("/me", &[("x-api-key", &token), ("x-api-key", &token)]),
    )
    .await;
    assert_eq!(
        res.header(header::WWW_AUTHENTICATE),
        Some("Bearer realm=\"api\", error=\"invalid_token\"")
    );
}

#[tokio::test]
async fn websocket_subprotocol_is_read_on_upgrade_requests_only() {
    let f = Fixture::new();
    let (token, _) = f.key(Principal::user("alice"), &[]).await;
    let app = app(AuthLayer::new(f.verifier.clone()));
    let protocol = format!("Bearer, {token}");

    let res = send(
        app.clone(),
        get_with(
            "/me",
            &[
                ("upgrade", "websocket"),
                ("sec-websocket-protocol", &protocol),
            ],
        ),
    )
    .await;
    assert_eq!(res.json()["ctx"]["user"], "alice");
    let res = send(
        app,
        get_with("/me", &[("sec-websocket-protocol", &protocol)]),
    )
    .await;
    assert_eq!(res.status, 401);
}

// ---------------------------------------------------------------- impersonation

/// Users by id: organisation and scopes. Admins of an org may act as its users.
struct Directory {
    users: HashMap<&'static str, (&'static str, ScopeSet, bool)>,
}

impl Directory {
    fn new() -> Self {
        let s = |v: &[&str]| ScopeSet::parse(v).unwrap();
        let users = HashMap::from([
            ("admin", ("acme", s(&["read", "write", "sudo"]), true)),
            ("stu1", ("acme", s(&["read"]), false)),
            ("mallory", ("acme", s(&["read", "write", "sudo"]), false)),
            ("eve", ("other", s(&["read"]), false)),
        ]);
        Self { users }
    }
}

#[async_trait]
impl SubjectResolver for Directory {
    async fn resolve(
        &self,
        actor: &AuthContext,
        user_id: &str,
    ) -> Result<SubjectDecision, ResolveError> {
        if user_id == "boom" {
            return Err(ResolveError::new("directory unreachable"));
        }
        let Some((org, scopes, _)) = self.users.get(user_id) else {
            return Ok(SubjectDecision::Unknown);
        };
        let actor_is_admin_of_org = self
            .users
            .get(actor.actor().user_id())
            .is_some_and(|(o, _, admin)| *admin && o == org);
        if !actor_is_admin_of_org {
            return Ok(SubjectDecision::Deny);
        }
        Ok(SubjectDecision::Allow(Subject::new(
            Principal::in_org(user_id, *org),
            scopes.clone(),
        )))
    }
}

#[tokio::test]
async fn impersonation_allowed_runs_as_the_subject_with_intersected_scopes() {
    let f = Fixture::new();
    let (token, id) = f
        .key(
            Principal::in_org("admin", "acme"),
            &["read", "write", "sudo"],
        )
        .await;
    let app = app(AuthLayer::builder(f.verifier.clone())
        .subject_resolver(Directory::new())
        .audit(f.audit.clone())
        .build());

    let res = send(
        app,
        get_with(
            "/me",
            &[
                ("authorization", &bearer(&token)),
                ("x-subject-user", "stu1"),
            ],
        ),
    )
    .await;
    assert_eq!(res.status, 200);
    let ctx = &res.json()["ctx"];
    assert_eq!(
        (&ctx["user"], &ctx["actor"], &ctx["impersonating"]),
        (&json!("stu1"), &json!("admin"), &json!(true))
    );
    assert_eq!(
        ctx["scopes"],
        json!(["read"]),
        "the key's scopes cut down to the subject's"
    );
    let e = &f.events().await[0];
    assert_eq!(
        (e.key_id, e.actor.as_deref(), e.subject.as_deref()),
        (Some(id), Some("admin"), Some("stu1"))
    );
}

#[tokio::test]
async fn impersonation_refused_is_403_with_a_clear_message() {
    let f = Fixture::new();
    let (admin_no_sudo, _) = f.key(Principal::in_org("admin", "acme"), &["read"]).await;
    let (admin, _) = f
        .key(Principal::in_org("admin", "acme"), &["read", "sudo"])
        .await;
    let (mallory, _) = f
        .key(Principal::in_org("mallory", "acme"), &["read", "sudo"])
        .await;
    let with_resolver = app(AuthLayer::builder(f.verifier.clone())
        .subject_resolver(Directory::new())
        .error_format(ErrorFormat::Envelope)
        .audit(f.audit.clone())
        .build());
    let as_user = |token: &str, subject: &str| {
        get_with(
            "/me",
            &[
                ("authorization", &bearer(token)),
                ("x-subject-user", subject),
            ],
        )
    };

    let res = send(with_resolver.clone(), as_user(&admin_no_sudo, "stu1")).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.json()["error"]["code"], "FORBIDDEN");
    assert_eq!(
        res.json()["error"]["message"],
        "This token may not act on behalf of other users: it lacks the 'sudo' scope"
    );
    assert_eq!(
        res.header(header::WWW_AUTHENTICATE),
        Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"sudo\"")
    );

    let res = send(with_resolver.clone(), as_user(&mallory, "stu1")).await;
    assert_eq!(res.status, 403, "sudo scope, but not an admin");
    assert_eq!(
        res.json()["error"]["message"],
        "This token's owner may not act on behalf of the requested user"
    );

    let res = send(with_resolver.clone(), as_user(&admin, "eve")).await;
    assert_eq!(res.status, 403, "another organisation");

    let res = send(with_resolver.clone(), as_user(&admin, "ghost")).await;
    assert_eq!(res.status, 403);
    assert_eq!(
        res.json()["error"]["message"],
        "The requested subject user does not exist"
    );

    let res = send(with_resolver.clone(), as_user(&admin, "boom")).await;
    assert_eq!(res.status, 503, "a resolver outage fails closed");
    assert_eq!(res.json()["error"]["code"], "UNAVAILABLE");

    let res = send(with_resolver.clone(), as_user(&admin, "has space")).await;
    assert_eq!(res.status, 400);

    let without_resolver = app(AuthLayer::new(f.verifier.clone()));
    let res = send(without_resolver, as_user(&admin, "stu1")).await;
    assert_eq!(res.status, 403, "never silently run as the actor");

    let events = f.events().await;
    let reasons: Vec<_> = events.iter().map(|e| e.reason.unwrap()).collect();
    use RejectReason::*;
    assert_eq!(
        reasons,
        [
            InsufficientScope,
            ImpersonationDenied,
            ImpersonationDenied,
            UnknownSubject,
            StoreUnavailable,
            InvalidRequest
        ]
    );
    assert_eq!(
        (events[1].actor.as_deref(), events[1].subject.as_deref()),
        (Some("mallory"), Some("stu1"))
    );
}

// ---------------------------------------------------------------- workspaces

struct Workspaces;

#[async_trait]
impl WorkspaceResolver for Workspaces {
    async fn is_member(&self, ctx: &AuthContext, workspace_id: &str) -> Result<bool, ResolveError> {
        match (ctx.effective_user(), workspace_id) {
            (_, "ws_boom") => Err(ResolveError::new("workspace table locked")),
            ("alice", "ws_alice" | "ws_team") | ("stu1", "ws_stu1") => Ok(true),
            _ => Ok(false),
        }
    }

    async fn default_workspace(&self, ctx: &AuthContext) -> Result<Option<String>, ResolveError> {
        Ok((ctx.effective_user() == "alice").then(|| "ws_alice".to_owned()))
    }
}

#[tokio::test]
async fn workspace_selection() {
    let f = Fixture::new();
    let (alice, _) = f.key(Principal::in_org("alice", "acme"), &[]).await;
    let (bob, _) = f.key(Principal::in_org("bob", "acme"), &[]).await;
    let (admin, _) = f
        .key(Principal::in_org("admin", "acme"), &["read", "sudo"])
        .await;
    let app = app(AuthLayer::builder(f.verifier.clone())
        .workspace_resolver(Workspaces)
        .subject_resolver(Directory::new())
        .build());
    let req = |token: &str, extra: &[(&str, &str)]| {
        let auth = bearer(token);
        let mut h = vec![("authorization", auth.as_str())];
        h.extend_from_slice(extra);
        get_with("/me", &h)
    };

    let res = send(app.clone(), req(&alice, &[("x-workspace-id", "ws_team")])).await;
    assert_eq!(res.json()["ctx"]["workspace"], "ws_team");
    let res = send(app.clone(), req(&alice, &[])).await;
    assert_eq!(
        res.json()["ctx"]["workspace"],
        "ws_alice",
        "the owner's default workspace"
    );
    let res = send(app.clone(), req(&bob, &[])).await;
    assert_eq!(
        (res.status, &res.json()["ctx"]["workspace"]),
        (StatusCode::OK, &Value::Null)
    );

    let res = send(app.clone(), req(&alice, &[("x-workspace-id", "ws_bob")])).await;
    assert_eq!(res.status, 403);
    assert_eq!(
        res.json(),
        json!({"error": "forbidden", "message": "Not a member of the requested workspace"})
    );

    // Membership is the subject's when impersonating.
    let res = send(
        app.clone(),
        req(
            &admin,
            &[("x-subject-user", "stu1"), ("x-workspace-id", "ws_stu1")],
        ),
    )
    .await;
    assert_eq!(res.json()["ctx"]["workspace"], "ws_stu1");

    let res = send(app.clone(), req(&alice, &[("x-workspace-id", "ws_boom")])).await;
    assert_eq!(res.status, 503);
    let res = send(
        app,
        req(
            &alice,
            &[("x-workspace-id", "ws_a"), ("x-workspace-id", "ws_b")],
        ),
    )
    .await;
    assert_eq!(res.status, 400);

    let no_resolver = crate::app(AuthLayer::new(f.verifier.clone()));
    let res = send(no_resolver, req(&alice, &[("x-workspace-id", "ws_team")])).await;
    assert_eq!(
        res.json()["ctx"]["workspace"],
        Value::Null,
        "an unchecked id never reaches the context"
    );
}

// ---------------------------------------------------------------- composition

#[tokio::test]
async fn composes_with_route_layer_and_service_builder() {
    let f = Fixture::new();
    let (token, _) = f.key(Principal::user("alice"), &[]).await;
    let app = Router::new()
        .route("/me", get(whoami))
        .route_layer(AuthLayer::new(f.verifier.clone()));
    assert_eq!(
        send(app.clone(), get_with("/nowhere", &[])).await.status,
        404,
        "route_layer runs for matches only"
    );
    assert_eq!(send(app.clone(), get_with("/me", &[])).await.status, 401);
    assert_eq!(
        send(app, get_with("/me", &[("authorization", &bearer(&token))]))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    use futures_util::task::noop_waker;
    let f = Fixture::new();
    let (token, _) = f.key(Principal::user("alice"), &[]).await;
    let (release, gate) = tokio::sync::watch::channel(false);
    // One request at a time; the handler waits for the test's signal.
    let mut svc = ServiceBuilder::new()
        .layer(AuthLayer::new(f.verifier.clone()))
        .concurrency_limit(1)
        .service_fn(move |_req: Request| {
            let mut gate = gate.clone();
            async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok::<_, Infallible>(Response::new(Body::from("done")))
            }
        });
    let req = || get_with("/", &[("authorization", &bearer(&token))]);

    // The service polled ready holds the permit; it must be the one called,
    // or ConcurrencyLimit would panic.
    let first = svc.ready().await.unwrap().call(req());
    let first = tokio::spawn(first);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut second = svc.clone();
    assert!(
        second.poll_ready(&mut cx).is_pending(),
        "the inner limit is reached"
    );
    release.send(true).unwrap();
    let res = first.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        second
            .ready()
            .await
            .unwrap()
            .call(req())
            .await
            .unwrap()
            .status(),
        200
    );
}

// ---------------------------------------------------------------- secrecy

#[tokio::test]
async fn no_log_line_body_or_debug_output_contains_the_token() {
    let (logs, _guard) = CapturedLogs::on_this_thread();

    let f = Fixture::new();
    let (token, id) = f.key(Principal::user("alice"), &["read"]).await;
    let (revoked, revoked_id) = f.key(Principal::user("alice"), &["read"]).await;
    f.issuer.revoke(revoked_id).await.unwrap();
    let debug_seen = Arc::new(Mutex::new(String::new()));
    let seen = debug_seen.clone();
    let layer = AuthLayer::builder(f.verifier.clone())
        .api_key_header(HeaderName::from_static("x-api-key"))
        .audit(f.audit.clone())
        .build();
    let with_headers =
        || TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(true));
    let app = Router::new()
        .route(
            "/me",
            get(move |req: Request| async move {
                // What a handler would log.
                seen.lock().unwrap().push_str(&format!(
                    "{req:?} {:?}",
                    req.extensions().get::<AuthContext>()
                ));
                tracing::info!(request = ?req, "handler saw");
                "ok"
            }),
        )
        .layer(with_headers()) // behind the AuthLayer: its service marked the headers
        .layer(layer.clone())
        .layer(with_headers())
        .layer(layer.sensitive_headers()); // outermost
    let ws = format!("Bearer, {token}");
    let requests = [
        vec![("authorization", bearer(&token))],
        vec![("x-api-key", token.clone())],
        vec![
            ("upgrade", "websocket".to_owned()),
            ("sec-websocket-protocol", ws),
        ],
        vec![("authorization", bearer(&revoked))],
        vec![("authorization", bearer(&format!("{token}x")))],
    ];
    let mut bodies = String::new();
    for headers in &requests {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = send(app.clone(), get_with("/me", &headers)).await;
        bodies.push_str(&format!(
            "{:?} {}",
            res.headers,
            String::from_utf8_lossy(&res.body)
        ));
    }

    // Query-parameter auth, traced with AuthMakeSpan (path only).
    let query_app = Router::new()
        .route("/me", get(whoami))
        .layer(
            AuthLayer::builder(f.verifier.clone())
                .query_param("api_key")
                .build(),
        )
        .layer(TraceLayer::new_for_http().make_span_with(AuthMakeSpan::new()));
    let res = send(query_app, get_with(&format!("/me?api_key={token}"), &[])).await;
    assert_eq!(res.status, 200);

    let logs = logs.text();
    let handler_debug = debug_seen.lock().unwrap().clone();
    let debug = format!(
        "{handler_debug} {layer:?} {:?} {:?}",
        f.events().await,
        f.verifier.verify(&revoked).await.unwrap_err()
    );
    // The capture worked and the span recorded who made the requests.
    // OpenTelemetry's names where one exists (`user.id`), ours otherwise.
    assert!(logs.contains(&format!("keygate.key.id={id}")), "{logs}");
    assert!(
        logs.contains("user.id=\"alice\"") || logs.contains("user.id=alice"),
        "{logs}"
    );
    assert!(logs.contains("\"authorization\": Sensitive"), "{logs}");
    assert!(logs.contains("path=/me"), "{logs}");
    assert!(
        debug.contains("Sensitive") && debug.contains("AuthContext"),
        "{debug}"
    );
    // The secret part of each token never appears anywhere.
    for secret in [&token[3..], &revoked[3..]] {
        assert!(!logs.contains(secret), "token in logs:\n{logs}");
        assert!(!debug.contains(secret), "token in Debug output:\n{debug}");
        assert!(!bodies.contains(secret), "token in a response:\n{bodies}");
    }
}
