//! Operating the examples: `/health/live`, `/health/ready` and `/metrics` on
//! every example; readiness following a real PostgreSQL behind a TCP relay
//! that the test cuts and restores; log output without colours off a terminal.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "redis",
    feature = "jwt"
))]

use keygate_demo::support;

use keygate_demo::server;

use keygate_demo::pod;

use keygate_demo::portal;

use keygate_demo::tools;

use crate::client;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use auth_core::{
    audit::AuditLog, audit::AuditQuery, jwt::MasterKey, store::AuditBatching,
    store::PostgresKeyStore, store::PostgresOptions, SecretHasher,
};
use client::Api;
use keygate_test_support::{eventually, logs::CapturedLogs, services::database_url};
use support::{serve::spawn, Backend};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

fn memory() -> Backend {
    Backend::memory(SecretHasher::for_tests())
}

async fn expect_probes(api: &Api, name: &str) {
    let live = api.get("/health/live").send().await;
    live.expect(200);
    assert_eq!(live.json["status"], "live", "{name}");
    let ready = api.get("/health/ready").send().await;
    ready.expect(200);
    assert_eq!(ready.json["status"], "ready", "{name}: {}", ready.text);
    assert_eq!(ready.json["failing"], serde_json::json!([]), "{name}");
    assert_eq!(ready.json["checks"]["key_store"], "ok", "{name}");
    assert_eq!(ready.json["checks"]["change_feed"], "in_sync", "{name}");
    // Metrics are not on the public listener.
    let public = api.get("/metrics").send().await;
    assert!(
        public.status != 200 && !public.text.contains("keygate_"),
        "{name}: {}",
        public.text
    );
    let metrics = metrics_api().await.get("/metrics").send().await;
    metrics.expect(200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{name}"
    );
}

/// The metrics listener (`--metrics-addr`).
async fn metrics_api() -> Api {
    Api::at(spawn(support::ops::metrics_router()).await)
}

#[tokio::test]
async fn every_example_answers_health_probes_and_metrics() {
    let backend = memory();
    let server = server::Server::new(&backend, &server::Options::default()).unwrap();
    let server_api = Api::at(spawn(server.router()).await);
    expect_probes(&server_api, "server").await;

    let pod = pod::Pod::new(&memory(), &pod::Options::default()).unwrap();
    expect_probes(&Api::at(spawn(pod.router()).await), "pod").await;

    let portal = portal::Portal::new(&memory(), &portal::Options::default()).unwrap();
    expect_probes(&Api::at(spawn(portal.router()).await), "portal").await;

    let opened = tools::store::open("memory:", SecretHasher::for_tests())
        .await
        .unwrap();
    let tools = tools::Tools::new(
        &opened.backend,
        opened.secrets,
        MasterKey::generate(),
        &tools::Options::default(),
    )
    .unwrap();
    expect_probes(&Api::at(spawn(tools.router()).await), "tools").await;

    // The probes need no credential, and are not rate limited.
    for _ in 0..3 {
        server_api.get("/health/ready").send().await.expect(200);
    }
}

#[tokio::test]
async fn metrics_count_outcomes_without_ids() {
    let backend = memory();
    let app = server::Server::new(&backend, &server::Options::default()).unwrap();
    let api = Api::at(spawn(app.router()).await);
    let key = support::commands::issue(&backend, &server::RULES, "alice", &[], "metrics")
        .await
        .unwrap();
    let token = key.token.expose_secret().to_owned();
    for _ in 0..3 {
        api.get("/api/me").token(&token).send().await.expect(200);
    }
    // Same shape, another key id: unknown; and a mangled checksum.
    let (_, stranger) = auth_core::token::mint_token(&auth_core::TokenPrefix::new("st_").unwrap());
    api.get("/api/me")
        .token(stranger.expose_secret())
        .send()
        .await
        .expect(401);
    api.get("/api/me").token("st_nope").send().await.expect(401);
    // Past the failed-authentication burst, the address gets 429.
    let mut limited = false;
    for _ in 0..support::limits::FAILED_AUTH.burst() + 2 {
        if api.get("/api/me").token("st_nope").send().await.status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the failed-authentication limiter answered 429");

    let text = metrics_api().await.get("/metrics").send().await.text;
    let has = |needle: &str| {
        assert!(
            text.lines()
                .any(|l| l.starts_with(needle) || l.contains(needle)),
            "no {needle} in\n{text}"
        );
    };
    has(r#"keygate_auth_requests_total{outcome="success",reason="none"}"#);
    has(r#"keygate_auth_requests_total{outcome="refused",reason="unknown_key"}"#);
    has(r#"keygate_auth_requests_total{outcome="refused",reason="malformed"}"#);
    has(r#"keygate_verifier_cache_total{result="hit"}"#);
    has(r#"keygate_verifier_cache_total{result="miss"}"#);
    has(r#"keygate_argon2_runs_total{operation="verify"}"#);
    has(r#"keygate_argon2_duration_seconds_bucket{operation="verify""#);
    has("keygate_store_read_duration_seconds_bucket");
    has(r#"keygate_ratelimit_decisions_total{rule="#);
    has("keygate_failed_auth_refusals_total");
    // Low cardinality: no key id, user id or token anywhere.
    assert!(!text.contains(&key.record.id.to_string()));
    assert!(!text.contains("alice"));
    assert!(!text.contains(&token[3..20]));
}

/// A TCP relay to `target` that the test can cut (every open connection is
/// dropped and new ones are closed at once) and restore.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            open,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// `postgres://user@host:port/db?x` → (`host:port`, URL through `relay`).
fn through(url: &str, relay: SocketAddr) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (format!("{u}@"), r),
        None => (String::new(), rest),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    (host, format!("{scheme}://{userinfo}{relay}{tail}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_postgres_behind_a_relay_that_is_cut_and_restored() {
    let Some(url) = database_url("ready_follows_postgres_behind_a_relay_that_is_cut_and_restored")
    else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("keygate_ops_{}_{nanos}", std::process::id());
    let (upstream, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    let relay = Relay::start(upstream).await;
    let (_, relayed_url) = through(&url, relay.addr);
    let options = PostgresOptions::new()
        .schema(schema.clone())
        .acquire_timeout(std::time::Duration::from_millis(500))
        .heartbeat(std::time::Duration::from_millis(100));
    let store = Arc::new(
        PostgresKeyStore::connect_with(&relayed_url, &options)
            .await
            .expect("DATABASE_URL is set but PostgreSQL is unreachable"),
    );
    let backend = Backend {
        keys: store.clone(),
        audit: Arc::new(store.audit_log()),
        hasher: SecretHasher::for_tests(),
        location: "postgres via relay".into(),
    };
    let app = pod::Pod::new(&backend, &pod::Options::default()).unwrap();
    let api = Api::at(spawn(app.router()).await);
    eventually("ready while PostgreSQL answers", || async {
        api.get("/health/ready").send().await.status == 200
    })
    .await;

    relay.cut();
    eventually("503 naming the key store and the change feed", || async {
        let r = api.get("/health/ready").send().await;
        r.status == 503
            && r.json["status"] == "not_ready"
            && r.json["failing"] == serde_json::json!(["key_store", "change_feed"])
            && r.json["checks"]["key_store"] == "unreachable"
            && r.json["checks"]["change_feed"] == "out_of_sync"
    })
    .await;
    // Liveness does not depend on the database.
    api.get("/health/live").send().await.expect(200);

    relay.restore();
    eventually("ready again once PostgreSQL is back", || async {
        api.get("/health/ready").send().await.status == 200
    })
    .await;

    drop(relay);
    let direct = PostgresKeyStore::connect(&url).await.unwrap();
    client::drop_schema(direct.pool(), &schema).await;
}

/// The audit store stalls (another session holds a lock on the events
/// table, so the writer's insert waits): key uses fill the small queue and
/// the rest are shed, counted in `keygate_audit_events_dropped_total`;
/// `/health/ready` answers 200 "degraded"; every valid request is answered
/// while the writer is still stuck. Key management (create, edit, revoke,
/// a refused edit) and impersonation are never shed: once the lock is
/// released, each has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_store_sheds_key_uses_but_keeps_key_management() {
    let Some(url) = database_url("a_stalled_audit_store_sheds_key_uses_but_keeps_key_management")
    else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("keygate_stall_{}_{nanos}", std::process::id());
    let store = Arc::new(
        PostgresKeyStore::connect_with(&url, &PostgresOptions::new().schema(schema.clone()))
            .await
            .expect("DATABASE_URL is set but PostgreSQL is unreachable"),
    );
    const QUEUE: u64 = 4;
    let audit = Arc::new(
        store.audit_log_with(
            &AuditBatching::new()
                .queue_capacity(QUEUE as usize)
                .max_batch(1)
                .linger(std::time::Duration::ZERO),
        ),
    );
    let backend = Backend {
        keys: store.clone(),
        audit: audit.clone(),
        hasher: SecretHasher::for_tests(),
        location: "postgres".into(),
    };
    let options = portal::Options {
        requests_per_hour: 1_000_000,
        ..portal::Options::default()
    };
    let app = portal::Portal::new(&backend, &options).unwrap();
    let api = Api::at(spawn(app.router()).await);
    let pat = support::commands::issue(&backend, &portal::RULES, "admin1", &[], "stall")
        .await
        .unwrap();
    let token = pat.token.expose_secret().to_owned();
    let target = support::commands::issue(&backend, &portal::RULES, "admin1", &[], "target")
        .await
        .unwrap()
        .record
        .id;
    let dropped_before = dropped_metric().await;

    // The stall: an EXCLUSIVE lock lets readers in, and makes every
    // insert into the events table wait until it is released.
    let locker = sqlx::PgPool::connect(&url).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE \"{schema}\".audit_events IN EXCLUSIVE MODE"
    ))
    .execute(&mut *lock)
    .await
    .unwrap();

    // The writer takes the first key use and waits on the lock.
    api.get("/api/me").token(&token).send().await.expect(200);
    eventually("the writer holds the first batch", || async {
        audit.health().queued == 0
    })
    .await;
    // Then the queue fills, and the rest is shed; every request is answered.
    const USES: u64 = 20;
    for _ in 0..USES {
        api.get("/api/me").token(&token).send().await.expect(200);
    }
    let health = audit.health();
    assert_eq!(health.queued, QUEUE, "{health:?}");
    assert_eq!(health.shed_total, USES - QUEUE, "{health:?}");
    assert!(
        dropped_metric().await >= dropped_before + (USES - QUEUE) as f64,
        "keygate_audit_events_dropped_total counts what was shed"
    );
    let ready = api.get("/health/ready").send().await;
    ready.expect(200);
    assert_eq!(ready.json["status"], "degraded", "{}", ready.text);
    assert_eq!(ready.json["checks"]["audit"], "shedding", "{}", ready.text);
    assert_eq!(
        ready.json["audit"]["shed_total"],
        USES - QUEUE,
        "{}",
        ready.text
    );

    // Key management and impersonation while the queue is full.
    let created = api
        .post("/api/tokens")
        .token(&token)
        .json(r#"{"name":"made-during-stall","scopes":["users:read"]}"#)
        .send()
        .await;
    created.expect(201);
    api.patch(&format!("/api/tokens/{target}"))
        .token(&token)
        .json(r#"{"name":"renamed-during-stall"}"#)
        .send()
        .await
        .expect(200);
    api.patch(&format!("/api/tokens/{target}"))
        .token(&token)
        .json("{}")
        .send()
        .await
        .expect(422);
    api.delete(&format!("/api/tokens/{target}"))
        .token(&token)
        .send()
        .await
        .expect(204);
    api.get("/api/me")
        .token(&token)
        .header("x-subject-user", "stu1")
        .send()
        .await
        .expect(200);
    // Shed while they were kept: one more key use.
    api.get("/api/me").token(&token).send().await.expect(200);
    let health = audit.health();
    assert_eq!(health.queued, QUEUE + 5, "{health:?}");
    assert_eq!(health.shed_total, USES - QUEUE + 1, "{health:?}");

    lock.rollback().await.unwrap();
    audit.flush().await.unwrap();
    let events = audit
        .query(&AuditQuery::default().limit(1000))
        .await
        .unwrap()
        .events;
    let rows = |method: &str, path: &str, status: u16| {
        events
            .iter()
            .filter(|e| e.method == method && e.path == path && e.status == Some(status))
            .count()
    };
    let one_key = format!("/api/tokens/{target}");
    assert_eq!(rows("POST", "/api/tokens", 201), 1);
    assert_eq!(rows("PATCH", &one_key, 200), 1);
    assert_eq!(rows("PATCH", &one_key, 422), 1);
    assert_eq!(rows("DELETE", &one_key, 204), 1);
    let impersonated = events
        .iter()
        .filter(|e| e.subject.as_deref() == Some("stu1"))
        .count();
    assert_eq!(impersonated, 1);
    // Key uses: the one the writer held and the queued ones; the shed ones
    // have no row (they are counted in the key's usage instead).
    let uses = events
        .iter()
        .filter(|e| e.path == "/api/me" && e.subject.is_none())
        .count() as u64;
    assert_eq!(uses, 1 + QUEUE);
    assert_eq!(audit.dropped_events(), USES - QUEUE + 1);

    drop(api);
    client::drop_schema(&locker, &schema).await;
}

/// `keygate_audit_events_dropped_total`, every reason summed.
async fn dropped_metric() -> f64 {
    let text = metrics_api().await.get("/metrics").send().await.text;
    text.lines()
        .filter(|l| l.starts_with("keygate_audit_events_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Logs one event inside the request span `AuthMakeSpan` makes for
/// `GET /api/me?token=…`, with the user recorded as the layer does.
fn log_a_request(format: support::ops::LogFormat, ansi: bool) -> String {
    use tower_http::trace::MakeSpan;
    let buffer = CapturedLogs::default();
    let dispatch = support::ops::subscriber(
        format,
        ansi,
        tracing_subscriber::EnvFilter::new("info"),
        buffer.clone(),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        let req = axum::http::Request::get("/api/me?token=st_secret")
            .body(())
            .unwrap();
        let span = auth_tower::AuthMakeSpan::new().make_span(&req);
        span.record(auth_tower::trace::ACTOR, "alice");
        let _entered = span.enter();
        tracing::info!(status = 200, "finished processing request");
    });
    buffer.text()
}

#[test]
fn logs_have_no_colours_off_a_terminal_and_json_lines_on_request() {
    assert!(!support::ops::colours_wanted(false));
    let text = log_a_request(support::ops::LogFormat::Text, false);
    assert!(text.contains("finished processing request"), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escape in {text:?}");

    let json = log_a_request(support::ops::LogFormat::Json, false);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    let line = &lines[0];
    assert_eq!(line["message"], "finished processing request");
    assert_eq!(line["status"], 200);
    // OpenTelemetry field names on the request span; never the query.
    assert_eq!(line["span"]["http.request.method"], "GET", "{json}");
    assert_eq!(line["span"]["url.path"], "/api/me", "{json}");
    assert_eq!(line["span"]["user.id"], "alice", "{json}");
    assert!(!json.contains("st_secret"));
}
