//! Durable store costs: a store read alone, a cold verify (store read +
//! argon2id at the default cost) and a cached verify, for the memory,
//! SQLite and PostgreSQL stores; then how long a revocation made by one
//! instance takes to reach another (p50/p99 over 100 revocations).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p auth-core
//! --features sqlite,postgres --bench store -- --warm-up-time 1 --measurement-time 3`
//!
//! Without `DATABASE_URL` the PostgreSQL figures are skipped.

use std::{
    io::Write,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use auth_core::store::ChangeListener;
use auth_core::*;
use auth_core::{store::KeyChange, store::PostgresKeyStore, store::SqliteKeyStore};
use criterion::{criterion_group, Criterion};
use rand::RngCore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn database_url() -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "skipping PostgreSQL benchmarks: DATABASE_URL not set"
        );
    }
    url
}

fn schema_name() -> String {
    format!("kgb_{:016x}", rand::rngs::OsRng.next_u64())
}

async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

struct Backend {
    name: &'static str,
    store: Arc<dyn KeyStore>,
}

async fn backends(dir: &std::path::Path, pg: Option<(&str, &str)>) -> Vec<Backend> {
    let mut v = vec![
        Backend {
            name: "memory",
            store: Arc::new(MemoryKeyStore::new()),
        },
        Backend {
            name: "sqlite",
            store: Arc::new(SqliteKeyStore::open(dir.join("bench.db")).await.unwrap()),
        },
    ];
    if let Some((url, schema)) = pg {
        v.push(Backend {
            name: "postgres",
            store: Arc::new(
                PostgresKeyStore::connect_with_schema(url, schema)
                    .await
                    .unwrap(),
            ),
        });
    }
    v
}

fn verify_paths(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = database_url();
    let schema = schema_name();
    let backends = rt.block_on(backends(
        dir.path(),
        url.as_deref().map(|u| (u, schema.as_str())),
    ));
    let hasher = SecretHasher::default();
    let prefix = TokenPrefix::new("st_").unwrap();

    for b in &backends {
        let issuer = KeyIssuer::new(b.store.clone(), hasher.clone(), prefix.clone());
        let verifier = Verifier::builder(b.store.clone())
            .hasher(hasher.clone())
            .build();
        let key = rt
            .block_on(issuer.issue(NewKey::new(
                Principal::user("bench"),
                "bench",
                ScopeSet::parse(["read"]).unwrap(),
            )))
            .unwrap();
        let token = key.token.expose_secret().to_owned();
        let id = key.record.id;

        let mut g = c.benchmark_group("store_get");
        g.bench_function(b.name, |bench| {
            bench
                .to_async(&rt)
                .iter(|| async { b.store.get(id).await.unwrap().unwrap() })
        });
        g.finish();

        let mut g = c.benchmark_group("verify_cold_argon2_default");
        g.sample_size(20);
        g.bench_function(b.name, |bench| {
            bench.to_async(&rt).iter(|| async {
                // Drops the verifier's cache: the next verify reads the store and runs argon2.
                b.store.changes().publish(&KeyChange::All);
                verifier.verify(&token).await.unwrap()
            })
        });
        g.finish();

        let mut g = c.benchmark_group("verify_cached");
        rt.block_on(verifier.verify(&token)).unwrap();
        g.bench_function(b.name, |bench| {
            bench
                .to_async(&rt)
                .iter(|| async { verifier.verify(&token).await.unwrap() })
        });
        g.finish();
    }
    drop(backends);
    if let Some(url) = &url {
        rt.block_on(drop_schema(url, &schema));
    }
}

/// Sends the time each revocation reached a feed.
struct Arrivals(parking_lot::Mutex<mpsc::Sender<(KeyId, Instant)>>);

impl ChangeListener for Arrivals {
    fn on_change(&self, change: &KeyChange) {
        if let KeyChange::Revoked(id) = change {
            let _ = self.0.lock().send((*id, Instant::now()));
        }
    }
}

/// Revokes 100 keys through `a` and times their arrival on `b`'s feed.
async fn propagation(a: Arc<dyn KeyStore>, b: Arc<dyn KeyStore>) -> Vec<Duration> {
    let (tx, rx) = mpsc::channel();
    let arrivals: Arc<dyn ChangeListener> = Arc::new(Arrivals(parking_lot::Mutex::new(tx)));
    b.changes().subscribe(Arc::downgrade(&arrivals));
    let issuer = KeyIssuer::new(
        a.clone(),
        SecretHasher::for_tests(),
        TokenPrefix::new("st_").unwrap(),
    );
    let mut times = Vec::with_capacity(100);
    for _ in 0..100 {
        let key = issuer
            .issue(NewKey::new(
                Principal::user("bench"),
                "bench",
                ScopeSet::empty(),
            ))
            .await
            .unwrap();
        // A random moment, so that revocations do not fall in step with the
        // SQLite poller (which would measure only its worst case).
        let jitter = rand::rngs::OsRng.next_u64() % 250;
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let start = Instant::now();
        assert!(a
            .revoke(key.record.id, time::OffsetDateTime::now_utc())
            .await
            .unwrap());
        let arrived = tokio::task::block_in_place(|| loop {
            let (id, at) = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("revocation not propagated within 5 s");
            if id == key.record.id {
                break at;
            }
        });
        times.push(arrived - start);
    }
    times.sort();
    times
}

fn report(what: &str, times: &[Duration]) {
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}

fn revocation_propagation() {
    let rt = runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("propagation.db");
        let a: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        let b: Arc<dyn KeyStore> = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
        report(
            "revocation propagation, SQLite, other process (change-log poll)",
            &propagation(a, b).await,
        );

        if let Some(url) = database_url() {
            let schema = schema_name();
            let a: Arc<dyn KeyStore> = Arc::new(
                PostgresKeyStore::connect_with_schema(&url, &schema)
                    .await
                    .unwrap(),
            );
            let b: Arc<dyn KeyStore> = Arc::new(
                PostgresKeyStore::connect_with_schema(&url, &schema)
                    .await
                    .unwrap(),
            );
            report(
                "revocation propagation, PostgreSQL, other instance (LISTEN/NOTIFY)",
                &propagation(a, b).await,
            );
            drop_schema(&url, &schema).await;
        }
    });
}

criterion_group!(benches, verify_paths);

fn main() {
    benches();
    revocation_propagation();
    Criterion::default().configure_from_args().final_summary();
}
