//! One suite for every [`RateLimitStore`]: the in-memory store and (feature
//! `redis`) the Redis store, both on a [`FakeClock`].
//!
//! * The model test: the store behaves exactly like a textbook token
//!   bucket. The reference model keeps an integer token count and the time
//!   up to which refill has been credited; a token is added every
//!   `interval`, up to the capacity. The store (GCRA over one integer, in
//!   Rust or in Lua) must agree with it on every decision, on the tokens
//!   left, on `Retry-After` and on the time until full, for any sequence of
//!   (time step, key, cost).
//! * Burst and refill, weighted requests, concurrency, all-or-nothing checks
//!   of several buckets, and charges past an empty bucket.
//!
//! Model time is counted in units: a nanosecond in memory, a minute on Redis
//! (which keeps whole microseconds, and expires a key in real time once its
//! bucket would be full: a minute of model time keeps every key alive for
//! the test's duration).

mod support;

use std::{future::Future, sync::Arc, time::Duration};

use auth_ratelimit::{
    clock::FakeClock,
    store::{Bucket, Decision, RateLimitStore},
    MemoryStore, Quota,
};
use proptest::prelude::*;

/// A store under test, its clock, and the length of a model time unit.
struct Harness {
    store: Arc<dyn RateLimitStore>,
    clock: FakeClock,
    unit: u64,
    /// Deletes what the test left in a shared store.
    cleanup: Option<String>,
}

impl Harness {
    async fn check(&self, key: &str, q: Quota, cost: u32) -> Decision {
        self.check_all(&[Bucket::new("t", key, q, cost)]).await[0]
    }

    async fn check_all(&self, buckets: &[Bucket<'_>]) -> Vec<Decision> {
        let d = self.store.check_all(buckets).await.expect("store answers");
        assert_eq!(d.len(), buckets.len());
        d.into_vec()
    }

    async fn charge(&self, key: &str, q: Quota, cost: u32, max_debt: Duration) -> Decision {
        self.store
            .charge(&Bucket::new("f", key, q, cost), max_debt)
            .await
            .expect("store answers")
    }

    fn advance(&self, units: u64) {
        self.clock.advance_nanos(units * self.unit);
    }

    fn secs(&self, n: u64) -> Duration {
        Duration::from_nanos(n * self.unit)
    }

    async fn finish(self) {
        #[cfg(feature = "redis")]
        if let Some(prefix) = &self.cleanup {
            support::cleanup(prefix).await;
        }
    }
}

async fn memory() -> Option<Harness> {
    let clock = FakeClock::new();
    Some(Harness {
        store: Arc::new(MemoryStore::for_limiter().clock(clock.clone())),
        clock,
        unit: 1,
        cleanup: None,
    })
}

#[cfg(feature = "redis")]
async fn redis() -> Option<Harness> {
    let clock = FakeClock::new();
    let store = support::redis_store("suite").await?.clock(clock.clone());
    Some(Harness {
        cleanup: Some(store.prefix().to_owned()),
        store: Arc::new(store),
        clock,
        unit: 60_000_000_000,
    })
}

/// Runs `f` on its own runtime (for the property tests, which are sync).
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ---- The model -------------------------------------------------------------

#[derive(Clone, Debug)]
struct Model {
    capacity: u64,
    interval: u64,
    tokens: u64,
    /// Time up to which refill has been credited.
    credited: u64,
}

impl Model {
    fn new(burst: u32, interval: u64) -> Self {
        Self {
            capacity: u64::from(burst),
            interval,
            tokens: u64::from(burst),
            credited: 0,
        }
    }

    fn refill(&mut self, now: u64) {
        if self.tokens == self.capacity {
            self.credited = now;
            return;
        }
        let n = (now - self.credited) / self.interval;
        self.tokens = (self.tokens + n).min(self.capacity);
        if self.tokens == self.capacity {
            self.credited = now;
        } else {
            self.credited += n * self.interval;
        }
    }

    /// (allowed, tokens left, retry after, time until full)
    fn take(&mut self, now: u64, cost: u64) -> (bool, u64, Option<u64>, u64) {
        self.refill(now);
        let cost = cost.min(self.capacity);
        let allowed = self.tokens >= cost;
        let retry = if allowed {
            self.tokens -= cost;
            None
        } else {
            Some((cost - self.tokens) * self.interval - (now - self.credited))
        };
        let partial = now - self.credited;
        let until_full = if self.tokens == self.capacity {
            0
        } else {
            (self.capacity - self.tokens) * self.interval - partial
        };
        (allowed, self.tokens, retry, until_full)
    }
}

/// What the store answered, in model units.
fn observed(d: &Decision, unit: u64) -> (bool, u64, Option<u64>, u64) {
    let units = |t: Duration| {
        let n = t.as_nanos() as u64;
        assert_eq!(n % unit, 0, "{t:?} is not a whole number of units");
        n / unit
    };
    (
        d.is_allowed(),
        u64::from(d.remaining()),
        d.retry_after().map(units),
        units(d.reset()),
    )
}

/// `burst` tokens, one every `interval` units.
fn quota(h: &Harness, burst: u32, interval: u64) -> Quota {
    Quota::every(Duration::from_nanos(interval * h.unit)).with_burst(burst)
}

async fn matches_token_bucket_model(
    h: Harness,
    (burst, interval): (u32, u64),
    steps: Vec<(u64, usize, u64)>,
) -> Result<(), TestCaseError> {
    let q = quota(&h, burst, interval);
    let mut models = vec![Model::new(burst, interval); 3];
    let mut now = 0;
    for (dt, key, cost) in steps {
        now += dt;
        h.advance(dt);
        let got = observed(&h.check(&key.to_string(), q, cost as u32).await, h.unit);
        let want = models[key].take(now, cost);
        prop_assert_eq!(got, want, "t={} key={} cost={}", now, key, cost);
    }
    h.finish().await;
    Ok(())
}

/// Over any run, admitted tokens never exceed burst + elapsed / interval.
async fn never_more_than_burst_plus_refill(
    h: Harness,
    (burst, interval): (u32, u64),
    steps: Vec<(u64, u32)>,
) -> Result<(), TestCaseError> {
    let q = quota(&h, burst, interval);
    let mut admitted = 0u64;
    let mut now = 0u64;
    for (dt, cost) in steps {
        now += dt;
        h.advance(dt);
        if h.check("0", q, cost).await.is_allowed() {
            admitted += u64::from(cost.min(burst));
        }
    }
    prop_assert!(admitted <= u64::from(burst) + now / interval);
    h.finish().await;
    Ok(())
}

// ---- Behaviour ---------------------------------------------------------------

/// 200 per hour: the burst, then one every 18 s, then full after an hour.
async fn seed_quota_burst_then_one_per_18_seconds(h: Harness) {
    let q = quota(&h, 200, 18);
    for i in 0..200 {
        let d = h.check("alice", q, 1).await;
        assert!(d.is_allowed(), "request {i}");
        assert_eq!(d.remaining(), 199 - i);
    }
    let d = h.check("alice", q, 1).await;
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after(), Some(h.secs(18)));
    assert_eq!(d.reset(), h.secs(3600));
    // Other users are untouched.
    assert_eq!(h.check("bob", q, 1).await.remaining(), 199);
    // One unit early: still refused, with the exact remaining wait.
    h.advance(17);
    assert_eq!(h.check("alice", q, 1).await.retry_after(), Some(h.secs(1)));
    h.advance(1);
    assert!(h.check("alice", q, 1).await.is_allowed());
    assert!(!h.check("alice", q, 1).await.is_allowed());
    // After an hour of silence, the whole burst is back.
    h.advance(3600);
    assert_eq!(h.check("alice", q, 1).await.remaining(), 199);
    h.finish().await;
}

async fn weighted_requests(h: Harness) {
    let q = quota(&h, 10, 6); // 10 tokens, one every 6 units
    assert_eq!(h.check("w", q, 5).await.remaining(), 5);
    assert_eq!(h.check("w", q, 5).await.remaining(), 0);
    let d = h.check("w", q, 5).await;
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after(), Some(h.secs(30)), "five tokens take 30");
    h.advance(12);
    let d = h.check("w", q, 5).await;
    assert_eq!(d.retry_after(), Some(h.secs(18)));
    assert_eq!(d.remaining(), 2);
    assert!(
        h.check("w", q, 2).await.is_allowed(),
        "cheaper requests fit"
    );
    // A cost above the capacity needs a full bucket rather than never passing.
    h.advance(60);
    assert!(h.check("w", q, 1000).await.is_allowed());
    assert!(!h.check("w", q, 1000).await.is_allowed());
    h.finish().await;
}

/// Concurrent tasks on one bucket admit exactly the burst.
async fn many_tasks_one_key_admit_exactly_the_quota(h: Harness) {
    let q = quota(&h, 777, 1000);
    let h = Arc::new(h);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                let mut n = 0u32;
                for _ in 0..50 {
                    n += u32::from(h.check("shared", q, 1).await.is_allowed());
                    tokio::task::yield_now().await;
                }
                n
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 777);
    if let Ok(h) = Arc::try_unwrap(h) {
        h.finish().await;
    }
}

/// A refusal by one bucket takes nothing from the others; the answers say
/// what each bucket holds.
async fn several_buckets_all_or_nothing(h: Harness) {
    let wide = quota(&h, 5, 12);
    let narrow = quota(&h, 2, 30);
    let both = |who: &'static str| {
        [
            Bucket::new("user", "alice", wide, 1),
            Bucket::new("ip", who, narrow, 1),
        ]
    };
    for left in [1, 0] {
        let d = h.check_all(&both("a")).await;
        assert!(d.iter().all(Decision::is_allowed));
        assert_eq!(d[1].remaining(), left);
    }
    let d = h.check_all(&both("a")).await;
    assert!(d[0].is_allowed(), "the user bucket could pass");
    assert!(!d[1].is_allowed());
    assert_eq!(d[0].remaining(), 3, "and nothing was taken from it");
    assert_eq!(d[1].retry_after(), Some(h.secs(30)));
    // Refused first, then the other would pass: still nothing taken.
    let d = h
        .check_all(&[
            Bucket::new("ip", "a", narrow, 1),
            Bucket::new("user", "alice", wide, 1),
        ])
        .await;
    assert!(!d[0].is_allowed());
    assert!(d[1].is_allowed());
    assert_eq!(d[1].remaining(), 3);
    // Another IP passes, from the same user bucket.
    let d = h.check_all(&both("b")).await;
    assert!(d.iter().all(Decision::is_allowed));
    assert_eq!(d[0].remaining(), 2);
    h.finish().await;
}

/// Charges count past an empty bucket, up to the debt cap; a cost of 0
/// only reads.
async fn charges_count_past_empty_up_to_the_cap(h: Harness) {
    let q = quota(&h, 3, 20); // tau 60
    let cap = h.secs(120);
    for left in [2, 1, 0] {
        let d = h.charge("ip", q, 1, cap).await;
        assert_eq!(d.is_allowed(), left > 0);
    }
    // Past the empty bucket, up to two windows of debt.
    for _ in 0..10 {
        h.charge("ip", q, 1, cap).await;
    }
    let d = h.charge("ip", q, 0, cap).await;
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after(), Some(h.secs(80)));
    assert_eq!(d.reset(), h.secs(120));
    h.advance(80);
    assert!(h.charge("ip", q, 0, cap).await.is_allowed());
    assert!(
        h.charge("other", q, 0, cap).await.is_allowed(),
        "a read charges nothing"
    );
    h.finish().await;
}

macro_rules! store_suite {
    ($store:ident, cases = $cases:expr) => {
        store_suite!(
            $store,
            cases = $cases,
            tests = [
                seed_quota_burst_then_one_per_18_seconds,
                weighted_requests,
                many_tasks_one_key_admit_exactly_the_quota,
                several_buckets_all_or_nothing,
                charges_count_past_empty_up_to_the_cap,
            ]
        );
    };
    ($store:ident, cases = $cases:expr, tests = [$($name:ident),* $(,)?]) => {
        mod $store {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(h) = super::$store().await {
                        super::$name(h).await;
                    }
                }
            )*

            fn bucket() -> impl Strategy<Value = (u32, u64)> {
                (1u32..20, 1u64..5_000)
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases($cases))]

                #[test]
                fn store_matches_token_bucket_model(
                    b in bucket(),
                    steps in prop::collection::vec((0u64..12_000, 0usize..3, 0u64..25), 1..200),
                ) {
                    block_on(async {
                        match super::$store().await {
                            Some(h) => matches_token_bucket_model(h, b, steps).await,
                            None => Ok(()),
                        }
                    })?;
                }

                #[test]
                fn store_never_admits_more_than_burst_plus_refill(
                    b in bucket(),
                    steps in prop::collection::vec((0u64..3_000, 1u32..4), 1..300),
                ) {
                    block_on(async {
                        match super::$store().await {
                            Some(h) => never_more_than_burst_plus_refill(h, b, steps).await,
                            None => Ok(()),
                        }
                    })?;
                }
            }
        }
    };
}

store_suite!(memory, cases = 256);
#[cfg(feature = "redis")]
store_suite!(redis, cases = 48);
