//! Fleet mode: several limiters on one Redis, each spending small leases of
//! the shared buckets locally. They admit the quota (never more, and no
//! less than the leases the others still hold), exactly for small quotas,
//! and an allowed request in steady state makes no Redis round trip.
//!
//! Each test starts its own `redis-server` (skipped without one, failing
//! under `CI=true`), so the command counts are its own.

mod support;

use std::sync::Arc;

use auth_ratelimit::{Quota, RateLimiter, Rule};
use support::{admitted_over_rounds, as_user, hammer, OwnRedis};

async fn fleet(own: &OwnRedis, test: &str, quota: Quota, n: usize) -> Vec<RateLimiter> {
    let store = own.store(test).await;
    (0..n)
        .map(|_| {
            RateLimiter::builder()
                .rule(Rule::per_user("user", quota))
                .redis(store.clone())
                .on_store_error(auth_ratelimit::OnStoreError::FailClosed)
                .build()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_admit_300_an_hour_within_2_percent() {
    let test = "three_instances_admit_300_an_hour";
    let Some(own) = OwnRedis::start(test).await else {
        return;
    };
    let limiters = fleet(&own, test, Quota::per_hour(300), 3).await;
    let admitted = admitted_over_rounds(&limiters, 200).await;
    // One token comes back every 12 s: the test takes far less.
    assert!(
        (294..=306).contains(&admitted),
        "admitted {admitted} of 300"
    );
    assert!(admitted <= 301, "more than the quota: {admitted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_admit_exactly_5_a_minute() {
    let test = "three_instances_admit_5_a_minute";
    let Some(own) = OwnRedis::start(test).await else {
        return;
    };
    let limiters = fleet(&own, test, Quota::per_minute(5), 3).await;
    // A small quota leases nothing: not 5 per instance, 5 in all.
    assert_eq!(admitted_over_rounds(&limiters, 20).await, 5);
}

/// Leases are taken before they are spent: however many instances and
/// concurrent requests, never more than the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_never_admit_more_than_the_bucket() {
    let test = "leases_never_admit_more_than_the_bucket";
    let Some(own) = OwnRedis::start(test).await else {
        return;
    };
    // 1000 a minute: a lease is 10 tokens, one back every 60 ms.
    let limiters = fleet(&own, test, Quota::per_hour(60_000).with_burst(1000), 3).await;
    let started = std::time::Instant::now();
    let admitted = hammer(&limiters, 600).await;
    let refilled = (started.elapsed().as_millis() / 60) as usize + 1;
    assert!(admitted <= 1000 + refilled, "admitted {admitted}");
    assert!(admitted >= 1000 - 2 * 10, "admitted {admitted}");
}

/// Redis commands per allowed request in steady state: one take per lease
/// of 1% of the burst, one give-back per 100 ms at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_make_no_round_trip_in_steady_state() {
    let test = "allowed_requests_make_no_round_trip";
    let Some(own) = OwnRedis::start(test).await else {
        return;
    };
    let limiter = fleet(&own, test, Quota::per_hour(1_000_000), 1)
        .await
        .remove(0);
    let limiter = Arc::new(limiter);
    // Warm: the connection, the scripts, the first lease.
    assert!(limiter.check(&as_user("alice")).await.is_ok());
    let _: () = own.cmd(redis::cmd("CONFIG").arg("RESETSTAT")).await;
    const N: usize = 5_000;
    for _ in 0..N {
        assert!(limiter.check(&as_user("alice")).await.is_ok());
    }
    let stats: String = own.cmd(redis::cmd("INFO").arg("commandstats")).await;
    let commands: u64 = stats
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_config")
                && !l.starts_with("cmdstat_info")
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let per_request = commands as f64 / N as f64;
    assert!(
        per_request <= 0.05,
        "{commands} Redis commands for {N} requests:\n{stats}"
    );
}

/// Calls of each Redis command since the last `CONFIG RESETSTAT` that did
/// not fail (an `EVALSHA` of a script the server has not loaded yet fails,
/// then the script is loaded and called again).
async fn command_calls(own: &OwnRedis) -> std::collections::HashMap<String, u64> {
    let stats: String = own.cmd(redis::cmd("INFO").arg("commandstats")).await;
    let field = |rest: &str, name: &str| -> u64 {
        rest.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    stats
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = field(rest, "calls") - field(rest, "failed_calls");
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The failed-authentication guard goes to Redis only for failures; an
/// address over the limit is refused by every instance within 100 ms.
#[tokio::test]
async fn the_failure_guard_goes_to_redis_only_for_failures() {
    let test = "the_failure_guard_goes_to_redis_only_for_failures";
    let Some(own) = OwnRedis::start(test).await else {
        return;
    };
    let store = own.store(test).await;
    let guard = || {
        auth_ratelimit::FailedAuthLimiter::builder(Quota::per_minute(4))
            .redis(store.clone())
            .on_store_error(auth_ratelimit::OnStoreError::FailClosed)
            .build()
    };
    let (one, two) = (guard(), guard());
    let alice: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    let mallory: std::net::IpAddr = "203.0.113.66".parse().unwrap();
    let _: () = own.cmd(redis::cmd("CONFIG").arg("RESETSTAT")).await;
    for _ in 0..100 {
        assert!(one.check(alice).await.is_ok());
        assert!(two.check(alice).await.is_ok());
    }
    let calls = command_calls(&own).await;
    let scripts =
        calls.get("evalsha").copied().unwrap_or(0) + calls.get("eval").copied().unwrap_or(0);
    assert_eq!(
        scripts, 0,
        "requests that do not fail went to Redis: {calls:?}"
    );
    for _ in 0..4 {
        one.record_failure(mallory).await;
    }
    let calls = command_calls(&own).await;
    let scripts =
        calls.get("evalsha").copied().unwrap_or(0) + calls.get("eval").copied().unwrap_or(0);
    assert_eq!(scripts, 4, "{calls:?}");
    // The instance that saw the limit crossed refuses at once...
    assert_eq!(one.check(mallory).await.unwrap_err().status(), 429);
    // ...and the other as soon as it has read the stream.
    keygate_test_support::eventually("the other instance to refuse the address", || async {
        two.check(mallory).await.is_err()
    })
    .await;
    assert!(two.check(alice).await.is_ok());
}

/// Redis going away: the limiter falls back to its memory (the default
/// policy) with one warning, and goes back to Redis once it answers again,
/// without a restart.
#[tokio::test]
async fn an_outage_falls_back_to_memory_and_recovers() {
    let test = "an_outage_falls_back_to_memory_and_recovers";
    let (logs, _guard) = keygate_test_support::logs::CapturedLogs::on_this_thread();
    let Some(own) = OwnRedis::start(test).await else {
        return;
    };
    let port = own.port;
    let store = own
        .store(test)
        .await
        .with_timeout(std::time::Duration::from_millis(200))
        .with_retry_interval(std::time::Duration::from_millis(50));
    let limiter = RateLimiter::builder()
        .rule(Rule::per_user("user", Quota::per_minute(5)))
        .redis(store)
        .build()
        .unwrap();
    assert!(limiter.check(&as_user("alice")).await.is_ok());
    drop(own);
    // Down: limited in memory, with the same rules.
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += usize::from(limiter.check(&as_user("bob")).await.is_ok());
    }
    assert_eq!(admitted, 5);
    assert_eq!(limiter.memory().len(), 1);
    let warnings = |logs: &keygate_test_support::logs::CapturedLogs| {
        logs.text()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("rate-limit store unavailable"))
            .count()
    };
    assert_eq!(warnings(&logs), 1, "{}", logs.text());
    // Back (empty, as after a restart without persistence): Redis decides again.
    let Some(again) = OwnRedis::start_on(test, port, &[]).await else {
        return;
    };
    keygate_test_support::eventually("the limiter to use Redis again", || async {
        let _ = limiter.check(&as_user("carol")).await;
        let keys: Vec<String> = again.cmd(redis::cmd("KEYS").arg("*")).await;
        !keys.is_empty()
    })
    .await;
    assert!(logs.text().contains("rate-limit store available again"));
    assert_eq!(warnings(&logs), 1, "{}", logs.text());
}
