//! The Redis store on a Redis Cluster: each test starts its own three-master
//! cluster (`keygate_test_support::redis_cluster`; skipped without
//! `redis-server`, failing under `CI=true`) and reaches it through a
//! `redis+cluster://` URL. Instances share limits there as on one server:
//! exactly the quota for small buckets, within the leases for large ones;
//! a request's buckets on several slots are all charged or none; the
//! failed-authentication guard and shared credits work unchanged.
//!
//! The stores read a stopped fake clock, so no bucket refills during a test.

mod support;

use std::{net::IpAddr, sync::Arc, time::Duration};

use auth_core::{
    policy::Credits, policy::KeyPolicy, KeyIssuer, KeyStore, MemoryKeyStore, NewKey, Principal,
    ScopeSet, Verifier,
};
use auth_ratelimit::{
    clock::FakeClock, store::Bucket, store::RateLimitStore, FailedAuthLimiter, OnStoreError, Quota,
    RateLimiter, RedisStore, Rule,
};
use auth_tower::AuthLayer;
use axum::{body::Body, routing::get, Router};
use http::{Request, StatusCode};
use keygate_test_support::{eventually, fixtures, redis_cluster::RedisCluster};
use redis::{cluster::ClusterClient, cluster_async::ClusterConnection, AsyncCommands};
use support::{admitted_over_rounds, as_user, unique_prefix};
use time::OffsetDateTime;
use tower::ServiceExt;

/// A store on `cluster` under a fresh prefix, on `clock`.
fn store(cluster: &RedisCluster, test: &str, clock: &FakeClock) -> RedisStore {
    let store = RedisStore::open(&cluster.url())
        .unwrap()
        .with_prefix(unique_prefix(test))
        .with_key_secret(b"cluster test secret")
        .with_timeout(Duration::from_secs(5))
        .clock(clock.clone());
    assert!(store.is_cluster());
    store
}

async fn connect(cluster: &RedisCluster) -> ClusterConnection {
    ClusterClient::new(cluster.node_urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// The keys under `prefix`, and on which node each is.
async fn keys_by_node(cluster: &RedisCluster, prefix: &str) -> Vec<(String, u16)> {
    let mut found = Vec::new();
    for (url, port) in cluster.node_urls().iter().zip(cluster.ports()) {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(keys.into_iter().map(|k| (k, port)));
    }
    found
}

/// The key under `prefix` of the bucket of rule `rule`.
async fn bucket_key(cluster: &RedisCluster, prefix: &str, rule: &str) -> String {
    let start = format!("{prefix}:{{{rule}:");
    let keys = keys_by_node(cluster, prefix).await;
    let mut of_rule = keys.into_iter().filter(|(k, _)| k.starts_with(&start));
    let (key, _) = of_rule.next().unwrap_or_else(|| panic!("no key {start}*"));
    assert!(of_rule.next().is_none(), "one bucket of {rule}");
    key
}

async fn slot(conn: &mut ClusterConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

fn limiter(store: &RedisStore, rules: &[Rule]) -> RateLimiter {
    let mut builder = RateLimiter::builder();
    for rule in rules {
        builder = builder.rule(rule.clone());
    }
    builder
        .redis(store.clone())
        .on_store_error(OnStoreError::FailClosed)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_admit_the_quota() {
    let test = "two_instances_on_a_cluster_admit_the_quota";
    let Some(cluster) = RedisCluster::start(test) else {
        return;
    };
    let clock = FakeClock::new();
    // A small quota leases nothing: 5 in all, not 5 per instance.
    let small = store(&cluster, test, &clock);
    let rule = [Rule::per_user("user", Quota::per_minute(5))];
    let limiters = [limiter(&small, &rule), limiter(&small, &rule)];
    assert_eq!(admitted_over_rounds(&limiters, 20).await, 5);
    // A large one leases 3 tokens: at most the others' leases short.
    let large = store(&cluster, test, &clock);
    let rule = [Rule::per_user("user", Quota::per_hour(300))];
    let limiters = [limiter(&large, &rule), limiter(&large, &rule)];
    let admitted = admitted_over_rounds(&limiters, 250).await;
    assert!(
        (294..=300).contains(&admitted),
        "admitted {admitted} of 300"
    );
}

/// A request's buckets hash to different slots (each bucket is its own
/// hash tag), so they are checked by one script per slot; a slot that
/// refuses makes the others give back what they took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_on_different_slots_are_charged_all_or_nothing() {
    let test = "buckets_on_different_slots";
    let Some(cluster) = RedisCluster::start(test) else {
        return;
    };
    let mut conn = connect(&cluster).await;
    let clock = FakeClock::new();
    // Through the limiter (leases, the take script): 3 a minute in all,
    // 5 a minute per user.
    let redis = store(&cluster, test, &clock);
    let rules = [
        Rule::per_user("user", Quota::per_minute(5)),
        Rule::global("all", Quota::per_minute(3)),
    ];
    let limiters = [limiter(&redis, &rules), limiter(&redis, &rules)];
    assert_eq!(admitted_over_rounds(&limiters, 5).await, 3);
    let user = bucket_key(&cluster, redis.prefix(), "user").await;
    let all = bucket_key(&cluster, redis.prefix(), "all").await;
    assert_ne!(slot(&mut conn, &user).await, slot(&mut conn, &all).await);
    // The user's bucket holds the 3 admitted requests (12 s each, in
    // microseconds from the fake clock's zero), none of the refused; the
    // global one is full (20 s each).
    let tat: u64 = conn.get(&user).await.unwrap();
    assert_eq!(tat, 3 * 12_000_000);
    let tat: u64 = conn.get(&all).await.unwrap();
    assert_eq!(tat, 3 * 20_000_000);

    // The store on its own (one check script per slot), the same way.
    let direct = store(&cluster, test, &clock);
    let (per_user, global) = (Quota::per_minute(5), Quota::per_minute(3));
    let mut admitted = 0;
    for _ in 0..10 {
        let d = direct
            .check_all(&[
                Bucket::new("user", "alice", per_user, 1),
                Bucket::new("all", "everyone", global, 1),
            ])
            .await
            .unwrap();
        assert_eq!(d[0].is_allowed() && d[1].is_allowed(), d[1].is_allowed());
        admitted += usize::from(d[1].is_allowed());
    }
    assert_eq!(admitted, 3);
    let user = bucket_key(&cluster, direct.prefix(), "user").await;
    let tat: u64 = conn.get(&user).await.unwrap();
    assert_eq!(tat, 3 * 12_000_000);
}

/// Every bucket key is `prefix:{rule:value}`: its own hash tag, so a
/// bucket is always one slot, and many buckets spread over the nodes.
#[tokio::test]
async fn each_bucket_is_one_slot_and_buckets_spread_over_the_nodes() {
    let test = "each_bucket_is_one_slot";
    let Some(cluster) = RedisCluster::start(test) else {
        return;
    };
    let mut conn = connect(&cluster).await;
    let redis = store(&cluster, test, &FakeClock::new());
    let rules = [
        Rule::per_user("user", Quota::per_minute(5)),
        Rule::per_key("key", Quota::per_minute(100)),
    ];
    let one = limiter(&redis, &rules);
    for n in 0..30 {
        assert!(one.check(&as_user(&format!("user-{n}"))).await.is_ok());
    }
    let keys = keys_by_node(&cluster, redis.prefix()).await;
    // 30 user buckets, one API key bucket (the requests share a key id).
    assert_eq!(keys.len(), 31, "{keys:?}");
    let mut nodes = std::collections::HashSet::new();
    for (key, node) in &keys {
        let tagged = &key[redis.prefix().len() + 1..];
        assert!(
            tagged.starts_with('{') && tagged.ends_with('}'),
            "{key} is not tagged"
        );
        let tag = &tagged[1..tagged.len() - 1];
        assert!(!tag.contains(['{', '}']), "{key}");
        assert_eq!(slot(&mut conn, key).await, slot(&mut conn, tag).await);
        nodes.insert(*node);
    }
    assert!(nodes.len() > 1, "every bucket on one node: {keys:?}");
}

/// The failed-authentication guard on a cluster: failures counted in the
/// cluster, the stream of blocked addresses read by every instance.
#[tokio::test]
async fn the_failure_guard_works_on_a_cluster() {
    let test = "the_failure_guard_works_on_a_cluster";
    let Some(cluster) = RedisCluster::start(test) else {
        return;
    };
    let redis = store(&cluster, test, &FakeClock::new());
    let guard = || {
        FailedAuthLimiter::builder(Quota::per_minute(4))
            .redis(redis.clone())
            .on_store_error(OnStoreError::FailClosed)
            .build()
    };
    let (one, two) = (guard(), guard());
    let alice: IpAddr = "192.0.2.10".parse().unwrap();
    let mallory: IpAddr = "203.0.113.66".parse().unwrap();
    for _ in 0..2 {
        one.record_failure(mallory).await;
        two.record_failure(mallory).await;
    }
    // The instance that saw the limit crossed refuses at once...
    assert_eq!(two.check(mallory).await.unwrap_err().status(), 429);
    // ...and the other once it has read the stream.
    eventually("the other instance to refuse the address", || async {
        one.check(mallory).await.is_err()
    })
    .await;
    assert!(one.check(alice).await.is_ok());
    assert!(two.check(alice).await.is_ok());
}

async fn status(app: &Router, token: &str) -> StatusCode {
    let req = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

/// N credits, 2N concurrent requests over two instances whose buckets are
/// on the cluster: exactly N served, the store at 0 afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_over_two_instances_never_exceed_what_remains() {
    const N: u64 = 40;
    let test = "credits_over_two_instances";
    let Some(cluster) = RedisCluster::start(test) else {
        return;
    };
    let redis = store(&cluster, test, &FakeClock::new());
    let keys = Arc::new(MemoryKeyStore::new());
    let issuer: KeyIssuer = fixtures::issuer(keys.clone());
    let verifier: Verifier = fixtures::verifier(keys.clone());
    let instance = || {
        RateLimiter::builder()
            .rule(Rule::per_key("key", Quota::per_minute(1_000_000)))
            .redis(redis.clone())
            .credits(keys.clone())
            .build()
            .unwrap()
    };
    let (one, two) = (instance(), instance());
    let app = |limiter: &RateLimiter| {
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(limiter.layer())
            .layer(AuthLayer::builder(verifier.clone()).build())
    };
    let apps = [app(&one), app(&two)];
    let policy = KeyPolicy::default().credits(Credits::new(N, OffsetDateTime::now_utc()));
    let key = issuer
        .issue(NewKey::new(Principal::user("alice"), "ci", ScopeSet::empty()).policy(policy))
        .await
        .unwrap();
    let token = key.token.expose_secret().to_owned();
    let tasks: Vec<_> = (0..2 * N)
        .map(|i| {
            let app = apps[(i % 2) as usize].clone();
            let token = token.clone();
            tokio::spawn(async move { status(&app, &token).await })
        })
        .collect();
    let mut served = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(served <= N, "served {served} of {N}");
    // What is still leased is served by its instance, and no more.
    for app in &apps {
        while status(app, &token).await == StatusCode::OK {
            served += 1;
            assert!(served <= N, "served {served} of {N}");
        }
    }
    assert_eq!(served, N);
    one.credits().unwrap().flush().await.unwrap();
    two.credits().unwrap().flush().await.unwrap();
    let record = keys.get(key.record.id).await.unwrap().unwrap();
    assert_eq!(record.credits.unwrap().remaining, 0);
}
