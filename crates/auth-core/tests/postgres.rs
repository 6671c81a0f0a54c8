//! What only PostgreSQL has: connections lost, cut or silently dead (fail
//! closed, recover without restart), an unreachable server, heartbeats
//! apart from the shared pool. What every durable store does (a second
//! instance on the same storage, nothing usable as a token stored, audit
//! overload, `open_store`) is in `store_conformance.rs`.
//!
//! Needs `DATABASE_URL`: without it each test says it is skipped, or fails
//! under `CI=true`.
#![cfg(feature = "postgres")]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use auth_core::store::ChangeListener;
use auth_core::*;
use auth_core::{
    store::KeyChange, store::PostgresKeyStore, store::PostgresOptions, store::StoreError,
};
use parking_lot::Mutex;
use sqlx::{postgres::PgPoolOptions, Row};
use support::{pg::TestSchema, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    task::JoinHandle,
};

macro_rules! schema_or_skip {
    ($test:literal) => {
        match TestSchema::new($test).await {
            Some(s) => s,
            None => return,
        }
    };
}

/// Refused with this reason, or not answered at all (503): never let through.
fn refused_as(r: &Result<AuthContext, AuthError>, reason: RejectReason) -> bool {
    matches!(r, Err(e) if e.reason() == reason)
}

fn unavailable(r: &Result<AuthContext, AuthError>) -> bool {
    matches!(r, Err(e) if e.code() == ErrorCode::Unavailable)
}

/// Records, at each "drop everything" change, whether the feed was in sync.
struct SyncLog {
    store: std::sync::Weak<dyn KeyStore>,
    seen: Mutex<Vec<bool>>,
}

impl ChangeListener for SyncLog {
    fn on_change(&self, change: &KeyChange) {
        if *change == KeyChange::All {
            if let Some(s) = self.store.upgrade() {
                self.seen.lock().push(s.changes().is_in_sync());
            }
        }
    }
}

fn sync_log(store: &Arc<dyn KeyStore>) -> Arc<SyncLog> {
    let log = Arc::new(SyncLog {
        store: Arc::downgrade(store),
        seen: Mutex::new(Vec::new()),
    });
    let weak: std::sync::Weak<dyn ChangeListener> =
        Arc::downgrade(&(log.clone() as Arc<dyn ChangeListener>));
    store.changes().subscribe(weak);
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_never_let_a_stale_key_through_and_recover() {
    let schema = schema_or_skip!("killed_connections_never_let_a_stale_key_through_and_recover");
    let app = format!("{}_b", schema.name);
    let a: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let b = TestStore::new(Arc::new(
        PostgresKeyStore::from_pool(schema.pool(schema.options(), &app))
            .await
            .unwrap(),
    ));
    let sync = sync_log(&(b.clone() as Arc<dyn KeyStore>));
    let issue = issuer(a.clone());
    let vb = verifier(b.clone());
    let kept = issue.issue(new_key("alice")).await.unwrap();
    let later = issue.issue(new_key("alice")).await.unwrap();
    vb.verify(kept.token.expose_secret()).await.unwrap();
    vb.verify(later.token.expose_secret()).await.unwrap();

    let mut admin = schema.connection().await;
    let killed: i64 = sqlx::query(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = $1) k",
    )
    .bind(&app)
    .fetch_one(&mut admin)
    .await
    .unwrap()
    .get(0);
    assert!(
        killed >= 1,
        "instance B's connections (at least its listener) were killed"
    );

    // Right after: the pool reconnects (pass) or the store is unreachable
    // (503); never 401 for a valid key.
    let r = vb.verify(kept.token.expose_secret()).await;
    assert!(r.is_ok() || unavailable(&r), "{r:?}");

    // The listener noticed, stopped trusting the cache, and came back.
    eventually("instance B to re-synchronise", || async {
        let seen = sync.seen.lock().clone();
        seen.windows(2).any(|w| w == [false, true]) && b.changes().is_in_sync()
    })
    .await;
    vb.verify(kept.token.expose_secret()).await.unwrap();

    // Notifications work again: a key cached after the reconnection...
    vb.verify(later.token.expose_secret()).await.unwrap();
    let reads = b.gets();
    vb.verify(later.token.expose_secret()).await.unwrap();
    assert_eq!(b.gets(), reads, "served from the cache");
    // ...is refused once instance A revokes it.
    issue.revoke(later.record.id).await.unwrap();
    let vb2 = &vb;
    let later = &later;
    eventually(
        "instance B to refuse a key revoked after the reconnection",
        move || async move {
            let r = vb2.verify(later.token.expose_secret()).await;
            assert!(r.is_ok() || refused_as(&r, RejectReason::Revoked), "{r:?}");
            r.is_err()
        },
    )
    .await;
    drop((a, b, vb, issue, admin));
    schema.drop_schema().await;
}

/// A TCP relay to PostgreSQL that the test can cut (connections closed,
/// new ones refused), silence (connections stay open, nothing gets through:
/// a network partition) and restore.
struct Relay {
    addr: SocketAddr,
    state: Arc<AtomicU8>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

const UP: u8 = 0;
const CUT: u8 = 1;
const SILENT: u8 = 2;

impl Relay {
    async fn start(target: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AtomicU8::new(UP));
        let links = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (state, links) = (state.clone(), links.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if state.load(Ordering::SeqCst) == CUT {
                        continue; // dropped: the client sees the connection close
                    }
                    let (target, state) = (target.clone(), state.clone());
                    links.lock().push(tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(target).await {
                            let (ir, iw) = inbound.into_split();
                            let (or, ow) = outbound.into_split();
                            tokio::join!(pump(ir, ow, state.clone()), pump(or, iw, state));
                        }
                    }));
                }
            }
        });
        Self {
            addr,
            state,
            links,
            accept,
        }
    }

    /// Closes every open connection and refuses new ones.
    fn cut(&self) {
        self.state.store(CUT, Ordering::SeqCst);
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }

    /// Holds every byte back; connections stay open.
    fn silence(&self) {
        self.state.store(SILENT, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.state.store(UP, Ordering::SeqCst);
    }
}

/// Copies one direction, holding bytes back while the relay is silent.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: Arc<AtomicU8>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while state.load(Ordering::SeqCst) == SILENT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_closed_and_service_resumes_without_restart() {
    let schema = schema_or_skip!("outage_fails_closed_and_service_resumes_without_restart");
    let direct = schema.options();
    let relay = Relay::start((direct.get_host().to_owned(), direct.get_port())).await;
    let via_relay = schema.options().host("127.0.0.1").port(relay.addr.port());
    let a: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let b: Arc<dyn KeyStore> = Arc::new(
        PostgresKeyStore::from_pool(schema.pool(via_relay, "outage"))
            .await
            .unwrap(),
    );
    let issue = issuer(a.clone());
    let vb = verifier(b.clone());
    let kept = issue.issue(new_key("alice")).await.unwrap();
    let revoked = issue.issue(new_key("alice")).await.unwrap();
    vb.verify(kept.token.expose_secret()).await.unwrap();
    vb.verify(revoked.token.expose_secret()).await.unwrap();

    relay.cut();
    eventually("instance B to notice the outage", || async {
        !b.changes().is_in_sync()
    })
    .await;
    // Cached or not, nothing is let through while the database is unreachable.
    for token in [&kept.token, &revoked.token] {
        let r = vb.verify(token.expose_secret()).await;
        assert!(unavailable(&r), "{r:?}");
    }
    let unknown = issuer(Arc::new(MemoryKeyStore::new()))
        .issue(new_key("mallory"))
        .await
        .unwrap();
    let r = vb.verify(unknown.token.expose_secret()).await;
    assert!(unavailable(&r), "{r:?}");
    assert_eq!(r.unwrap_err().status(), 503);
    // A revocation made elsewhere during the outage.
    issue.revoke(revoked.record.id).await.unwrap();

    relay.restore();
    eventually("instance B to serve again", || async {
        vb.verify(kept.token.expose_secret()).await.is_ok()
    })
    .await;
    let r = vb.verify(revoked.token.expose_secret()).await;
    assert!(refused_as(&r, RejectReason::Revoked), "{r:?}");
    eventually("instance B to listen again", || async {
        b.changes().is_in_sync()
    })
    .await;
    drop((a, b, vb, issue, relay));
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_dead_notification_connection_is_caught_by_the_heartbeat() {
    let schema =
        schema_or_skip!("silently_dead_notification_connection_is_caught_by_the_heartbeat");
    let direct = schema.options();
    let relay = Relay::start((direct.get_host().to_owned(), direct.get_port())).await;
    let via_relay = schema.options().host("127.0.0.1").port(relay.addr.port());
    let a: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let b: Arc<dyn KeyStore> = Arc::new(
        PostgresKeyStore::from_pool(schema.pool(via_relay, "partition"))
            .await
            .unwrap(),
    );
    let issue = issuer(a.clone());
    let vb = verifier(b.clone());
    let key = issue.issue(new_key("alice")).await.unwrap();
    vb.verify(key.token.expose_secret()).await.unwrap();

    // No socket error, no EOF: only the missing heartbeat echo tells.
    relay.silence();
    eventually("instance B to stop trusting its cache", || async {
        !b.changes().is_in_sync()
    })
    .await;
    // A revocation B cannot hear about; the cached key must not pass.
    issue.revoke(key.record.id).await.unwrap();
    let r = vb.verify(key.token.expose_secret()).await;
    assert!(unavailable(&r), "{r:?}");

    relay.restore();
    eventually("instance B to re-synchronise", || async {
        b.changes().is_in_sync()
    })
    .await;
    let r = vb.verify(key.token.expose_secret()).await;
    assert!(refused_as(&r, RejectReason::Revoked), "{r:?}");
    drop((a, b, vb, issue, relay));
    schema.drop_schema().await;
}

#[tokio::test]
async fn unreachable_database_answers_unavailable() {
    if pg::database_url("unreachable_database_answers_unavailable").is_none() {
        return;
    }
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(PostgresKeyStore::from_migrated_pool(pool));
    assert!(!store.changes().is_in_sync());
    let token = issuer(Arc::new(MemoryKeyStore::new()))
        .issue(new_key("alice"))
        .await
        .unwrap()
        .token;
    let r = verifier(store.clone()).verify(token.expose_secret()).await;
    assert!(unavailable(&r), "{r:?}");
    assert!(matches!(
        issuer(store.clone()).issue(new_key("alice")).await,
        Err(IssueError::Unavailable(_))
    ));
    assert!(matches!(
        store.list_by_owner("alice").await,
        Err(StoreError::Unavailable(_))
    ));

    let err = PostgresKeyStore::connect_with(
        &format!("postgres://postgres@127.0.0.1:{port}/test"),
        &PostgresOptions::new().acquire_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_do_not_depend_on_the_shared_pool() {
    let schema = schema_or_skip!("heartbeats_do_not_depend_on_the_shared_pool");
    let options = PostgresOptions::new()
        .schema(schema.name.clone())
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(200))
        .heartbeat(Duration::from_millis(50));
    let store = PostgresKeyStore::connect_with(&schema.url, &options)
        .await
        .unwrap();
    let changes = Recorder::subscribe(&store);
    // Requests hold every pooled connection, as under load.
    let mut held = Vec::new();
    for _ in 0..2 {
        if let Ok(c) = store.pool().acquire().await {
            held.push(c);
        }
    }
    assert!(
        store.pool().acquire().await.is_err(),
        "the pool is exhausted"
    );
    // Thirty heartbeat periods: with heartbeats sent through the pool, each
    // would wait out the 200 ms acquire timeout and fail, the listener be
    // deemed dead after three (about 750 ms), and every cache resynced.
    // (Time passing is the condition under test here, not a synchronisation.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(store.changes().is_in_sync());
    assert!(
        !changes.seen().contains(&KeyChange::All),
        "a busy pool made the listener look dead"
    );
    drop(held);
    drop((changes, store));
    schema.drop_schema().await;
}
