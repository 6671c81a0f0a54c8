//! Limits that come from the key: its own rate limit, its owner's tier (a
//! cached resolver) and its credits, behind a real `AuthLayer` over a
//! memory key store. The shared-credits tests need Redis (see `support`).

mod support;

use std::{
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use auth_core::{
    store::KeyStore, AuditLog, AuditQuery, AuthContext, CreditSpend, Credits, KeyIssuer, KeyPolicy,
    KeyRateLimit, MemoryAuditLog, MemoryKeyStore, NewKey, Principal, ScopeSet, Verifier,
};
use auth_ratelimit::{FakeClock, Quota, QuotaResolver, RateLimiter, Rule, StoreError};
use auth_tower::AuthLayer;
use axum::{body::Body, routing::get, Router};
use http::{Request, StatusCode};
use keygate_test_support::fixtures;
use time::OffsetDateTime;
use tower::ServiceExt;

struct Fixture {
    store: Arc<MemoryKeyStore>,
    issuer: KeyIssuer,
    verifier: Verifier,
    audit: Arc<MemoryAuditLog>,
}

impl Fixture {
    fn new() -> Self {
        let store = Arc::new(MemoryKeyStore::new());
        Self {
            issuer: fixtures::issuer(store.clone()),
            verifier: fixtures::verifier(store.clone()),
            store,
            audit: Arc::new(MemoryAuditLog::default()),
        }
    }

    /// A key of `user` with `policy`; its token and id.
    async fn key(&self, user: &str, policy: KeyPolicy) -> (String, auth_core::KeyId) {
        let key = self
            .issuer
            .issue(NewKey::new(Principal::user(user), "ci", ScopeSet::empty()).policy(policy))
            .await
            .unwrap();
        (key.token.expose_secret().to_owned(), key.record.id)
    }

    fn app(&self, limiter: &RateLimiter) -> Router {
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(limiter.layer())
            .layer(
                AuthLayer::builder(self.verifier.clone())
                    .audit(self.audit.clone())
                    .build(),
            )
    }
}

fn request(token: &str) -> Request<Body> {
    Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

async fn status(app: &Router, token: &str) -> StatusCode {
    app.clone().oneshot(request(token)).await.unwrap().status()
}

/// How many requests in a row pass before the first 429.
async fn passes(app: &Router, token: &str, max: u32) -> u32 {
    for n in 0..max {
        if status(app, token).await == StatusCode::TOO_MANY_REQUESTS {
            return n;
        }
    }
    max
}

fn own_limit(limit: u32) -> KeyPolicy {
    KeyPolicy::default().rate_limit(KeyRateLimit::new(
        NonZeroU32::new(limit).unwrap(),
        NonZeroU32::new(60).unwrap(),
    ))
}

fn credits(n: u64) -> KeyPolicy {
    KeyPolicy::default().credits(Credits::new(n, OffsetDateTime::now_utc()))
}

/// Users whose name starts with `pro` are on the pro tier; counts the calls.
#[derive(Clone, Default)]
struct Tiers(Arc<AtomicU32>);

impl QuotaResolver for Tiers {
    async fn quota(&self, ctx: &AuthContext) -> Result<Option<Quota>, StoreError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        match ctx.actor().user_id() {
            "down" => Err(StoreError::Down),
            u if u.starts_with("pro") => Ok(Some(Quota::per_minute(10))),
            _ => Ok(None),
        }
    }
}

fn tiered(tiers: Tiers, clock: FakeClock) -> RateLimiter {
    RateLimiter::builder()
        .rule(Rule::per_key("key", Quota::per_minute(3)).key_quota())
        .quota_resolver(tiers, Duration::from_secs(60))
        .clock(clock)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_free_key_is_limited_before_a_pro_key_and_a_key_s_own_limit_wins() {
    let f = Fixture::new();
    let tiers = Tiers::default();
    let app = f.app(&tiered(tiers.clone(), FakeClock::new()));
    let (free, _) = f.key("bob", KeyPolicy::default()).await;
    let (pro, _) = f.key("pro-carol", KeyPolicy::default()).await;
    let (own, _) = f.key("pro-dave", own_limit(5)).await;
    assert_eq!(passes(&app, &free, 20).await, 3, "the rule's quota");
    assert_eq!(passes(&app, &pro, 20).await, 10, "the pro tier's");
    assert_eq!(
        passes(&app, &own, 20).await,
        5,
        "the key's own, tighter than its tier"
    );
    // One resolver call per key; hits are cached.
    assert_eq!(tiers.0.load(Ordering::SeqCst), 3);
}

/// A limit that would let anything through: `u32::MAX` a second.
fn huge_limit() -> KeyPolicy {
    KeyPolicy::default().rate_limit(KeyRateLimit::new(NonZeroU32::MAX, NonZeroU32::MIN))
}

#[tokio::test]
async fn a_key_s_own_limit_only_tightens_its_tier_or_the_rule() {
    let f = Fixture::new();
    let app = f.app(&tiered(Tiers::default(), FakeClock::new()));
    let (pro_huge, _) = f.key("pro-erin", huge_limit()).await;
    let (free_huge, _) = f.key("frank", huge_limit()).await;
    let (pro_small, _) = f.key("pro-gina", own_limit(2)).await;
    assert_eq!(passes(&app, &pro_huge, 20).await, 10, "held to the tier");
    assert_eq!(passes(&app, &free_huge, 20).await, 3, "held to the rule");
    assert_eq!(passes(&app, &pro_small, 20).await, 2, "held to its own");
}

#[tokio::test]
async fn tier_answers_expire_on_the_limiter_s_clock() {
    let f = Fixture::new();
    let (tiers, clock) = (Tiers::default(), FakeClock::new());
    let app = f.app(&tiered(tiers.clone(), clock.clone()));
    let (free, _) = f.key("bob", KeyPolicy::default()).await;
    assert_eq!(status(&app, &free).await, StatusCode::OK);
    clock.advance(Duration::from_secs(59));
    assert_eq!(status(&app, &free).await, StatusCode::OK);
    assert_eq!(tiers.0.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(status(&app, &free).await, StatusCode::OK);
    assert_eq!(
        tiers.0.load(Ordering::SeqCst),
        2,
        "asked again after the TTL"
    );
}

#[tokio::test]
async fn a_failing_resolver_refuses_with_503_and_is_asked_again() {
    let f = Fixture::new();
    let tiers = Tiers::default();
    let app = f.app(&tiered(tiers.clone(), FakeClock::new()));
    let (down, _) = f.key("down", KeyPolicy::default()).await;
    for _ in 0..2 {
        let res = app.clone().oneshot(request(&down)).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(tiers.0.load(Ordering::SeqCst), 2, "failures are not cached");
}

fn with_credits(store: Arc<dyn KeyStore>) -> RateLimiter {
    RateLimiter::builder()
        .rule(Rule::per_key("key", Quota::per_minute(1000)))
        .credits(store)
        .clock(FakeClock::new())
        .build()
        .unwrap()
}

#[tokio::test]
async fn credits_run_out_with_429_usage_exceeded_and_an_audit_reason() {
    let f = Fixture::new();
    let app = f.app(&with_credits(f.store.clone()));
    let (token, id) = f.key("alice", credits(3)).await;
    let (unlimited, _) = f.key("bob", KeyPolicy::default()).await;
    for _ in 0..3 {
        assert_eq!(status(&app, &token).await, StatusCode::OK);
    }
    let res = app.clone().oneshot(request(&token)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!res.headers().contains_key("retry-after"), "never refilled");
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "usage_exceeded");
    // The store holds the count; keys without credits are not limited.
    let record = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(record.credits.unwrap().remaining, 0);
    for _ in 0..5 {
        assert_eq!(status(&app, &unlimited).await, StatusCode::OK);
    }
    f.audit.flush().await.unwrap();
    let query = AuditQuery::default().key_id(id).limit(100);
    let events = f.audit.query(&query).await.unwrap().events;
    let reasons: Vec<_> = events.iter().filter_map(|e| e.reason).collect();
    assert_eq!(reasons.len(), 1, "{events:?}");
    assert_eq!(reasons[0].as_str(), "usage_exceeded");
}

/// A request refused by a rate limit spends no credit.
#[tokio::test]
async fn a_rate_limited_request_spends_no_credit() {
    let f = Fixture::new();
    let limiter = RateLimiter::builder()
        .rule(Rule::per_key("key", Quota::per_minute(2)))
        .credits(f.store.clone())
        .clock(FakeClock::new())
        .build()
        .unwrap();
    let app = f.app(&limiter);
    let (token, id) = f.key("alice", credits(10)).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(status(&app, &token).await.as_u16());
    }
    assert_eq!(seen, [200, 200, 429, 429, 429]);
    let record = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(record.credits.unwrap().remaining, 8);
    // The audit log tells the refusals from the successes.
    f.audit.flush().await.unwrap();
    let query = AuditQuery::default().key_id(id).limit(100);
    let events = f.audit.query(&query).await.unwrap().events;
    let mut reasons: Vec<_> = events
        .iter()
        .map(|e| e.reason.map_or("success", |r| r.as_str()))
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "rate_limited",
            "rate_limited",
            "rate_limited",
            "success",
            "success"
        ]
    );
}

#[cfg(feature = "redis")]
mod shared {
    use auth_ratelimit::{CreditLedger, RedisStore};

    use super::*;
    use crate::support::{cleanup, redis_store};

    fn limiter(f: &Fixture, redis: RedisStore) -> RateLimiter {
        RateLimiter::builder()
            .rule(Rule::per_key("key", Quota::per_minute(1_000_000)))
            .redis(redis)
            .credits(f.store.clone())
            .build()
            .unwrap()
    }

    /// N credits, 2N concurrent requests over two instances sharing one
    /// Redis: exactly N pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_limiters_on_one_redis_never_overspend() {
        const N: u64 = 40;
        let f = Fixture::new();
        let Some(redis) = redis_store("two_limiters_on_one_redis_never_overspend").await else {
            return;
        };
        let prefix = redis.prefix().to_owned();
        let one = limiter(&f, redis.clone());
        let two = limiter(&f, redis.clone());
        let apps = [f.app(&one), f.app(&two)];
        let (token, id) = f.key("alice", credits(N)).await;
        let tasks: Vec<_> = (0..2 * N)
            .map(|i| {
                let app = apps[(i % 2) as usize].clone();
                let token = token.clone();
                tokio::spawn(async move { status(&app, &token).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(ok, N);
        // Written back in one batch: the listing shows the count.
        one.credits().unwrap().flush().await.unwrap();
        two.credits().unwrap().flush().await.unwrap();
        let record = f.store.get(id).await.unwrap().unwrap();
        assert_eq!(record.credits.unwrap().remaining, 0);
        cleanup(&prefix).await;
    }

    /// Redis losing its data starts again from the written-back count, not
    /// from the key's initial credits.
    #[tokio::test]
    async fn a_redis_restart_does_not_hand_out_fresh_credits() {
        let f = Fixture::new();
        let Some(redis) = redis_store("a_redis_restart_does_not_hand_out_fresh_credits").await
        else {
            return;
        };
        let prefix = redis.prefix().to_owned();
        let (_, id) = f.key("alice", credits(10)).await;
        let ledger = CreditLedger::redis(redis, f.store.clone(), Duration::from_secs(3600));
        let stored = || async { f.store.get(id).await.unwrap().unwrap().credits.unwrap() };
        let initial = stored().await;
        for left in (6..10).rev() {
            let spent = ledger.spend_for(id, initial).await.unwrap();
            assert_eq!(spent, CreditSpend::Spent { remaining: left });
        }
        assert_eq!(stored().await.remaining, 10, "not written back yet");
        ledger.flush().await.unwrap();
        assert_eq!(stored().await.remaining, 6);
        // The counter is gone, as after a restart without persistence.
        cleanup(&prefix).await;
        let after = stored().await;
        let spent = ledger.spend_for(id, after).await.unwrap();
        assert_eq!(spent, CreditSpend::Spent { remaining: 5 });
        cleanup(&prefix).await;
    }

    /// Records the key changes a store publishes.
    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<auth_core::store::KeyChange>>);

    impl auth_core::store::ChangeListener for Seen {
        fn on_change(&self, change: &auth_core::store::KeyChange) {
            self.0.lock().unwrap().push(change.clone());
        }
    }

    /// A write-back publishes no key change (every instance would drop its
    /// cached key and pay a store read and argon2) and never raises the
    /// stored count.
    #[tokio::test]
    async fn a_write_back_publishes_nothing_and_never_raises_the_count() {
        let f = Fixture::new();
        let Some(redis) =
            redis_store("a_write_back_publishes_nothing_and_never_raises_the_count").await
        else {
            return;
        };
        let prefix = redis.prefix().to_owned();
        let (_, id) = f.key("alice", credits(10)).await;
        let ledger = CreditLedger::redis(redis, f.store.clone(), Duration::from_secs(3600));
        let stored = || async { f.store.get(id).await.unwrap().unwrap().credits.unwrap() };
        let initial = stored().await;
        let seen = Arc::new(Seen::default());
        let listener: Arc<dyn auth_core::store::ChangeListener> = seen.clone();
        f.store.changes().subscribe(Arc::downgrade(&listener));
        ledger.spend_for(id, initial).await.unwrap();
        ledger.flush().await.unwrap();
        assert_eq!(stored().await.remaining, 9);
        assert!(seen.0.lock().unwrap().is_empty(), "published a change");
        // Lowered meanwhile by another writer: a higher Redis count does not
        // raise it back.
        f.store.lower_credits(id, 2).await.unwrap();
        ledger.spend_for(id, initial).await.unwrap();
        ledger.flush().await.unwrap();
        assert_eq!(stored().await.remaining, 2);
        assert!(seen.0.lock().unwrap().is_empty(), "published a change");
        cleanup(&prefix).await;
    }
}
