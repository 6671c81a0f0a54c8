//! The Redis store behind the limiter. Tests needing a server read
//! `REDIS_URL` (see `support`: skipped with a reason when it is missing,
//! failed under `CI=true`). The fallback tests use a closed port and need no
//! server. Every test uses its own key prefix. The bucket arithmetic is
//! checked against the model, with the other stores, in `stores.rs`.

mod support;

use std::{net::SocketAddr, time::Duration};

use auth_core::{AuthContext, KeyId, Principal, ScopeSet};
use auth_ratelimit::{
    clock::FakeClock,
    headers::HeaderStyle,
    store::{Bucket, RateLimitStore},
    LimitStoreError, OnStoreError, Quota, RateLimiter, RedisStore, Rule,
};
use axum::{body::Body, extract::connect_info::MockConnectInfo, routing::get, Router};
use http::{Request, StatusCode};
use support::{cleanup, redis_store, unique_prefix};
use tower::ServiceExt;

fn app(limiter: &RateLimiter, peer: &str) -> Router {
    Router::new()
        .route("/items", get(|| async { "ok" }))
        .layer(limiter.layer())
        .layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()))
}

fn request(user: Option<&str>) -> Request<Body> {
    let mut req = Request::get("/items").body(Body::empty()).unwrap();
    if let Some(user) = user {
        let ctx = AuthContext::for_key(
            KeyId::from_u64(1),
            "t",
            Principal::user(user),
            ScopeSet::empty(),
        );
        req.extensions_mut().insert(ctx);
    }
    req
}

async fn status(app: &Router, user: Option<&str>) -> StatusCode {
    app.clone().oneshot(request(user)).await.unwrap().status()
}

/// On the server's clock (no clock given), the wait counts down in real time.
#[tokio::test]
async fn server_time_by_default() {
    let Some(store) = redis_store("server_time_by_default").await else {
        return;
    };
    let q = Quota::per_hour(5);
    for left in (0..5).rev() {
        let d = store
            .check_all(&[Bucket::new("t", "k", q, 1)])
            .await
            .unwrap()[0];
        assert!(d.is_allowed());
        assert_eq!((d.limit(), d.remaining()), (5, left));
    }
    let d = store
        .check_all(&[Bucket::new("t", "k", q, 1)])
        .await
        .unwrap()[0];
    assert!(!d.is_allowed());
    // One token every 720 s; a little of it has passed on the server's clock.
    let wait = d.retry_after().unwrap();
    assert!(
        wait <= Duration::from_secs(720) && wait > Duration::from_secs(600),
        "{wait:?}"
    );
    cleanup(store.prefix()).await;
}

#[tokio::test]
async fn buckets_expire_when_full_again() {
    let Some(store) = redis_store("buckets_expire_when_full_again").await else {
        return;
    };
    let bucket = Bucket::new("t", "k", Quota::per_minute(10), 2);
    store.check_all(&[bucket]).await.unwrap();
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:t:c:*", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    let [key] = &keys[..] else {
        panic!("one bucket expected: {keys:?}")
    };
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Two tokens at 6 s each: full again within 12 s, and then gone.
    assert!(pttl > 0 && pttl <= 12_000, "PTTL {pttl}");
    cleanup(store.prefix()).await;
}

/// Login names (and any identifier a key function returns) never appear in
/// Redis key names: only a keyed digest does. Instances sharing the secret
/// share the bucket; another secret names another bucket.
#[tokio::test]
async fn key_names_hide_user_names_behind_a_keyed_digest() {
    let Some(store) = redis_store("key_names_hide_user_names").await else {
        return;
    };
    let prefix = store.prefix().to_owned();
    let q = Quota::per_minute(3);
    let login = "alice.login@example.com";
    let one = store.clone().with_key_secret(b"fleet secret");
    let two = RedisStore::open(&std::env::var("REDIS_URL").unwrap())
        .unwrap()
        .with_prefix(prefix.clone())
        .with_key_secret(b"fleet secret");
    let mut allowed = 0;
    for s in [&one, &two, &one, &two] {
        let d = s
            .check_all(&[Bucket::new("login", login, q, 1)])
            .await
            .unwrap()[0];
        allowed += u32::from(d.is_allowed());
    }
    assert_eq!(allowed, 3, "one bucket for both instances");
    let other = store.clone().with_key_secret(b"another secret");
    let d = other
        .check_all(&[Bucket::new("login", login, q, 1)])
        .await
        .unwrap()[0];
    assert!(d.is_allowed(), "another secret names another bucket");
    // Without a secret: a random one kept in Redis, shared too.
    let plain = store.clone();
    plain
        .check_all(&[Bucket::new("login", login, q, 1)])
        .await
        .unwrap();
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in &keys {
        let rest = &key[prefix.len()..];
        assert!(
            !rest.contains("alice") && !rest.contains("example"),
            "{key}"
        );
    }
    cleanup(&prefix).await;
}

/// Two service instances (two limiters, two connections) sharing one Redis
/// admit exactly the quota together, under concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_sharing_redis_admit_no_more_than_the_quota() {
    let prefix = unique_prefix("shared");
    let mut apps = Vec::new();
    for _ in 0..2 {
        let Some(store) =
            redis_store("two_limiters_sharing_redis_admit_no_more_than_the_quota").await
        else {
            return;
        };
        let store = store.with_prefix(prefix.clone());
        let limiter = RateLimiter::builder()
            .rule(Rule::per_user("default", Quota::per_day(50)))
            .redis(store)
            .on_store_error(OnStoreError::FailClosed)
            .build()
            .unwrap();
        apps.push(app(&limiter, "10.1.1.1:1000"));
    }
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let app = apps[i % 2].clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..5 {
                    match status(&app, Some("alice")).await {
                        StatusCode::OK => ok += 1,
                        StatusCode::TOO_MANY_REQUESTS => {}
                        other => panic!("unexpected {other}"),
                    }
                }
                ok
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 50);
    cleanup(&prefix).await;
}

/// All rules of a request are decided in one script: a refusal by one takes
/// nothing from the others.
#[tokio::test]
async fn several_rules_in_one_atomic_check() {
    let Some(store) = redis_store("several_rules_in_one_atomic_check").await else {
        return;
    };
    let prefix = store.prefix().to_owned();
    let limiter = RateLimiter::builder()
        .rule(Rule::per_user("user", Quota::per_minute(5)))
        .rule(Rule::per_ip("ip", Quota::per_minute(3)))
        .headers(HeaderStyle::Both)
        .redis(store)
        .on_store_error(OnStoreError::FailClosed)
        .build()
        .unwrap();
    let app = app(&limiter, "192.0.2.7:4000");
    for user in ["a", "b", "c"] {
        let res = app.clone().oneshot(request(Some(user))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["ratelimit-limit"], "3");
    }
    let res = app.clone().oneshot(request(Some("a"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "one IP token per 20 s: {retry}");
    let state = res.headers()["ratelimit"].to_str().unwrap();
    assert!(state.starts_with(r#""user";r=4;"#), "{state}");
    assert!(state.contains(r#""ip";r=0;"#), "{state}");
    cleanup(&prefix).await;
}

// ---- Redis unreachable -------------------------------------------------------

const CLOSED: &str = "redis://127.0.0.1:1";

fn unreachable_limiter(policy: OnStoreError) -> RateLimiter {
    let store = RedisStore::open(CLOSED)
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    RateLimiter::builder()
        .rule(Rule::per_user("default", Quota::per_minute(2)))
        .clock(FakeClock::new())
        .redis(store)
        .on_store_error(policy)
        .build()
        .unwrap()
}

#[tokio::test]
async fn unreachable_redis_fails_fast_then_reports_down() {
    let store = RedisStore::open(CLOSED)
        .unwrap()
        .with_retry_interval(Duration::from_secs(3600));
    let check = || store.check_all(&[Bucket::new("t", "k", Quota::per_minute(1), 1)]);
    assert!(matches!(
        check().await,
        Err(LimitStoreError::Backend(_) | LimitStoreError::Timeout)
    ));
    // Within the retry interval, no new attempt: an immediate Down.
    assert!(matches!(check().await, Err(LimitStoreError::Down)));
    assert!(RedisStore::connect(CLOSED).await.is_err());
    assert!(RedisStore::open("not a url").is_err());
}

#[tokio::test]
async fn redis_errors_are_the_source() {
    use std::error::Error;

    let is_redis_error = |err: &LimitStoreError| {
        assert!(matches!(err, LimitStoreError::Backend(_)), "{err:?}");
        let source = err.source().expect("a backend error has a source");
        source.downcast_ref::<redis::RedisError>().is_some()
    };
    // Refused on a closed port.
    let refused = RedisStore::connect(CLOSED).await.unwrap_err();
    assert!(is_redis_error(&refused), "{refused:?}");
    // Not a Redis URL.
    let invalid = RedisStore::open("not a url").unwrap_err();
    assert!(is_redis_error(&invalid), "{invalid:?}");
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_memory_by_default() {
    let limiter = unreachable_limiter(OnStoreError::default());
    let app = app(&limiter, "192.0.2.1:1");
    assert_eq!(status(&app, Some("alice")).await, StatusCode::OK);
    let res = app.clone().oneshot(request(Some("alice"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["ratelimit-remaining"],
        "0",
        "counted in memory"
    );
    let res = app.clone().oneshot(request(Some("alice"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "30");
    assert_eq!(limiter.memory().len(), 1);
}

#[tokio::test]
async fn unreachable_redis_fails_closed_with_503_when_asked() {
    let limiter = unreachable_limiter(OnStoreError::FailClosed);
    let app = app(&limiter, "192.0.2.1:1");
    for _ in 0..3 {
        let res = app.clone().oneshot(request(Some("alice"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "unavailable");
    }
    assert!(limiter.memory().is_empty());
}

#[tokio::test]
async fn unreachable_redis_fails_open_when_asked() {
    let limiter = unreachable_limiter(OnStoreError::FailOpen);
    let app = app(&limiter, "192.0.2.1:1");
    for _ in 0..5 {
        let res = app.clone().oneshot(request(Some("alice"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.headers().contains_key("ratelimit-limit"));
    }
}
