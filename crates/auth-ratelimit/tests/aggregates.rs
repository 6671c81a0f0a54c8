//! Buckets a client cannot multiply: IPv6 clients are also counted per
//! site (/48), and a key acting on behalf of users is also counted itself.

use std::net::{IpAddr, SocketAddr};

use auth_core::{AuthContext, KeyId, Principal, ScopeSet};
use auth_ratelimit::{clock::FakeClock, FailedAuthLimiter, Quota, RateLimiter, Rule};
use http::Request;

fn from(ip: IpAddr) -> Request<()> {
    let mut req = Request::get("/").body(()).unwrap();
    req.extensions_mut().insert(SocketAddr::new(ip, 4000));
    req
}

/// Client network `n` of the site 2001:db8:7::/48 (a /64 each).
fn in_site(n: u16) -> IpAddr {
    format!("2001:db8:7:{n:x}::1").parse().unwrap()
}

async fn admitted(limiter: &RateLimiter, reqs: impl IntoIterator<Item = Request<()>>) -> u32 {
    let mut n = 0;
    for req in reqs {
        n += u32::from(limiter.check(&req).await.is_ok());
    }
    n
}

#[tokio::test]
async fn a_48_gets_16_times_one_64s_quota_not_65536_times() {
    let per_ip = || Rule::per_ip("ip", Quota::per_minute(2));
    let limiter = RateLimiter::builder()
        .rule(per_ip())
        .clock(FakeClock::new())
        .build()
        .unwrap();
    // 40 client networks of one site, 3 requests each.
    let reqs = (0..40).flat_map(|n| (0..3).map(move |_| from(in_site(n))));
    assert_eq!(admitted(&limiter, reqs).await, 2 * 16);
    // Another site, and IPv4 clients, are not affected.
    let other: IpAddr = "2001:db8:8::1".parse().unwrap();
    assert_eq!(admitted(&limiter, (0..3).map(|_| from(other))).await, 2);
    let v4: IpAddr = "192.0.2.9".parse().unwrap();
    assert_eq!(admitted(&limiter, (0..3).map(|_| from(v4))).await, 2);

    // The multiplier is configurable; 0 turns the aggregate off.
    let off = RateLimiter::builder()
        .rule(per_ip())
        .ipv6_site(48, 0)
        .clock(FakeClock::new())
        .build()
        .unwrap();
    let reqs = (0..40).flat_map(|n| (0..3).map(move |_| from(in_site(n))));
    assert_eq!(admitted(&off, reqs).await, 2 * 40);
    let wider = RateLimiter::builder()
        .rule(per_ip())
        .ipv6_site(48, 4)
        .clock(FakeClock::new())
        .build()
        .unwrap();
    let reqs = (0..40).flat_map(|n| (0..3).map(move |_| from(in_site(n))));
    assert_eq!(admitted(&wider, reqs).await, 2 * 4);
}

#[tokio::test]
async fn failed_authentication_is_also_counted_per_site() {
    let failures = FailedAuthLimiter::builder(Quota::per_minute(2))
        .clock(FakeClock::new())
        .build();
    // Each client network fails twice: its own limit, never past it.
    for n in 0..16 {
        for _ in 0..2 {
            assert!(failures.check(in_site(n)).await.is_ok());
            failures.record_failure(in_site(n)).await;
        }
    }
    // The site has used its 16 × 2: a fresh /64 of it is refused too.
    let res = failures.check(in_site(1000)).await.unwrap_err();
    assert_eq!(res.status(), 429);
    assert!(failures
        .check("2001:db8:8::1".parse().unwrap())
        .await
        .is_ok());
}

/// A key acting on behalf of users (impersonation) is charged in each rule
/// by user as well: spreading its requests over many users' buckets gets it
/// no more than one user's quota.
#[tokio::test]
async fn impersonation_also_charges_the_acting_key() {
    let limiter = RateLimiter::builder()
        .rule(Rule::per_user("user", Quota::per_minute(3)))
        .clock(FakeClock::new())
        .build()
        .unwrap();
    let admin = KeyId::from_u64(1);
    let acting = |subject: &str| {
        let ctx = AuthContext::for_key(
            admin,
            "support",
            Principal::user("admin"),
            ScopeSet::empty(),
        )
        .with_subject(Principal::user(subject), &ScopeSet::empty());
        let mut req = Request::get("/").body(()).unwrap();
        req.extensions_mut().insert(ctx);
        req
    };
    let reqs = (0..10).map(|n| acting(&format!("student{n}")));
    assert_eq!(admitted(&limiter, reqs).await, 3);
    // The users' own requests still have their own buckets (less what the
    // key spent on their behalf).
    let own = |user: &str| {
        let ctx = AuthContext::for_key(
            KeyId::from_u64(2),
            "own",
            Principal::user(user),
            ScopeSet::empty(),
        );
        let mut req = Request::get("/").body(()).unwrap();
        req.extensions_mut().insert(ctx);
        req
    };
    assert_eq!(admitted(&limiter, (0..5).map(|_| own("student9"))).await, 3);
    assert_eq!(admitted(&limiter, (0..5).map(|_| own("student0"))).await, 2);
}
