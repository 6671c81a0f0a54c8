//! `AuthenticatedSocket` over a real socket on 127.0.0.1: sockets follow
//! their credential (revoked, disabled, expired, edited, JWT secret
//! regenerated) and the size limits close with 1009, counted.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use auth_axum::{connect_info_ip, AuthenticatedUpgrade, DEFAULT_MAX_MESSAGE_SIZE};
use auth_core::{
    jwt::{JwtAuthority, MasterKey, MemoryUserSecrets},
    store::KeyUpdate,
    KeyId, KeyIssuer, KeyStore, MemoryKeyStore, NewKey, Principal, ScopeSet, Verifier,
};
use auth_tower::AuthLayer;
use axum::{extract::ws::Message, response::Response, routing::get, Extension, Router};
use futures_util::{SinkExt, StreamExt};
use keygate_test_support::{eventually, fixtures};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, protocol::frame::coding::CloseCode},
    MaybeTlsStream, WebSocketStream,
};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Answers `scopes` with the socket's current scopes; echoes the rest.
async fn socket(ws: AuthenticatedUpgrade, Extension(verifier): Extension<Verifier>) -> Response {
    ws.on_upgrade(&verifier, |mut socket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(t) if t.as_str() == "scopes" => {
                    let scopes: Vec<_> = socket.context().scopes().iter().collect();
                    Message::Text(scopes.join(" ").into())
                }
                Message::Text(t) => Message::Text(t),
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                return;
            }
        }
    })
}

/// The same, with a 1 MiB message limit.
async fn big(ws: AuthenticatedUpgrade, verifier: Extension<Verifier>) -> Response {
    let ws = ws.configure(|u| u.max_message_size(1 << 20).max_frame_size(1 << 20));
    socket(ws, verifier).await
}

struct Fixture {
    store: Arc<MemoryKeyStore>,
    issuer: KeyIssuer,
    jwt: JwtAuthority,
    addr: SocketAddr,
}

impl Fixture {
    async fn start() -> Self {
        let store = Arc::new(MemoryKeyStore::new());
        let jwt = JwtAuthority::builder(
            Arc::new(MemoryUserSecrets::new()),
            MasterKey::from_bytes(&[5; 32]),
            "tests",
        )
        .scopes(ScopeSet::parse(["read"]).unwrap())
        .build();
        let verifier = Verifier::builder(store.clone())
            .hasher(fixtures::hasher())
            .jwt(jwt.clone())
            .build();
        let app = Router::new()
            .route("/ws", get(socket))
            .route("/big", get(big))
            .layer(Extension(verifier.clone()))
            .layer(
                AuthLayer::builder(verifier)
                    .client_ip(connect_info_ip)
                    .build(),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        Self {
            issuer: fixtures::issuer(store.clone()),
            store,
            jwt,
            addr,
        }
    }

    async fn key(&self, scopes: &[&str]) -> (KeyId, String) {
        let key = self
            .issuer
            .issue(NewKey::new(
                Principal::user("alice"),
                "socket",
                ScopeSet::parse(scopes).unwrap(),
            ))
            .await
            .unwrap();
        (key.record.id, key.token.expose_secret().to_owned())
    }

    async fn connect(&self, path: &str, token: &str) -> Client {
        let mut req = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("Bearer, {token}").parse().unwrap(),
        );
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(8 << 20))
            .max_frame_size(Some(8 << 20));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
            .await
            .unwrap();
        ws
    }

    async fn update(&self, id: KeyId, update: KeyUpdate) {
        self.store.update(id, &update).await.unwrap();
    }
}

async fn ask(ws: &mut Client, text: &str) -> String {
    ws.send(tungstenite::Message::text(text)).await.unwrap();
    match next(ws).await {
        tungstenite::Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn next(ws: &mut Client) -> tungstenite::Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("nothing came")
        .expect("the stream ended without a close frame")
        .unwrap()
}

/// Waits for the server's close frame and returns its code.
async fn closed(ws: &mut Client) -> CloseCode {
    loop {
        match next(ws).await {
            tungstenite::Message::Close(Some(frame)) => return frame.code,
            tungstenite::Message::Close(None) => panic!("closed without a code"),
            _ => continue,
        }
    }
}

fn metrics() -> &'static PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

fn closes(cause: &str) -> u64 {
    let rendered = metrics().render();
    let prefix = format!("keygate_websocket_closed_total{{cause=\"{cause}\"}} ");
    rendered
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn revocation_closes_every_socket_of_that_key_with_1008() {
    metrics();
    let f = Fixture::start().await;
    let (id, token) = f.key(&["read"]).await;
    let (_, other) = f.key(&["read"]).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = f.connect("/ws", &token).await;
        assert_eq!(ask(&mut ws, "hi").await, "hi");
        sockets.push(ws);
    }
    let mut bystander = f.connect("/ws", &other).await;
    let before = closes("credential_ended");
    f.issuer.revoke(id).await.unwrap();
    for ws in &mut sockets {
        assert_eq!(closed(ws).await, CloseCode::Policy);
    }
    assert_eq!(ask(&mut bystander, "still here").await, "still here");
    assert!(closes("credential_ended") >= before + 3);
}

#[tokio::test]
async fn disabling_and_expiry_close_sockets_with_1008() {
    let f = Fixture::start().await;
    let (id, token) = f.key(&["read"]).await;
    let mut ws = f.connect("/ws", &token).await;
    assert_eq!(ask(&mut ws, "hi").await, "hi");
    let now = time::OffsetDateTime::now_utc();
    f.update(id, KeyUpdate::default().disabled_at(Some(now)))
        .await;
    assert_eq!(closed(&mut ws).await, CloseCode::Policy);

    let (id, token) = f.key(&["read"]).await;
    let mut ws = f.connect("/ws", &token).await;
    assert_eq!(ask(&mut ws, "hi").await, "hi");
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    f.update(id, KeyUpdate::default().expires_at(Some(soon)))
        .await;
    assert_eq!(closed(&mut ws).await, CloseCode::Policy);
}

#[tokio::test]
async fn an_edit_narrows_an_open_sockets_scopes() {
    let f = Fixture::start().await;
    let (id, token) = f.key(&["read", "write"]).await;
    let mut ws = f.connect("/ws", &token).await;
    assert_eq!(ask(&mut ws, "scopes").await, "read write");
    f.update(
        id,
        KeyUpdate::default().scopes(ScopeSet::parse(["read"]).unwrap()),
    )
    .await;
    let ws = Arc::new(tokio::sync::Mutex::new(ws));
    eventually("the narrowing to reach the open socket", || {
        let ws = ws.clone();
        async move { ask(&mut *ws.lock().await, "scopes").await == "read" }
    })
    .await;
}

#[tokio::test]
async fn an_allowlist_edit_that_leaves_the_client_out_closes_its_socket() {
    let f = Fixture::start().await;
    let (kept, kept_token) = f.key(&["read"]).await;
    let (dropped, dropped_token) = f.key(&["read"]).await;
    let mut stays = f.connect("/ws", &kept_token).await;
    let mut goes = f.connect("/ws", &dropped_token).await;
    let loopback = vec!["127.0.0.0/8".parse().unwrap()];
    let elsewhere = vec!["203.0.113.0/24".parse().unwrap()];
    f.update(kept, KeyUpdate::default().ip_allowlist(loopback))
        .await;
    f.update(dropped, KeyUpdate::default().ip_allowlist(elsewhere))
        .await;
    assert_eq!(closed(&mut goes).await, CloseCode::Policy);
    assert_eq!(ask(&mut stays, "hi").await, "hi");
}

#[tokio::test]
async fn a_regenerated_user_secret_closes_jwt_sockets() {
    let f = Fixture::start().await;
    let token = f.jwt.token_for("u1").await.unwrap();
    let mut ws = f.connect("/ws", &token).await;
    assert_eq!(ask(&mut ws, "scopes").await, "read");
    let fresh = f.jwt.regenerate("u1").await.unwrap();
    assert_eq!(closed(&mut ws).await, CloseCode::Policy);
    let mut ws = f.connect("/ws", &fresh).await;
    assert_eq!(ask(&mut ws, "hi").await, "hi");
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009_and_is_counted() {
    metrics();
    let f = Fixture::start().await;
    let (_, token) = f.key(&["read"]).await;
    let mut ws = f.connect("/ws", &token).await;
    let largest = "a".repeat(DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(ask(&mut ws, &largest).await.len(), DEFAULT_MAX_MESSAGE_SIZE);
    let before = closes("message_too_big");
    let too_big = "a".repeat(DEFAULT_MAX_MESSAGE_SIZE + 1);
    ws.send(tungstenite::Message::text(too_big.clone()))
        .await
        .unwrap();
    assert_eq!(closed(&mut ws).await, CloseCode::Size);
    assert_eq!(closes("message_too_big"), before + 1);

    // `configure` raises the limit for one route.
    let mut ws = f.connect("/big", &token).await;
    assert_eq!(ask(&mut ws, &too_big).await.len(), too_big.len());
}
