//! Cold start: issue N keys into SQLite, "restart" (a new store
//! and verifier on the same file, nothing cached), then send each key's
//! first request with 32 concurrent clients. Reports the total time and
//! first-request latency percentiles, then the same replay once warm.
//!
//! In process: no sockets, no HTTP; each request is what `AuthLayer` does
//! with a token (`Verifier::verify_cached_bytes`, then `Verifier::verify` on a
//! miss) against the real `SqliteKeyStore` and argon2. Not part of
//! `cargo test`:
//!
//! ```text
//! COLD_START_N=10000,100000 cargo bench -p auth-core --features sqlite --bench cold_start
//! COLD_START_N=1000 COLD_START_SCHEME=owasp  cargo bench -p auth-core --features sqlite --bench cold_start  # the old default parameters
//! COLD_START_N=1000 COLD_START_SCHEME=legacy cargo bench -p auth-core --features sqlite --bench cold_start  # records from before the check, migrating
//! ```

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use auth_core::{
    hash::HashParams, store::KeyRecord, store::SqliteKeyStore, KeyIssuer, KeyStore, MemoryKeyStore,
    NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix, Verifier,
};

const CLIENTS: usize = 32;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Scheme {
    /// Today's default: a secret check and argon2id m=256 KiB, t=1.
    Current,
    /// The old default parameters (m=19456 KiB, t=2) with a check.
    Owasp,
    /// Records as stored before the check, with the old parameters,
    /// verified by today's verifier (which migrates them).
    Legacy,
}

fn main() {
    let ns: Vec<usize> = std::env::var("COLD_START_N")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("COLD_START_N: comma-separated key counts")
        })
        .collect();
    let scheme = match std::env::var("COLD_START_SCHEME").as_deref() {
        Ok("owasp") => Scheme::Owasp,
        Ok("legacy") => Scheme::Legacy,
        _ => Scheme::Current,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "cold start, {CLIENTS} clients, scheme {scheme:?}, {} worker threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for n in ns {
        rt.block_on(run(n, scheme));
    }
}

async fn run(n: usize, scheme: Scheme) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let prefix = TokenPrefix::new("sk_live_").unwrap();
    let issue_params = match scheme {
        Scheme::Current => HashParams::default(),
        Scheme::Owasp | Scheme::Legacy => HashParams::OWASP_PASSWORD,
    };
    let verify_params = match scheme {
        Scheme::Owasp => HashParams::OWASP_PASSWORD,
        Scheme::Current | Scheme::Legacy => HashParams::default(),
    };

    // Issue: real keys (each its own secret and argon2 hash), minted in
    // memory in parallel, then written to SQLite in one transaction.
    let t = Instant::now();
    let (records, tokens) = issue(n, &prefix, issue_params, scheme == Scheme::Legacy).await;
    {
        let store = SqliteKeyStore::open(&path).await.unwrap();
        bulk_insert(&store, &records).await;
    }
    println!(
        "N = {n}: issued and stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Restart: a new store and verifier on the same file, nothing cached.
    let store = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let verifier = Verifier::builder(store.clone())
        .hasher(SecretHasher::new(verify_params).unwrap())
        .prefix(prefix)
        .cache_capacity(n.max(100_000) + 1)
        .build();
    let cold = replay(&verifier, &tokens).await;
    report("cold (first request per key)", n, &cold);
    let warm = replay(&verifier, &tokens).await;
    report("warm (same replay again)", n, &warm);
    verifier.flush_usage().await;
}

async fn issue(
    n: usize,
    prefix: &TokenPrefix,
    params: HashParams,
    legacy: bool,
) -> (Vec<KeyRecord>, Arc<Vec<String>>) {
    let memory = Arc::new(MemoryKeyStore::new());
    let issuer = KeyIssuer::new(
        memory.clone(),
        SecretHasher::new(params).unwrap().with_queue(usize::MAX),
        prefix.clone(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (issuer, next) = (issuer.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let key = issuer
                        .issue(NewKey::new(
                            Principal::user("bench"),
                            "cold start",
                            ScopeSet::parse(["read"]).unwrap(),
                        ))
                        .await
                        .unwrap();
                    let mut record = key.record;
                    if legacy {
                        record.check = None;
                    }
                    out.push((record, key.token.expose_secret().to_owned()));
                }
                out
            })
        })
        .collect();
    let mut records = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    for w in workers {
        for (r, t) in w.await.unwrap() {
            records.push(r);
            tokens.push(t);
        }
    }
    (records, Arc::new(tokens))
}

/// One transaction for all rows (the schema of docs/SCHEMA.md); issuing
/// through `KeyStore::insert` would pay one fsync per key.
async fn bulk_insert(store: &SqliteKeyStore, records: &[KeyRecord]) {
    let mut tx = store.pool().begin().await.unwrap();
    for r in records {
        let scopes = serde_json::to_string(&r.scopes.iter().collect::<Vec<_>>()).unwrap();
        let micros = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1000) as i64;
        sqlx::query(
            "INSERT INTO api_keys (id, owner_id, org_id, name, scopes, hint, hash, created_at, \
             expires_at, revoked_at, last_used_at, replaced_by, secret_check) \
             VALUES (?, ?, NULL, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?)",
        )
        .bind(r.id.to_string())
        .bind(r.owner.user_id())
        .bind(&r.name)
        .bind(scopes)
        .bind(&r.hint)
        .bind(&r.hash)
        .bind(micros(r.created_at))
        .bind(r.check.map(|c| i64::from(c.as_u32())))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    // The records read back as issued.
    assert_eq!(
        store.get(records[0].id).await.unwrap().as_ref(),
        Some(&records[0])
    );
}

struct Replay {
    total: Duration,
    latencies: Vec<Duration>,
}

/// What the auth layer does with a token.
async fn authenticate(v: &Verifier, token: &str) -> bool {
    match v.verify_cached_bytes(token.as_bytes(), None) {
        Some(r) => r.is_ok(),
        None => v.verify(token).await.is_ok(),
    }
}

/// Every token once, `CLIENTS` at a time; every one must be accepted.
async fn replay(verifier: &Verifier, tokens: &Arc<Vec<String>>) -> Replay {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (verifier, tokens, next) = (verifier.clone(), tokens.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(i) else { break };
                    let t = Instant::now();
                    let ok = authenticate(&verifier, token).await;
                    latencies.push(t.elapsed());
                    assert!(ok, "key {i} refused");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tokens.len());
    for c in clients {
        latencies.extend(c.await.unwrap());
    }
    Replay {
        total: start.elapsed(),
        latencies,
    }
}

fn report(what: &str, n: usize, r: &Replay) {
    let mut l = r.latencies.clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {what}: {n} requests in {:.2} s ({:.0}/s); latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        r.total.as_secs_f64(),
        n as f64 / r.total.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*l.last().unwrap()),
    );
}
