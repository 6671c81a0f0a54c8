//! The failed-authentication limiter in front of a real `AuthLayer`, in
//! process (`oneshot`), and shared through Redis when `REDIS_URL` is set
//! (unset: the Redis test says so on stderr and returns, or fails under
//! `CI=true`).

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use auth_core::{
    audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, response::ErrorFormat, KeyIssuer,
    MemoryKeyStore, NewKey, Principal, ScopeSet, Verifier,
};
use auth_ratelimit::{FailedAuthLimiter, FakeClock, Quota, RateLimiter, Rule, TrustedProxies};
use auth_tower::AuthLayer;
use axum::{body::Body, extract::ConnectInfo, http::StatusCode, routing::get, Router};
use http::Request;
use keygate_test_support::fixtures;
use tower::ServiceExt;

const ALICE_IP: [u8; 4] = [192, 0, 2, 10];
const MALLORY_IP: [u8; 4] = [203, 0, 113, 66];

struct Fixture {
    issuer: KeyIssuer,
    verifier: Verifier,
}

impl Fixture {
    fn new() -> Self {
        let store = Arc::new(MemoryKeyStore::new());
        Self {
            issuer: fixtures::issuer(store.clone()),
            verifier: fixtures::verifier(store),
        }
    }

    async fn token(&self) -> String {
        let key = self
            .issuer
            .issue(NewKey::new(
                Principal::user("alice"),
                "ci",
                ScopeSet::parse(["read"]).unwrap(),
            ))
            .await
            .unwrap();
        key.token.expose_secret().to_owned()
    }

    /// `/items` (200 when authenticated) and `/forbidden` (always 403),
    /// behind the auth layer, behind the failed-authentication limiter.
    fn app(&self, failures: &FailedAuthLimiter) -> Router {
        Router::new()
            .route("/items", get(|| async { "items" }))
            .route("/forbidden", get(|| async { StatusCode::FORBIDDEN }))
            .layer(
                AuthLayer::builder(self.verifier.clone())
                    .error_format(ErrorFormat::Envelope)
                    .build(),
            )
            .layer(failures.layer())
    }
}

fn get_from(path: &str, ip: [u8; 4], token: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
    req
}

async fn status(app: &Router, req: Request<Body>) -> StatusCode {
    app.clone().oneshot(req).await.unwrap().status()
}

/// A well-formed token for a key id that does not exist.
const FORGED: &str = "st_0000000000000000000000000000000000000000000000000000";

#[tokio::test]
async fn bad_tokens_from_one_address_get_429_and_others_are_unaffected() {
    let f = Fixture::new();
    let alice = f.token().await;
    let clock = FakeClock::new();
    let failures = FailedAuthLimiter::builder(Quota::per_minute(5))
        .error_format(ErrorFormat::Envelope)
        .clock(clock.clone())
        .build();
    let app = f.app(&failures);

    for bad in [Some("st_nope"), None, Some(FORGED), Some("garbage"), None] {
        assert_eq!(status(&app, get_from("/items", MALLORY_IP, bad)).await, 401);
    }
    // The sixth attempt is refused before authentication, in the format.
    let res = app
        .clone()
        .oneshot(get_from("/items", MALLORY_IP, Some("st_nope")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "12");
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // The blocked address is blocked for every request, valid ones included.
    assert_eq!(
        status(&app, get_from("/items", MALLORY_IP, Some(&alice))).await,
        429
    );

    // Another address still gets its own answers: 401 for a bad token, 200
    // for a good one.
    assert_eq!(
        status(&app, get_from("/items", [198, 51, 100, 1], Some("st_nope"))).await,
        401
    );
    assert_eq!(
        status(&app, get_from("/items", ALICE_IP, Some(&alice))).await,
        200
    );

    // One interval later, one more attempt is allowed.
    clock.advance(Duration::from_secs(12));
    assert_eq!(
        status(&app, get_from("/items", MALLORY_IP, Some(&alice))).await,
        200
    );
}

/// No collateral lockout: while an address is over the limit, a key the
/// verifier's cache already knows is still served from it; guesses, keys
/// that would need the store or argon2, and requests without a credential
/// still get 429.
#[tokio::test]
async fn a_guesser_behind_a_shared_address_does_not_lock_out_cached_keys() {
    const SHARED: [u8; 4] = [127, 0, 0, 1];
    let f = Fixture::new();
    let (alice, uncached) = (f.token().await, f.token().await);
    let failures = FailedAuthLimiter::builder(Quota::per_minute(30))
        .clock(FakeClock::new())
        .build();
    let auth = AuthLayer::new(f.verifier.clone());
    let check = auth.clone();
    let app = Router::new()
        .route("/items", get(|| async { "items" }))
        .route(
            "/login",
            axum::routing::post(|| async { StatusCode::UNAUTHORIZED }),
        )
        .layer(auth)
        .layer(
            failures
                .layer()
                .pass_cached(move |req| check.verifies_from_cache(req)),
        );
    // Alice's key is in use behind the shared address (so it is cached).
    assert_eq!(
        status(&app, get_from("/items", SHARED, Some(&alice))).await,
        200
    );
    // A guesser behind the same address.
    let mut answers = Vec::new();
    for i in 0..32 {
        let guess = format!("st_guess{i}");
        answers.push(status(&app, get_from("/items", SHARED, Some(&guess))).await);
    }
    assert_eq!(answers[..30], [StatusCode::UNAUTHORIZED; 30]);
    assert_eq!(answers[30..], [StatusCode::TOO_MANY_REQUESTS; 2]);

    // Alice is still served.
    for _ in 0..3 {
        assert_eq!(
            status(&app, get_from("/items", SHARED, Some(&alice))).await,
            200
        );
    }
    // Everything a guess looks like is refused before authentication: an
    // unknown id, a valid key this instance has not verified yet (its check
    // would run argon2), Alice's id with a wrong secret, no credential, and
    // a password form.
    let mut wrong_secret = alice.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == 'a' { 'b' } else { 'a' });
    for token in [
        Some(FORGED),
        Some(uncached.as_str()),
        Some(wrong_secret.as_str()),
        None,
    ] {
        assert_eq!(
            status(&app, get_from("/items", SHARED, token)).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{token:?}"
        );
    }
    let mut login = Request::post("/login").body(Body::empty()).unwrap();
    login
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((SHARED, 40_000))));
    assert_eq!(status(&app, login).await, StatusCode::TOO_MANY_REQUESTS);
    // The key not yet verified works from any other address, and is then
    // served from the shared one too.
    assert_eq!(
        status(&app, get_from("/items", ALICE_IP, Some(&uncached))).await,
        200
    );
    assert_eq!(
        status(&app, get_from("/items", SHARED, Some(&uncached))).await,
        200
    );
}

#[tokio::test]
async fn only_401_charges_the_address() {
    let f = Fixture::new();
    let alice = f.token().await;
    let failures = FailedAuthLimiter::builder(Quota::per_minute(2))
        .clock(FakeClock::new())
        .build();
    let app = f.app(&failures);
    for _ in 0..20 {
        assert_eq!(
            status(&app, get_from("/items", ALICE_IP, Some(&alice))).await,
            200
        );
        assert_eq!(
            status(&app, get_from("/forbidden", ALICE_IP, Some(&alice))).await,
            403
        );
    }
    assert!(failures.memory().is_empty(), "no failure was recorded");
    for _ in 0..2 {
        assert_eq!(status(&app, get_from("/items", ALICE_IP, None)).await, 401);
    }
    assert_eq!(
        status(&app, get_from("/items", ALICE_IP, Some(&alice))).await,
        429
    );
}

#[tokio::test]
async fn a_flood_of_failures_counts_every_attempt_up_to_two_windows() {
    let clock = FakeClock::new();
    let failures = FailedAuthLimiter::builder(Quota::per_minute(2))
        .clock(clock.clone())
        .build();
    // Concurrent guesses all pass the check before any is answered; each
    // one still counts when it is refused.
    let ip = SocketAddr::from((MALLORY_IP, 1)).ip();
    for _ in 0..50 {
        failures.check(ip).await.unwrap();
    }
    for _ in 0..50 {
        failures.record_failure(ip).await;
    }
    let res = failures.check(ip).await.unwrap_err();
    // Capped at two windows of debt: blocked for 60 s + one interval.
    assert_eq!(res.headers()["retry-after"], "90");
    clock.advance(Duration::from_secs(89));
    assert!(failures.check(ip).await.is_err());
    clock.advance(Duration::from_secs(1));
    assert!(failures.check(ip).await.is_ok());
}

#[tokio::test]
async fn websocket_handshakes_with_bad_credentials_count() {
    let f = Fixture::new();
    let failures = FailedAuthLimiter::builder(Quota::per_minute(2))
        .clock(FakeClock::new())
        .build();
    let app = f.app(&failures);
    let handshake = |token: &str| {
        let mut req = Request::get("/items")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", format!("Bearer, {token}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((MALLORY_IP, 1))));
        req
    };
    assert_eq!(status(&app, handshake("st_bad")).await, 401);
    assert_eq!(status(&app, handshake(FORGED)).await, 401);
    assert_eq!(status(&app, handshake("st_bad")).await, 429);
}

#[tokio::test]
async fn the_address_is_resolved_through_trusted_proxies() {
    let f = Fixture::new();
    let failures = FailedAuthLimiter::builder(Quota::per_minute(1))
        .trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
        .clock(FakeClock::new())
        .build();
    let app = f.app(&failures);
    let via_proxy = |client: &str| {
        let mut req = Request::get("/items")
            // The client-written left part is ignored.
            .header("x-forwarded-for", format!("6.6.6.6, {client}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 1))));
        req
    };
    assert_eq!(status(&app, via_proxy("203.0.113.5")).await, 401);
    assert_eq!(status(&app, via_proxy("203.0.113.5")).await, 429);
    // Behind the same proxy, another client is a different address.
    assert_eq!(status(&app, via_proxy("203.0.113.6")).await, 401);
}

/// One resolution for the whole stack: the failed-authentication limiter
/// resolves the client through the trusted proxies and leaves it in the
/// request, so the auth layer (configured with no proxy of its own) audits
/// it and the per-IP rate limit inside counts it.
#[tokio::test]
async fn the_audit_log_and_the_rate_limiter_use_the_limiters_resolution() {
    let f = Fixture::new();
    let alice = f.token().await;
    let audit = Arc::new(MemoryAuditLog::new(10));
    let failures = FailedAuthLimiter::builder(Quota::per_minute(5))
        .trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
        .clock(FakeClock::new())
        .build();
    let limiter = RateLimiter::builder()
        .rule(Rule::per_ip("ip", Quota::per_minute(1)))
        .clock(FakeClock::new())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/items", get(|| async { "items" }))
        .layer(limiter.layer())
        .layer(
            AuthLayer::builder(f.verifier.clone())
                .audit(audit.clone())
                .build(),
        )
        .layer(failures.layer());
    let via_proxy = |client: &str, forged: &str| {
        let mut req = Request::get("/items")
            .header("authorization", format!("Bearer {alice}"))
            .header("x-forwarded-for", format!("{forged}, {client}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 1))));
        req
    };
    assert_eq!(status(&app, via_proxy("203.0.113.5", "6.6.6.6")).await, 200);
    // The same client, whatever it writes on the left: its bucket is empty.
    assert_eq!(status(&app, via_proxy("203.0.113.5", "7.7.7.7")).await, 429);
    // Another client behind the same proxy has its own bucket.
    assert_eq!(status(&app, via_proxy("203.0.113.6", "6.6.6.6")).await, 200);
    let page = audit.query(&AuditQuery::default().limit(10)).await.unwrap();
    let mut ips: Vec<_> = page.events.iter().filter_map(|e| e.client_ip).collect();
    ips.sort();
    let expected: Vec<std::net::IpAddr> = ["203.0.113.5", "203.0.113.5", "203.0.113.6"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ips, expected);
}

#[cfg(feature = "redis")]
mod redis_shared {
    use auth_ratelimit::RedisStore;

    use super::*;
    use crate::support::unique_prefix;

    #[tokio::test]
    async fn two_instances_share_the_count_through_redis() {
        let test = "two_instances_share_the_count_through_redis";
        let Some(url) = keygate_test_support::services::redis_url(test) else {
            return;
        };
        if crate::support::redis_store(test).await.is_none() {
            return;
        }
        let prefix = unique_prefix("failed-auth");
        let limiter = || {
            let store = RedisStore::open(&url)
                .unwrap()
                .with_prefix(prefix.clone())
                .with_timeout(Duration::from_secs(5));
            FailedAuthLimiter::builder(Quota::per_minute(4))
                .redis(store)
                .on_store_error(auth_ratelimit::OnStoreError::FailClosed)
                .build()
        };
        let f = Fixture::new();
        let alice = f.token().await;
        let (one, two) = (f.app(&limiter()), f.app(&limiter()));
        for app in [&one, &two, &one, &two] {
            assert_eq!(
                status(app, get_from("/items", MALLORY_IP, Some("st_x"))).await,
                401
            );
        }
        // Four failures spread over two instances exhaust the address on
        // both: at once on the one that charged the fourth, within 100 ms
        // on the other (the local mirror of addresses over the limit).
        for app in [&one, &two] {
            keygate_test_support::eventually("both instances to refuse the address", || async {
                status(app, get_from("/items", MALLORY_IP, Some(&alice))).await == 429
            })
            .await;
            let res = app
                .clone()
                .oneshot(get_from("/items", MALLORY_IP, Some(&alice)))
                .await
                .unwrap();
            assert_eq!(res.status(), 429);
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=15).contains(&retry), "retry-after {retry}");
        }
        assert_eq!(
            status(&two, get_from("/items", ALICE_IP, Some(&alice))).await,
            200
        );
        // Clean up the one key this test made.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        // One bucket, for the one failing address, and the stream telling
        // the instances about it.
        assert_eq!(keys.len(), 2, "{keys:?}");
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
