//! Property tests: the store behaves exactly like a textbook token bucket.
//!
//! The reference model keeps an integer token count and the time up to which
//! refill has been credited; a token is added every `interval`, up to the
//! capacity. The store (GCRA over one integer) must agree with it on every
//! decision, on the tokens left, on `Retry-After` and on the time until full,
//! for any sequence of (time step, key, cost).

use std::time::Duration;

use auth_ratelimit::{Decision, FakeClock, MemoryStore, Quota};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Model {
    capacity: u64,
    interval: u64,
    tokens: u64,
    /// Time up to which refill has been credited.
    credited: u64,
}

impl Model {
    fn new(q: &Quota) -> Self {
        Self {
            capacity: u64::from(q.burst()),
            interval: q.interval().as_nanos() as u64,
            tokens: u64::from(q.burst()),
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

fn observed(d: &Decision) -> (bool, u64, Option<u64>, u64) {
    (
        d.is_allowed(),
        u64::from(d.remaining()),
        d.retry_after().map(|r| r.as_nanos() as u64),
        d.reset().as_nanos() as u64,
    )
}

fn quota() -> impl Strategy<Value = Quota> {
    (1u32..20, 1u64..5_000).prop_map(|(burst, interval)| {
        Quota::every(Duration::from_nanos(interval)).with_burst(burst)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_matches_token_bucket_model(
        q in quota(),
        steps in prop::collection::vec((0u64..12_000, 0usize..3, 0u64..25), 1..200),
    ) {
        let clock = FakeClock::new();
        let store = MemoryStore::<usize>::with_clock(clock.clone());
        let mut models = vec![Model::new(&q); 3];
        let mut now = 0;
        for (dt, key, cost) in steps {
            now += dt;
            clock.set_nanos(now);
            let got = observed(&store.check(&key, &q, cost as u32));
            let want = models[key].take(now, cost);
            prop_assert_eq!(got, want, "t={} key={} cost={}", now, key, cost);
        }
    }

    /// Over any long run at any request pattern, admitted tokens never exceed
    /// burst + elapsed / interval (no drift, no extra token).
    #[test]
    fn never_more_than_burst_plus_refill(
        q in quota(),
        steps in prop::collection::vec((0u64..3_000, 1u32..4), 1..500),
    ) {
        let clock = FakeClock::new();
        let store = MemoryStore::<u8>::with_clock(clock.clone());
        let mut admitted = 0u64;
        let mut now = 0u64;
        for (dt, cost) in steps {
            now += dt;
            clock.set_nanos(now);
            if store.check(&0, &q, cost).is_allowed() {
                admitted += u64::from(cost.min(q.burst()));
            }
        }
        let interval = q.interval().as_nanos() as u64;
        prop_assert!(admitted <= u64::from(q.burst()) + now / interval);
    }
}
