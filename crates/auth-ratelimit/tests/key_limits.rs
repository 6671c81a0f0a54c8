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
    audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, policy::Credits, policy::KeyPolicy,
    policy::KeyRateLimit, AuthContext, KeyIssuer, KeyStore, MemoryKeyStore, NewKey, Principal,
    ScopeSet, Verifier,
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

/// Credits leased in batches: `n` instances on one key store, each with its
/// own lease, never serve more than the store had, whatever the number of
/// instances.
fn leasing(f: &Fixture) -> RateLimiter {
    RateLimiter::builder()
        .rule(Rule::per_key("key", Quota::per_minute(1_000_000)))
        .credits(f.store.clone())
        .lease_credits(Duration::from_secs(3600))
        .clock(FakeClock::new())
        .build()
        .unwrap()
}

/// `remaining = 50`, three instances hammered at once: exactly 50 served,
/// never more; the store agrees once the leases are given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_never_serve_more_than_remaining() {
    const N: u64 = 50;
    let f = Fixture::new();
    let limiters = [leasing(&f), leasing(&f), leasing(&f)];
    let apps: Vec<Router> = limiters.iter().map(|l| f.app(l)).collect();
    let (token, id) = f.key("alice", credits(N)).await;
    let tasks: Vec<_> = (0..3 * N)
        .map(|i| {
            let app = apps[(i % 3) as usize].clone();
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
    assert!(ok <= N, "served {ok} of {N} credits");
    // Whatever is still leased is served by its instance, and no more.
    for app in &apps {
        ok += u64::from(passes(app, &token, 100).await);
    }
    assert_eq!(ok, N);
    for l in &limiters {
        l.credits().unwrap().flush().await.unwrap();
        assert_eq!(l.credits().unwrap().leased_credits(), 0);
    }
    let record = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(record.credits.unwrap().remaining, 0);
}

/// An instance leases a batch and serves it with no store write per
/// request; what it did not spend goes back to the store on flush.
#[tokio::test]
async fn leases_take_batches_and_give_back_what_is_unspent() {
    let f = Fixture::new();
    let limiter = leasing(&f);
    let app = f.app(&limiter);
    let (token, id) = f.key("alice", credits(1000)).await;
    let stored = || async { f.store.get(id).await.unwrap().unwrap().credits.unwrap() };
    assert_eq!(status(&app, &token).await, StatusCode::OK);
    // One lease of 1000/16 = 62 (at most 64) was taken in one statement.
    assert_eq!(stored().await.remaining, 1000 - 62);
    for _ in 0..10 {
        assert_eq!(status(&app, &token).await, StatusCode::OK);
    }
    assert_eq!(stored().await.remaining, 1000 - 62, "served from the lease");
    let ledger = limiter.credits().unwrap();
    assert_eq!(ledger.leased_credits(), 62 - 11);
    ledger.flush().await.unwrap();
    assert_eq!(stored().await.remaining, 1000 - 11);
    assert_eq!(ledger.leased_credits(), 0);
}

/// An administrator setting a key's credits drops every lease taken before:
/// the new count is what is served, not the new count plus old leases.
#[tokio::test]
async fn setting_credits_drops_older_leases() {
    let f = Fixture::new();
    let limiter = leasing(&f);
    let app = f.app(&limiter);
    let (token, id) = f.key("alice", credits(1000)).await;
    assert_eq!(status(&app, &token).await, StatusCode::OK);
    assert!(limiter.credits().unwrap().leased_credits() > 0);
    let later = OffsetDateTime::now_utc() + time::Duration::seconds(1);
    f.store
        .update(
            id,
            &auth_core::store::KeyUpdate::default().credits(Some(Credits::new(2, later))),
        )
        .await
        .unwrap();
    keygate_test_support::eventually("the verifier to see the new credits", || async {
        f.verifier
            .verify(&token)
            .await
            .unwrap()
            .credits()
            .is_some_and(|c| c.remaining == 2)
    })
    .await;
    assert_eq!(passes(&app, &token, 20).await, 2);
    limiter.credits().unwrap().flush().await.unwrap();
    let record = f.store.get(id).await.unwrap().unwrap();
    assert_eq!(
        record.credits.unwrap().remaining,
        0,
        "an old lease came back"
    );
}

/// Rotating right after spending: the replacement gets what is left, not
/// the count as it stood before the spends reached the store.
#[tokio::test]
async fn rotation_right_after_spending_carries_what_is_left() {
    for initial in [5, 1000] {
        let f = Fixture::new();
        let limiter = leasing(&f);
        let app = f.app(&limiter);
        let (token, id) = f.key("alice", credits(initial)).await;
        for _ in 0..3 {
            assert_eq!(status(&app, &token).await, StatusCode::OK);
        }
        let replacement = f.issuer.rotate(id, Duration::ZERO).await.unwrap();
        let carried = replacement.record.credits.unwrap().remaining;
        let stored = f.store.get(replacement.record.id).await.unwrap().unwrap();
        assert_eq!(stored.credits.unwrap().remaining, carried);
        assert!(
            carried <= initial - 3,
            "{carried} of {initial} after 3 spent"
        );
        // The old key is refused; the replacement serves what it carries.
        assert_eq!(
            status(&app, &token).await,
            StatusCode::UNAUTHORIZED,
            "the old key still works"
        );
        let new_token = replacement.token.expose_secret().to_owned();
        if initial == 5 {
            assert_eq!(passes(&app, &new_token, 10).await, 2);
        }
    }
}

#[cfg(feature = "redis")]
mod shared {
    use auth_ratelimit::RedisStore;

    use super::*;
    use crate::support::{cleanup, redis_store, OwnRedis};

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
        assert!(ok <= N);
        for app in &apps {
            ok += u64::from(passes(app, &token, 100).await);
        }
        assert_eq!(ok, N);
        one.credits().unwrap().flush().await.unwrap();
        two.credits().unwrap().flush().await.unwrap();
        let record = f.store.get(id).await.unwrap().unwrap();
        assert_eq!(record.credits.unwrap().remaining, 0);
        cleanup(&prefix).await;
    }

    /// Spend 3 of 5, write everything back, then Redis loses its data: the
    /// key serves 2 more, not 5. With a lease still held at the loss, the
    /// total is still 5 at most.
    #[tokio::test]
    async fn redis_losing_its_data_gives_no_credit_back() {
        let test = "redis_losing_its_data_gives_no_credit_back";
        let Some(own) = OwnRedis::start(test).await else {
            return;
        };
        for flush_leases_first in [true, false] {
            let f = Fixture::new();
            let first = limiter(&f, own.store(test).await);
            let app = f.app(&first);
            let (token, id) = f.key("alice", credits(5)).await;
            for _ in 0..3 {
                assert_eq!(status(&app, &token).await, StatusCode::OK);
            }
            if flush_leases_first {
                first.credits().unwrap().flush().await.unwrap();
                let stored = f.store.get(id).await.unwrap().unwrap();
                assert_eq!(stored.credits.unwrap().remaining, 2);
            }
            own.flush_all().await;
            // Another instance, started after the loss, and this one.
            let fresh = limiter(&f, own.store(test).await);
            let served = passes(&f.app(&fresh), &token, 10).await + passes(&app, &token, 10).await;
            assert_eq!(served, 2, "spent credits came back");
        }
    }
}
