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

/// A request authenticated as `user`'s key (id 9, no scopes).
pub(crate) fn as_user(user: &str) -> http::Request<()> {
    let ctx = auth_core::AuthContext::for_key(
        auth_core::KeyId::from_u64(9),
        "ci",
        auth_core::Principal::user(user),
        auth_core::ScopeSet::empty(),
    );
    let mut req = http::Request::get("/").body(()).unwrap();
    req.extensions_mut().insert(ctx);
    req
}

/// Every limiter checks `per_limiter` requests of alice at once (each with
/// its own task); how many were admitted.
pub(crate) async fn hammer(limiters: &[auth_ratelimit::RateLimiter], per_limiter: usize) -> usize {
    let mut tasks = Vec::new();
    for limiter in limiters {
        for _ in 0..per_limiter {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                limiter.check(&as_user("alice")).await.is_ok()
            }));
        }
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    admitted
}

/// Admitted by `limiters` over two rounds, the leases given back between
/// them (as the reconciliation does).
pub(crate) async fn admitted_over_rounds(
    limiters: &[auth_ratelimit::RateLimiter],
    per_round: usize,
) -> usize {
    let first = hammer(limiters, per_round).await;
    for l in limiters {
        l.give_back_leases().await;
        assert_eq!(l.leased_tokens(), 0);
    }
    first + hammer(limiters, per_round).await
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

/// A `redis-server` of the test's own on a free port, which the test may
/// flush or stop (never the shared one); stopped when dropped.
#[cfg(feature = "redis")]
pub(crate) struct OwnRedis {
    child: std::process::Child,
    pub(crate) port: u16,
    dir: std::path::PathBuf,
}

#[cfg(feature = "redis")]
impl OwnRedis {
    /// Starts one, or `None` (after `services::skip`) without `redis-server`.
    pub(crate) async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[]).await
    }

    /// Starts one with extra arguments (e.g. `--cluster-enabled yes`).
    pub(crate) async fn start_with(test: &str, args: &[&str]) -> Option<Self> {
        Self::start_on(test, free_port(), args).await
    }

    /// Starts one on `port` (e.g. again, after stopping one there).
    pub(crate) async fn start_on(test: &str, port: u16, args: &[&str]) -> Option<Self> {
        let [server] = services::programs(test, ["redis-server"], "apt-get install redis-server")?;
        let dir = std::env::temp_dir().join(unique_prefix(test).replace(':', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new(server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let own = Self { child, port, dir };
        let url = own.url();
        keygate_test_support::eventually("redis-server to answer", || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                match client.get_multiplexed_async_connection().await {
                    Ok(mut conn) => redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        Some(own)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A store on it under a unique prefix.
    pub(crate) async fn store(&self, test: &str) -> RedisStore {
        // Connected at the first check, with the timeout below.
        RedisStore::open(&self.url())
            .unwrap()
            .with_prefix(unique_prefix(test))
            .with_timeout(Duration::from_secs(5))
    }

    /// Runs one command on it.
    pub(crate) async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// Forgets everything, as a restart without persistence does.
    pub(crate) async fn flush_all(&self) {
        let _: () = self.cmd(&redis::cmd("FLUSHALL")).await;
    }
}

#[cfg(feature = "redis")]
impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free now (another process may take it before it is used; the
/// test then fails to connect and says so).
#[cfg(feature = "redis")]
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
