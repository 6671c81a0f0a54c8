//! PostgreSQL-specific behaviour: durability, no usable secret in any table,
//! revocation across instances (LISTEN/NOTIFY), connection loss and outages
//! (fail closed, recover without restart), audit overload, `open_store`.
//!
//! Needs `DATABASE_URL`; without it every test prints that it is skipped.
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

use auth_core::{store::open_store, *};
use parking_lot::Mutex;
use sqlx::{postgres::PgPoolOptions, Row};
use support::{pg::TestSchema, *};
use time::OffsetDateTime;
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

#[tokio::test]
async fn issued_key_survives_reconnecting() {
    let schema = schema_or_skip!("issued_key_survives_reconnecting");
    let store: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let key = issuer(store.clone()).issue(new_key("alice")).await.unwrap();
    drop(store);

    let again: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let ctx = verifier(again.clone())
        .verify(key.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(ctx.key_id(), Some(key.record.id));
    drop(again);
    schema.drop_schema().await;
}

#[tokio::test]
async fn nothing_in_any_table_can_be_used_as_a_token() {
    let schema = schema_or_skip!("nothing_in_any_table_can_be_used_as_a_token");
    let store = Arc::new(schema.store().await);
    let audit = store.audit_log();
    let keys: Arc<dyn KeyStore> = store.clone();
    let key = issuer(keys.clone()).issue(new_key("alice")).await.unwrap();
    let rotated = issuer(keys.clone())
        .rotate(key.record.id, Duration::from_secs(60))
        .await
        .unwrap();
    let v = verifier(keys.clone());
    v.verify(rotated.token.expose_secret()).await.unwrap();
    v.flush_usage().await;
    audit.record(audit_event(
        Some(rotated.record.id),
        Some("alice"),
        OffsetDateTime::now_utc(),
    ));
    audit.flush().await.unwrap();

    // Every row of every table in the schema, as text.
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema.name)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(tables.contains(&"api_keys".to_owned()) && tables.contains(&"audit_events".to_owned()));
    let mut dump = String::new();
    for t in &tables {
        let rows: Option<String> = sqlx::query(&format!(
            "SELECT string_agg(t::text, E'\\n') FROM \"{t}\" t"
        ))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
        dump.push_str(&rows.unwrap_or_default());
    }
    for issued in [&key, &rotated] {
        let token = issued.token.expose_secret();
        assert!(
            dump.contains(&issued.record.id.to_string()),
            "the search must see real rows"
        );
        assert!(!dump.contains(token));
        assert!(!dump.contains(secret_text(token)));
    }
    drop((audit, keys, v, store));
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_rotation_reach_the_other_instance() {
    let schema = schema_or_skip!("revocation_and_rotation_reach_the_other_instance");
    let a: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let b = CountingStore::new(Arc::new(schema.store().await));
    let issue = issuer(a.clone());
    let vb = verifier(b.clone());
    let revoked = issue.issue(new_key("alice")).await.unwrap();
    let rotated = issue.issue(new_key("alice")).await.unwrap();
    for k in [&revoked, &rotated] {
        vb.verify(k.token.expose_secret()).await.unwrap();
    }
    let reads = b.gets();
    for k in [&revoked, &rotated] {
        vb.verify(k.token.expose_secret()).await.unwrap();
    }
    assert_eq!(b.gets(), reads, "cache hits must not query the database");

    assert!(issue.revoke(revoked.record.id).await.unwrap());
    let replacement = issue
        .rotate(rotated.record.id, Duration::ZERO)
        .await
        .unwrap();
    for k in [&revoked, &rotated] {
        let vb = &vb;
        eventually(
            "instance B to refuse a key changed by instance A",
            move || async move {
                let r = vb.verify(k.token.expose_secret()).await;
                assert!(r.is_ok() || refused_as(&r, RejectReason::Revoked), "{r:?}");
                r.is_err()
            },
        )
        .await;
    }
    vb.verify(replacement.token.expose_secret()).await.unwrap();
    assert!(b.changes().is_in_sync());
    drop((a, b, vb, issue));
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reach_the_other_instance() {
    let schema = schema_or_skip!("edits_reach_the_other_instance");
    let a: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let b: Arc<dyn KeyStore> = Arc::new(schema.store().await);
    let vb = verifier(b.clone());
    let key = issuer(a.clone()).issue(new_key("alice")).await.unwrap();
    vb.verify(key.token.expose_secret()).await.unwrap();
    let heard = Recorder::subscribe(&*b);
    let disable = KeyUpdate {
        disabled_at: Some(Some(OffsetDateTime::now_utc())),
        ..KeyUpdate::default()
    };
    a.update(key.record.id, &disable).await.unwrap();
    eventually("instance B to hear of the edit", || async {
        heard.seen().contains(&KeyChange::Updated(key.record.id))
    })
    .await;
    assert!(refused_as(
        &vb.verify(key.token.expose_secret()).await,
        RejectReason::Disabled
    ));
    // Only that key was dropped: no resync of every cache.
    assert!(!heard.seen().contains(&KeyChange::All));
    let enable = KeyUpdate {
        disabled_at: Some(None),
        ..KeyUpdate::default()
    };
    a.update(key.record.id, &enable).await.unwrap();
    vb.verify(key.token.expose_secret()).await.unwrap();
    drop((a, b, vb));
    schema.drop_schema().await;
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
    let b = CountingStore::new(Arc::new(
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
async fn audit_overload_drops_and_counts_and_flush_keeps_the_rest() {
    let schema = schema_or_skip!("audit_overload_drops_and_counts_and_flush_keeps_the_rest");
    let store = schema.store().await;
    let audit = store.audit_log_with(&store::AuditBatching::new().queue_capacity(8).max_batch(4));
    // Block inserts: the writer is stuck on its first batch.
    let mut blocker = schema.connection().await;
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE audit_events IN EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();

    for i in 0..100 {
        audit.record(audit_event(
            None,
            Some("alice"),
            OffsetDateTime::now_utc() + time::Duration::seconds(i),
        ));
    }
    let dropped = audit.dropped_events();
    assert!(dropped >= 100 - 8 - 4, "dropped {dropped}");

    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    audit.flush().await.unwrap();
    let written: i64 = sqlx::query("SELECT count(*) FROM audit_events")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert!(written > 0);
    assert_eq!(written as u64 + audit.dropped_events(), 100);
    drop((audit, store, blocker));
    schema.drop_schema().await;
}

#[tokio::test]
async fn open_store_picks_postgres_for_postgres_urls() {
    let schema = schema_or_skip!("open_store_picks_postgres_for_postgres_urls");
    // The schema travels in the URL, as an operator would pass it.
    let sep = if schema.url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{sep}options=-c%20search_path%3D{}",
        schema.url, schema.name
    );
    let opened = open_store(&url).await.unwrap();
    assert_eq!(opened.backend(), "postgres");
    let key = issuer(opened.keys.clone())
        .issue(new_key("alice"))
        .await
        .unwrap();
    verifier(opened.keys.clone())
        .verify(key.token.expose_secret())
        .await
        .unwrap();
    opened.audit.record(audit_event(
        Some(key.record.id),
        Some("alice"),
        OffsetDateTime::now_utc(),
    ));
    opened.audit.flush().await.unwrap();
    let page = opened
        .audit
        .query(&AuditQuery {
            key_id: Some(key.record.id),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(opened.dropped_audit_events(), 0);
    drop(opened);
    schema.drop_schema().await;
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
    // Twelve heartbeat periods: with heartbeats sent through the pool, the
    // listener would be deemed dead after three, and every cache resynced.
    // (Time passing is the condition under test here, not a synchronisation.)
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.changes().is_in_sync());
    assert!(
        !changes.seen().contains(&KeyChange::All),
        "a busy pool made the listener look dead"
    );
    drop(held);
    drop((changes, store));
    schema.drop_schema().await;
}
