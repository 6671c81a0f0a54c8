//! Shared by the test binaries: the Redis server under test and unique key
//! prefixes.
//!
//! Tests needing Redis read `REDIS_URL`, under the skip rule of
//! `keygate_test_support::services`: under `CI=true` a missing or
//! unreachable server fails the test; elsewhere the test says why on stderr
//! and returns without running.

#![allow(dead_code)] // Each test binary uses part of it.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

#[cfg(feature = "redis")]
use auth_ratelimit::RedisStore;
#[cfg(feature = "redis")]
use keygate_test_support::services;
#[cfg(feature = "redis")]
use std::time::Duration;

/// A prefix no other test (or run) uses.
pub(crate) fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "rltest:{test}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connected store under a unique prefix, or `None` (after
/// `services::skip`) when there is no server to test.
#[cfg(feature = "redis")]
pub(crate) async fn redis_store(test: &str) -> Option<RedisStore> {
    let url = services::redis_url(test)?;
    match RedisStore::connect(&url).await {
        Ok(store) => Some(
            store
                .with_prefix(unique_prefix(test))
                .with_timeout(Duration::from_secs(5)),
        ),
        Err(e) => {
            services::skip(
                test,
                &format!("Redis at REDIS_URL={url} is unreachable: {e}"),
            );
            None
        }
    }
}

/// Deletes the keys under `prefix` (most would expire by themselves, some
/// only much later).
#[cfg(feature = "redis")]
pub(crate) async fn cleanup(prefix: &str) {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return;
    };
    let client = redis::Client::open(url).unwrap();
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
