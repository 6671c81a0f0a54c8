//! A key's own rate limit tightens its rule's quota in burst and in rate
//! alike: a slower but burstier limit brings the key no more requests at
//! once than keys without one.

use std::num::NonZeroU32;

use auth_core::{
    policy::KeyPolicy, policy::KeyRateLimit, MemoryKeyStore, NewKey, Principal, ScopeSet,
};
use auth_ratelimit::{FakeClock, Quota, RateLimiter, Rule};
use auth_tower::AuthLayer;
use axum::{body::Body, routing::get, Router};
use http::{Request, StatusCode};
use keygate_test_support::fixtures;
use tower::ServiceExt;

/// How many requests in a row pass before the first 429 (at most `max`).
async fn passes(app: &Router, token: &str, max: u32) -> u32 {
    for n in 0..max {
        let req = Request::get("/")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        if app.clone().oneshot(req).await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            return n;
        }
    }
    max
}

fn own(limit: u32, period_seconds: u32) -> KeyPolicy {
    KeyPolicy::default().rate_limit(KeyRateLimit::new(
        NonZeroU32::new(limit).unwrap(),
        NonZeroU32::new(period_seconds).unwrap(),
    ))
}

#[tokio::test]
async fn a_slower_but_burstier_own_limit_gets_no_more_than_the_tier() {
    let store = std::sync::Arc::new(MemoryKeyStore::new());
    let issuer = fixtures::issuer(store.clone());
    // The free tier: 100 an hour. The clock never moves: no token comes back.
    let limiter = RateLimiter::builder()
        .rule(Rule::per_key("tier", Quota::per_hour(100)).key_quota())
        .clock(FakeClock::new())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(limiter.layer())
        .layer(AuthLayer::builder(fixtures::verifier(store)).build());
    let key = |policy: KeyPolicy| {
        let issuer = issuer.clone();
        async move {
            let new = NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty()).policy(policy);
            let issued = issuer.issue(new).await.unwrap();
            issued.token.expose_secret().to_owned()
        }
    };
    let plain = key(KeyPolicy::default()).await;
    // 5000 per 200 000 s is a lower rate than 100 an hour, with a burst of 5000.
    let bursty = key(own(5000, 200_000)).await;
    let tight = key(own(5, 60)).await;
    assert_eq!(passes(&app, &plain, 130).await, 100, "the tier");
    assert_eq!(
        passes(&app, &bursty, 130).await,
        100,
        "the tier's burst, not the key's"
    );
    assert_eq!(passes(&app, &tight, 130).await, 5, "the key's own, tighter");
}
