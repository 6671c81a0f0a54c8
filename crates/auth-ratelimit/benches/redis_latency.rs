//! Redis check latency on loopback: p50/p99 of one check, one at a time, and
//! the throughput of many concurrent checks over the one multiplexed
//! connection.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo bench -p auth-ratelimit --features redis --bench redis_latency`
//!
//! * `store`: `RateLimitStore::check_all` of one key (one `EVALSHA` round trip).
//! * `layer, 2 rules`: `RateLimiter::check` of a request matching a per-user
//!   and a per-IP rule: still one round trip for both.
//! * `concurrent`: 64 tasks × 2,000 checks sharing the connection.

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use auth_core::{AuthContext, KeyId, Principal, ScopeSet};
use auth_ratelimit::{
    store::{Bucket, RateLimitStore},
    OnStoreError, Quota, RateLimiter, RedisStore, Rule,
};
use axum::extract::ConnectInfo;

const N: usize = 20_000;

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name:<16} n={} p50={:?} p90={:?} p99={:?} p99.9={:?} max={:?}",
        samples.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1]
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipping: REDIS_URL not set");
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("rlbench:{nanos}");
    let store = RedisStore::connect(&url)
        .await
        .expect("REDIS_URL is set but Redis is unreachable")
        .with_prefix(prefix.clone());
    let q = Quota::per_second(1_000_000).with_burst(u32::MAX);

    for _ in 0..2_000 {
        store
            .check_all(&[Bucket::new("bench", "warm", q, 1)])
            .await
            .unwrap();
    }
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let d = store
            .check_all(&[Bucket::new("bench", "k", q, 1)])
            .await
            .unwrap();
        samples.push(t.elapsed());
        assert!(d[0].is_allowed());
    }
    percentiles("store", samples);

    let limiter = RateLimiter::builder()
        .rule(Rule::per_user("user", q))
        .rule(Rule::per_ip("ip", q))
        .redis(store.clone())
        .on_store_error(OnStoreError::FailClosed)
        .build()
        .unwrap();
    let mut req = http::Request::get("/items").body(()).unwrap();
    let ctx = AuthContext::for_key(
        KeyId::from_u64(1),
        "bench",
        Principal::user("u"),
        ScopeSet::empty(),
    );
    req.extensions_mut().insert(ctx);
    req.extensions_mut()
        .insert(ConnectInfo("192.0.2.1:5000".parse::<SocketAddr>().unwrap()));
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let headers = limiter.check(&req).await.expect("allowed");
        samples.push(t.elapsed());
        assert!(headers.contains_key("ratelimit-limit"));
    }
    percentiles("layer, 2 rules", samples);

    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..2_000 {
                    store
                        .check_all(&[Bucket::new("bench", format!("c{i}"), q, 1)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = t.elapsed();
    println!(
        "concurrent       64 tasks x 2000 checks in {elapsed:?}: {:.0} checks/s",
        128_000.0 / elapsed.as_secs_f64()
    );

    // Leave nothing behind.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
