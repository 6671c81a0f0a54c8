//! The limiter behind axum: plain HTTP requests in process (`oneshot`, from
//! 127.0.0.1 as a socket would give), WebSocket connects and messages over a
//! real socket on 127.0.0.1:0 with tokio-tungstenite.
//! Time is a `FakeClock`: nothing sleeps, nothing depends on speed.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use auth_core::{response::ErrorFormat, AuthContext, KeyId, Principal, ScopeSet};
use auth_ratelimit::{
    FakeClock, HeaderStyle, KeyBy, MessageLimiter, Quota, RateLimiter, RateLimiterBuilder, Rule,
    TrustedProxies,
};
use axum::{
    body::Body,
    extract::{ws::WebSocketUpgrade, ConnectInfo, Request},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
    Router,
};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite;
use tower::ServiceExt;

/// Stands in for the auth layer: `x-user` names the user, `x-scopes` the
/// key's scopes (space-separated), `x-key` its id.
async fn fake_auth(mut req: Request, next: Next) -> Response {
    let ctx = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        header("x-user").map(|user| {
            let scopes = header("x-scopes").unwrap_or_default();
            let scopes = ScopeSet::parse(scopes.split_whitespace()).unwrap();
            let key = KeyId::from_u64(header("x-key").and_then(|k| k.parse().ok()).unwrap_or(1));
            AuthContext::for_key(key, "test", Principal::user(user), scopes)
        })
    };
    if let Some(ctx) = ctx {
        req.extensions_mut().insert(ctx);
    }
    next.run(req).await
}

struct App {
    router: Router,
    hits: Arc<AtomicUsize>,
}

/// The peer address of in-process requests: what a local socket would give.
const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 50_000);

impl App {
    async fn start(limiter: RateLimiter, extra: Router) -> App {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let handler = move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        };
        let router = Router::new()
            .route("/items", get(handler.clone()))
            .route("/graph", get(handler.clone()))
            .route("/login", post(handler))
            .merge(extra)
            .layer(limiter.layer())
            .layer(middleware::from_fn(fake_auth));
        App { router, hits }
    }

    /// Serves the same app (same limiter) on 127.0.0.1:0, for WebSocket
    /// clients; its `ws://` base.
    async fn serve(&self) -> String {
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
        format!("ws://{addr}")
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(PEER)));
        self.router.clone().oneshot(req).await.unwrap()
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers).await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("POST", path, headers).await
    }
}

fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn json(res: Response) -> Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn builder(clock: &FakeClock) -> RateLimiterBuilder {
    RateLimiter::builder().clock(clock.clone())
}

const ALICE: &[(&str, &str)] = &[("x-user", "alice")];

#[tokio::test]
async fn over_the_limit_gets_429_in_the_auth_format_with_headers() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(Rule::per_user("default", Quota::per_minute(3)))
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    for (remaining, reset) in [("2", "20"), ("1", "40"), ("0", "60")] {
        let res = app.get("/items", ALICE).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&res, "ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        assert_eq!(header(&res, "ratelimit-reset").as_deref(), Some(reset));
        assert_eq!(header(&res, "retry-after"), None);
    }
    clock.advance(Duration::from_millis(500));
    let res = app.get("/items", ALICE).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // 19.5 s rounds up to 20: never 0, never early.
    assert_eq!(header(&res, "retry-after").as_deref(), Some("20"));
    assert_eq!(header(&res, "ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(header(&res, "ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header(&res, "ratelimit-reset").as_deref(), Some("60"));
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("application/json")
    );
    let body = json(res).await;
    assert_eq!(
        body,
        serde_json::json!({"error": "rate_limited", "message": "Rate limit exceeded"})
    );
    assert_eq!(
        app.hits.load(Ordering::SeqCst),
        3,
        "the handler never saw the refused request"
    );

    // Another user has their own bucket; after the wait, alice passes again.
    assert_eq!(
        app.get("/items", &[("x-user", "bob")]).await.status(),
        StatusCode::OK
    );
    clock.advance(Duration::from_millis(19_500));
    assert_eq!(app.get("/items", ALICE).await.status(), StatusCode::OK);
    assert_eq!(
        app.get("/items", ALICE).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn envelope_format_and_draft_structured_fields() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(Rule::per_user("default", Quota::per_hour(200)))
        .rule(Rule::per_user("graph", Quota::per_minute(2)).path("/graph"))
        .headers(HeaderStyle::Both)
        .error_format(ErrorFormat::Envelope)
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    let res = app.get("/graph", ALICE).await;
    assert_eq!(
        header(&res, "ratelimit-policy").as_deref(),
        Some(r#""default";q=200;w=3600, "graph";q=2;w=60"#)
    );
    assert_eq!(
        header(&res, "ratelimit").as_deref(),
        Some(r#""default";r=199;t=18, "graph";r=1;t=30"#)
    );
    // The legacy trio reports the most restrictive rule.
    assert_eq!(header(&res, "ratelimit-limit").as_deref(), Some("2"));
    let res = app.get("/items", ALICE).await;
    assert_eq!(
        header(&res, "ratelimit").as_deref(),
        Some(r#""default";r=198;t=36"#)
    );
    app.get("/graph", ALICE).await;
    let res = app.get("/graph", ALICE).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after").as_deref(), Some("30"));
    // The refused request took nothing from the default bucket.
    assert_eq!(
        header(&res, "ratelimit").as_deref(),
        Some(r#""default";r=197;t=54, "graph";r=0;t=60"#)
    );
    let body = json(res).await;
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn hidden_headers_disclose_nothing_but_retry_after() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(Rule::per_user("default", Quota::per_minute(1)))
        .headers(HeaderStyle::Hidden)
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    let res = app.get("/items", ALICE).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("ratelimit")));
    let res = app.get("/items", ALICE).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("ratelimit")));
    assert_eq!(header(&res, "retry-after").as_deref(), Some("60"));
}

#[tokio::test]
async fn per_route_override_and_weighted_route() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        // The default does not cover /login: the login rule overrides it.
        .rule(Rule::per_user("default", Quota::per_hour(100)).except_path("/login"))
        .rule(
            Rule::per_ip("login", Quota::per_minute(2))
                .method(http::Method::POST)
                .path("/login"),
        )
        // /graph costs 10 tokens of a bucket of its own, on top of the default.
        .rule(
            Rule::per_user("graph", Quota::per_hour(100))
                .path("/graph")
                .cost(10),
        )
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    for remaining in ["1", "0"] {
        let res = app.post("/login", ALICE).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            header(&res, "ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let res = app.post("/login", &[("x-user", "someone-else")]).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "login is per IP, whoever logs in"
    );
    assert_eq!(header(&res, "retry-after").as_deref(), Some("30"));
    // Other routes are untouched by the login limit.
    let res = app.get("/items", ALICE).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "ratelimit-remaining").as_deref(), Some("99"));
    // ...and layered on the default: the graph bucket loses 10 per call.
    let res = app.get("/graph", ALICE).await;
    assert_eq!(header(&res, "ratelimit-remaining").as_deref(), Some("90"));
    for _ in 0..9 {
        assert_eq!(app.get("/graph", ALICE).await.status(), StatusCode::OK);
    }
    let res = app.get("/graph", ALICE).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&res, "retry-after").as_deref(),
        Some("360"),
        "10 tokens × 36 s"
    );
    assert_eq!(app.get("/items", ALICE).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn per_user_and_per_ip_at_once() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(Rule::per_user("user", Quota::per_minute(5)))
        .rule(Rule::per_ip("ip", Quota::per_minute(3)))
        .headers(HeaderStyle::Draft)
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    for user in ["a", "b", "c"] {
        assert_eq!(
            app.get("/items", &[("x-user", user)]).await.status(),
            StatusCode::OK
        );
    }
    // The IP is spent, so "a" is refused although its own bucket has room,
    // and that refusal does not cost "a" a token.
    let res = app.get("/items", &[("x-user", "a")]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&res, "ratelimit").as_deref(),
        Some(r#""user";r=4;t=12, "ip";r=0;t=60"#)
    );
    // Unauthenticated requests skip the per-user rule but not the per-IP one.
    assert_eq!(
        app.get("/items", &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn quota_from_the_key_tier() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(
            Rule::per_key("tier", Quota::per_minute(2))
                .quota_by(|ctx| ctx.scopes().has("tier:gold").then(|| Quota::per_minute(5))),
        )
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    let gold = &[
        ("x-user", "g"),
        ("x-key", "7"),
        ("x-scopes", "read tier:gold"),
    ];
    let free = &[("x-user", "f"), ("x-key", "8"), ("x-scopes", "read")];
    for _ in 0..5 {
        let res = app.get("/items", gold).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "ratelimit-limit").as_deref(), Some("5"));
    }
    assert_eq!(
        app.get("/items", gold).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..2 {
        assert_eq!(app.get("/items", free).await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.get("/items", free).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn per_ip_ignores_forwarded_headers_without_trusted_proxies() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(Rule::per_ip("ip", Quota::per_minute(2)))
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    // Each request claims another address; all come from 127.0.0.1.
    for (i, xff) in ["1.1.1.1", "2.2.2.2", "3.3.3.3"].iter().enumerate() {
        let res = app.get("/items", &[("x-forwarded-for", xff)]).await;
        let want = if i < 2 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(res.status(), want, "request {i}");
    }
}

#[tokio::test]
async fn per_ip_behind_trusted_proxies_uses_the_rightmost_untrusted_hop() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(Rule::per_ip("ip", Quota::per_minute(2)))
        .trusted_proxies(TrustedProxies::new(["127.0.0.0/8", "10.0.0.0/8"]).unwrap())
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    // Client 203.0.113.1 behind proxy 10.0.0.2; the leftmost hop is made up
    // by the client, so changing it must not give a fresh bucket.
    for (i, xff) in [
        "9.9.9.1, 203.0.113.1, 10.0.0.2",
        "9.9.9.2, 203.0.113.1, 10.0.0.2",
        "9.9.9.3, 203.0.113.1, 10.0.0.2",
    ]
    .iter()
    .enumerate()
    {
        let res = app.get("/items", &[("x-forwarded-for", xff)]).await;
        let want = if i < 2 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(res.status(), want, "request {i}");
    }
    // Another client behind the same proxies has its own bucket.
    let res = app
        .get("/items", &[("x-forwarded-for", "203.0.113.2, 10.0.0.2")])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Garbage in the header is not a fresh key either: it falls back to the
    // proxy that wrote it (10.0.0.2), which then gets its own bucket of 2.
    for want in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let res = app
            .get("/items", &[("x-forwarded-for", "not-an-ip, 10.0.0.2")])
            .await;
        assert_eq!(res.status(), want);
    }
}

#[tokio::test]
async fn custom_key_function() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(
            Rule::new("tenant", Quota::per_minute(1)).by(KeyBy::custom(|req| {
                req.headers()
                    .get("x-tenant")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })),
        )
        .build()
        .unwrap();
    let app = App::start(limiter, Router::new()).await;
    assert_eq!(
        app.get("/items", &[("x-tenant", "a")]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/items", &[("x-tenant", "a")]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.get("/items", &[("x-tenant", "b")]).await.status(),
        StatusCode::OK
    );
    // No tenant: the rule does not apply.
    for _ in 0..3 {
        assert_eq!(app.get("/items", &[]).await.status(), StatusCode::OK);
    }
}

fn ws_router(clock: FakeClock) -> Router {
    Router::new().route(
        "/ws",
        get(move |ws: WebSocketUpgrade| {
            let clock = clock.clone();
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    let mut limiter = MessageLimiter::new(Quota::per_second(1)).clock(clock);
                    while let Some(Ok(msg)) = socket.recv().await {
                        let reply = match limiter.check() {
                            Ok(_) => msg,
                            Err(limited) => limited.message(),
                        };
                        if socket.send(reply).await.is_err() {
                            break;
                        }
                    }
                })
            }
        }),
    )
}

#[tokio::test]
async fn websocket_connects_are_limited_per_ip() {
    let clock = FakeClock::new();
    let limiter = builder(&clock)
        .rule(Rule::websocket_connects("ws-connect", Quota::per_minute(2)))
        .build()
        .unwrap();
    let app = App::start(limiter, ws_router(clock.clone())).await;
    let url = app.serve().await + "/ws";
    let mut open = Vec::new();
    for _ in 0..2 {
        let (socket, res) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(res.status(), 101);
        assert_eq!(res.headers()["ratelimit-limit"], "2");
        open.push(socket);
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
            assert_eq!(res.headers()["retry-after"], "30");
            assert_eq!(res.headers()["content-type"], "application/json");
            assert_eq!(res.headers()["ratelimit-remaining"], "0");
        }
        other => panic!(
            "expected a 429 handshake, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // Plain HTTP requests from the same IP are not WebSocket connects.
    assert_eq!(app.get("/items", &[]).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(30));
    assert!(tokio_tungstenite::connect_async(&url).await.is_ok());
}

#[tokio::test]
async fn websocket_messages_over_the_limit_get_a_rate_limited_event() {
    let clock = FakeClock::new();
    let limiter = builder(&clock).build().unwrap();
    let app = App::start(limiter, ws_router(clock.clone())).await;
    let url = app.serve().await + "/ws";
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(roundtrip(&mut socket, "one").await, "one");
    let event: Value = serde_json::from_str(&roundtrip(&mut socket, "two").await).unwrap();
    assert_eq!(
        event,
        serde_json::json!({"event": "rate_limited", "retry_after_ms": 1000})
    );
    clock.advance(Duration::from_millis(400));
    let event: Value = serde_json::from_str(&roundtrip(&mut socket, "three").await).unwrap();
    assert_eq!(event["retry_after_ms"], 600);
    // The socket stayed open; after the wait, messages pass again.
    clock.advance(Duration::from_millis(600));
    assert_eq!(roundtrip(&mut socket, "four").await, "four");
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn roundtrip(socket: &mut Client, text: &str) -> String {
    socket.send(tungstenite::Message::text(text)).await.unwrap();
    match socket.next().await.unwrap().unwrap() {
        tungstenite::Message::Text(t) => t.as_str().to_owned(),
        other => panic!("unexpected frame {other:?}"),
    }
}
