//! Idle authenticated WebSockets at scale: server memory per connection,
//! and how fast every connection is closed when its credential ends.
//!
//! For each scenario a fresh server process (this binary with `serve`:
//! SQLite store, `AuthLayer`, `AuthenticatedUpgrade` echo route, 2 tokio
//! workers) is started; the driver opens N connections with one credential,
//! from many loopback addresses (127.0.x.y), each answered once so that the
//! server holds it idle; reads the server's RSS before and after; then ends
//! the credential through the server's control listener and times, for
//! every connection, the close frame (code 1008) after that moment.
//!
//! Scenarios: `revoke`, `disable`, `expire` (the key's expiry set 1 s
//! ahead; timed from the expiry), `regenerate` (a JWT's user secret), and
//! `axum-defaults` (revoke, with axum's own limits instead of ours: the
//! peer of the memory figure, in the same run).
//!
//! `benches/websockets.sh` raises the file limit and runs it:
//! `cargo bench --bench websockets -- connections=10000 scenarios=revoke,disable`

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use auth_axum::AuthenticatedUpgrade;
use auth_core::{
    jwt::{JwtAuthority, MasterKey},
    store::KeyUpdate,
    store::SqliteKeyStore,
    KeyIssuer, KeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix, Verifier,
};
use auth_tower::AuthLayer;
use axum::{
    extract::ws::Message, response::Response, routing::get, routing::post, Extension, Router,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpSocket, sync::Semaphore};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig};

fn args() -> HashMap<String, String> {
    std::env::args()
        .skip(1)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn main() {
    let args = args();
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve(args));
        return;
    }
    // `cargo bench` passes `--bench`; anything without `=` is ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(drive(args));
}

// ------------------------------------------------------------------ server

async fn echo(ws: AuthenticatedUpgrade, Extension(v): Extension<(Verifier, bool)>) -> Response {
    let (verifier, axum_defaults) = v;
    let ws = if axum_defaults {
        // axum's (tungstenite's) own defaults, for comparison.
        ws.configure(|u| {
            u.read_buffer_size(128 * 1024)
                .write_buffer_size(128 * 1024)
                .max_message_size(64 << 20)
                .max_frame_size(16 << 20)
        })
    } else {
        ws
    };
    ws.on_upgrade(&verifier, |mut socket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Text(t) = msg {
                if socket.send(Message::Text(t)).await.is_err() {
                    return;
                }
            }
        }
    })
}

async fn serve(args: HashMap<String, String>) {
    let scenario = args["scenario"].clone();
    let store = Arc::new(SqliteKeyStore::open(&args["db"]).await.unwrap());
    let jwt = JwtAuthority::new(store.clone(), MasterKey::generate(), "bench");
    let prefix = TokenPrefix::new("wb_").unwrap();
    let hasher = SecretHasher::default();
    let issuer = KeyIssuer::new(store.clone(), hasher.clone(), prefix.clone());
    let verifier = Verifier::builder(store.clone())
        .hasher(hasher)
        .prefix(prefix)
        .jwt(jwt.clone())
        .build();
    let key = issuer
        .issue(NewKey::new(
            Principal::user("bench"),
            "sockets",
            ScopeSet::parse(["read"]).unwrap(),
        ))
        .await
        .unwrap();
    let token = if scenario == "regenerate" {
        jwt.token_for("bench").await.unwrap()
    } else {
        key.token.expose_secret().to_owned()
    };
    let id = key.record.id;
    let axum_defaults = scenario == "axum-defaults";
    let app = Router::new()
        .route("/ws", get(echo))
        .layer(Extension((verifier.clone(), axum_defaults)))
        .layer(AuthLayer::new(verifier));
    // The control listener: ends the credential, answers when it ends
    // (Unix nanoseconds).
    let control = Router::new().route(
        "/end",
        post(move || {
            let (store, issuer, jwt, scenario) =
                (store.clone(), issuer.clone(), jwt.clone(), scenario.clone());
            async move {
                let now = time::OffsetDateTime::now_utc();
                let at = match scenario.as_str() {
                    "revoke" | "axum-defaults" => {
                        issuer.revoke(id).await.unwrap();
                        now
                    }
                    "disable" => {
                        let update = KeyUpdate::default().disabled_at(Some(now));
                        store.update(id, &update).await.unwrap();
                        now
                    }
                    "expire" => {
                        let at = now + time::Duration::seconds(1);
                        let update = KeyUpdate::default().expires_at(Some(at));
                        store.update(id, &update).await.unwrap();
                        at
                    }
                    "regenerate" => {
                        jwt.regenerate("bench").await.unwrap();
                        now
                    }
                    other => panic!("unknown scenario {other}"),
                };
                at.unix_timestamp_nanos().to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!(
        "{}",
        serde_json::json!({
            "token": token,
            "ws": listener.local_addr().unwrap().to_string(),
            "control": control_listener.local_addr().unwrap().to_string(),
        })
    );
    tokio::spawn(async move { axum::serve(control_listener, control).await });
    axum::serve(listener, app).await.unwrap();
}

// ------------------------------------------------------------------ driver

struct Server {
    child: Child,
    token: String,
    ws: SocketAddr,
    control: SocketAddr,
}

impl Server {
    fn start(scenario: &str, dir: &std::path::Path) -> Self {
        let db = dir.join(format!("{scenario}.db"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "serve".to_owned(),
                format!("scenario={scenario}"),
                format!("db={}", db.display()),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Self {
            child,
            token: v["token"].as_str().unwrap().to_owned(),
            ws: v["ws"].as_str().unwrap().parse().unwrap(),
            control: v["control"].as_str().unwrap().parse().unwrap(),
        }
    }

    /// Resident memory in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kb * 1024
    }

    /// Ends the credential; the moment it ends, as the server says.
    async fn end(&self) -> SystemTime {
        let mut stream = tokio::net::TcpStream::connect(self.control).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "POST /end HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            self.control
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut res = String::new();
        stream.read_to_string(&mut res).await.unwrap();
        let nanos: u64 = res
            .rsplit("\r\n\r\n")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `i`th client address: 127.0.1.1 onwards, `per_address` connections each.
fn source(i: usize, per_address: usize) -> Ipv4Addr {
    let n = i / per_address;
    Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8)
}

type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Where and with what the clients connect.
#[derive(Clone)]
struct Target {
    ws: SocketAddr,
    token: Arc<str>,
}

impl Target {
    async fn open(&self, from: Ipv4Addr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let stream = socket.connect(self.ws).await.unwrap();
        let mut req = format!("ws://{}/ws", self.ws)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("Bearer, {}", self.token).parse().unwrap(),
        );
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
            .await
            .unwrap();
        // Answered once: the server has set the connection up and is idle.
        ws.send(tungstenite::Message::text("hi")).await.unwrap();
        match ws.next().await {
            Some(Ok(tungstenite::Message::Text(_))) => ws,
            other => panic!("no echo: {other:?}"),
        }
    }
}

struct Run {
    scenario: String,
    connections: usize,
    rss_before: u64,
    rss_after: u64,
    /// Milliseconds from the credential's end to each close frame.
    closes_ms: Vec<f64>,
    policy_closes: usize,
}

async fn run(scenario: &str, connections: usize, per_address: usize, dir: &std::path::Path) -> Run {
    let server = Server::start(scenario, dir);
    let target = Target {
        ws: server.ws,
        token: server.token.as_str().into(),
    };
    // Warm up: the key verified and cached, the runtime's lazy parts made.
    drop(target.open(source(0, per_address)).await);
    let rss_before = server.rss();
    let permits = Arc::new(Semaphore::new(128));
    let opening: Vec<_> = (0..connections)
        .map(|i| {
            let (permits, target) = (permits.clone(), target.clone());
            let from = source(i, per_address);
            async move {
                let _p = permits.acquire().await.unwrap();
                target.open(from).await
            }
        })
        .collect();
    let clients = futures_util::future::join_all(opening).await;
    let rss_after = server.rss();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for mut ws in clients {
        let tx = tx.clone();
        tokio::spawn(async move {
            let code = loop {
                match ws.next().await {
                    Some(Ok(tungstenite::Message::Close(frame))) => {
                        break frame.map(|f| u16::from(f.code))
                    }
                    Some(Ok(_)) => continue,
                    _ => break None,
                }
            };
            let _ = tx.send((SystemTime::now(), code));
        });
    }
    drop(tx);
    let sent = SystemTime::now();
    let ended = server.end().await;
    // Revocation and the rest: from the request; expiry: from the expiry.
    let from = if scenario == "expire" { ended } else { sent };
    let mut closes_ms = Vec::with_capacity(connections);
    let mut policy_closes = 0;
    while let Ok(Some((at, code))) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await
    {
        let ms = at
            .duration_since(from)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        closes_ms.push(ms);
        if code == Some(1008) {
            policy_closes += 1;
        }
    }
    closes_ms.sort_by(f64::total_cmp);
    Run {
        scenario: scenario.to_owned(),
        connections,
        rss_before,
        rss_after,
        closes_ms,
        policy_closes,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn drive(args: HashMap<String, String>) {
    let connections: usize = args
        .get("connections")
        .map_or(10_000, |n| n.parse().unwrap());
    let per_address: usize = args.get("per_address").map_or(100, |n| n.parse().unwrap());
    let scenarios = args
        .get("scenarios")
        .map_or("revoke,disable,expire,regenerate,axum-defaults", |s| {
            s.as_str()
        })
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "| scenario | connections | server RSS before | after | per idle connection | closed with 1008 | close p50 | p99 | max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for scenario in scenarios.split(',') {
        let r = run(scenario, connections, per_address, dir.path()).await;
        let per = (r.rss_after as f64 - r.rss_before as f64) / r.connections as f64;
        println!(
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} KB | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            r.scenario,
            r.connections,
            r.rss_before as f64 / 1048576.0,
            r.rss_after as f64 / 1048576.0,
            per / 1000.0,
            r.policy_closes,
            percentile(&r.closes_ms, 0.5),
            percentile(&r.closes_ms, 0.99),
            r.closes_ms.last().copied().unwrap_or(f64::NAN),
        );
    }
}
