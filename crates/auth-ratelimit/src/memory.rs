//! The in-process store: one atomic integer per key in a lock-free map.
//!
//! # Hot path
//!
//! A check on a known key finds it in `papaya`'s map, which takes no lock
//! and writes no shared memory to read, then updates the key's state with a
//! compare-and-swap loop: the bucket's own word is the only cache line two
//! threads checking one key both write. There is no lock and no allocation.
//! (A sharded map's read lock is an atomic add on a word every reader of the
//! shard shares, so one key checked from two threads at once makes every
//! lookup a cache-line transfer; `papaya`'s lookups do not.)
//!
//! A bucket is dropped by first sealing its word (a compare-and-swap from
//! the value found full to a sentinel), then removing it: a check that
//! found the bucket just before sees the seal, and starts over on a fresh
//! bucket instead of writing into a dropped one. So no check is lost to a
//! sweep.
//!
//! # Bounded memory
//!
//! A bucket that has refilled completely holds no information (a missing key
//! *is* a full bucket), so it can be dropped at any time. The store does so:
//!
//! * **Idle sweep.** When a new key is inserted and at least
//!   [`sweep_interval`](MemoryStore::sweep_interval) has passed since the last
//!   sweep, every full bucket is dropped. Call [`MemoryStore::sweep`] from a
//!   background task if you want it on your own schedule.
//! * **Cap.** When a new key would be inserted while
//!   [`max_keys`](MemoryStore::max_keys) keys are tracked, the store first drops
//!   every full bucket; if that leaves more than three quarters of the cap, it
//!   then drops the buckets *closest to full* (the least recent debt) until a
//!   quarter of the cap is free. Only then is the new key inserted. Forgetting
//!   a bucket forgives at most its debt: a spray of random keys (each of which
//!   spent one token) is forgotten first, while a key that is being limited
//!   (deep in debt) is forgotten last. The map never tracks more than
//!   `max_keys` plus the number of threads inserting at the same instant,
//!   whatever the traffic. A cap-triggered sweep is O(`max_keys`) and frees a
//!   quarter of the cap, so its cost per inserted key is constant; inserts of
//!   new keys wait for a sweep in progress, checks of known keys never wait.
//!
//! The map's table grows only while half of it is live, so its allocation is
//! bounded by the cap as well, whatever the churn.

use std::{
    any::Any,
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hash},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use papaya::{HashMap, LocalGuard};

use crate::{
    gcra,
    key::LimitKey,
    store::{Bucket, Decisions, RateLimitStore, StoreFuture},
    Decision, LimitKeyHasher, MonotonicClock, QuantaClock, Quota,
};

/// Default for [`MemoryStore::max_keys`].
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Default for [`MemoryStore::sweep_interval`].
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// In-memory token buckets keyed by `K`, safe to share between threads.
///
/// The quota is given with each check, so one store can serve many policies
/// (the key must then tell them apart, as the layer's keys do).
///
/// ```
/// use std::time::Duration;
/// use auth_ratelimit::{clock::FakeClock, MemoryStore, Quota};
///
/// let clock = FakeClock::new();
/// let store = MemoryStore::<u64>::new().clock(clock.clone()).max_keys(10_000);
/// let q = Quota::per_second(2);
/// assert!(store.check(&7, &q, 1).is_allowed());
/// assert!(store.check(&7, &q, 1).is_allowed());
/// assert!(!store.check(&7, &q, 1).is_allowed());
/// clock.advance(Duration::from_millis(500));
/// assert!(store.check(&7, &q, 1).is_allowed());
/// ```
pub struct MemoryStore<K, S = RandomState> {
    map: HashMap<K, AtomicU64, S>,
    /// Keys in `map`, maintained on insert and removal (exact, unlike the
    /// map's own count during concurrent changes).
    tracked: AtomicUsize,
    clock: StoreClock,
    max_keys: usize,
    sweep_interval: u64,
    next_sweep: AtomicU64,
    sweeping: Mutex<()>,
    evicted: AtomicU64,
}

impl<K: Hash + Eq + Clone> MemoryStore<K> {
    /// A store on the real clock with the default limits.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl MemoryStore<LimitKey, LimitKeyHasher> {
    /// The store a [`RateLimiter`](crate::RateLimiter) keeps in memory, on
    /// the real clock, with the default limits: keyed by [`LimitKey`],
    /// hashed by `foldhash` with a random seed per store.
    pub fn for_limiter() -> Self {
        Self::with_hasher(LimitKeyHasher::default())
    }
}

impl<K: Hash + Eq + Clone> Default for MemoryStore<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Clone> MemoryStore<K, S> {
    /// A store on the real clock hashing keys with `hasher`. Keys often
    /// come from clients (IP addresses), so keep a randomly seeded hasher.
    pub fn with_hasher(hasher: S) -> Self {
        Self {
            map: HashMap::with_hasher(hasher),
            tracked: AtomicUsize::new(0),
            clock: StoreClock::Quanta(QuantaClock),
            max_keys: DEFAULT_MAX_KEYS,
            sweep_interval: nanos(DEFAULT_SWEEP_INTERVAL),
            next_sweep: AtomicU64::new(0),
            sweeping: Mutex::new(()),
            evicted: AtomicU64::new(0),
        }
    }

    /// Reads the time from `clock` instead of the real clock (tests pass a
    /// [`FakeClock`](crate::clock::FakeClock)). Set it before the first check.
    pub fn clock(mut self, clock: impl MonotonicClock) -> Self {
        self.clock = StoreClock::new(clock);
        self
    }

    /// Sets the cap on tracked keys (at least 4). See the module docs for
    /// what happens when it is reached.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(4);
        self
    }

    /// Sets how often, at most, inserting a new key sweeps full buckets away.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = nanos(every);
        self
    }

    /// Takes `cost` tokens from `key`'s bucket if it holds them.
    pub fn check(&self, key: &K, quota: &Quota, cost: u32) -> Decision {
        let now = self.clock.now();
        let map = self.map.pin();
        if let Some(d) = map.get(key).and_then(|cell| take(cell, now, quota, cost)) {
            return d;
        }
        self.check_new(&map, key, quota, cost, now)
    }

    /// A key not in the map (or whose bucket was sealed by a sweep).
    #[cold]
    #[inline(never)]
    fn check_new(
        &self,
        map: &Pinned<'_, K, S>,
        key: &K,
        quota: &Quota,
        cost: u32,
        now: u64,
    ) -> Decision {
        self.update_or_insert(
            map,
            key,
            now,
            |cell| take(cell, now, quota, cost),
            || gcra::take(0, now, quota, cost),
        )
    }

    /// Applies `update` to `key`'s bucket, or inserts the state `fresh`
    /// gives (`Err`: answer without inserting). `update` answers `None` on a
    /// sealed bucket: it is removed and the key looked up again.
    fn update_or_insert<R>(
        &self,
        map: &Pinned<'_, K, S>,
        key: &K,
        now: u64,
        update: impl Fn(&AtomicU64) -> Option<R>,
        fresh: impl Fn() -> Result<(u64, R), R>,
    ) -> R {
        let mut made_room = false;
        loop {
            if let Some(cell) = map.get(key) {
                match update(cell) {
                    Some(r) => return r,
                    None => {
                        forget_sealed(map, key);
                        continue;
                    }
                }
            }
            if !made_room {
                self.make_room(now);
                made_room = true;
            }
            let (tat, r) = match fresh() {
                Ok(taken) => taken,
                Err(r) => return r,
            };
            // Counted before it is visible, so a concurrent sweep never
            // subtracts it first.
            self.tracked.fetch_add(1, Ordering::Relaxed);
            if map
                .try_insert(key.clone(), AtomicU64::new(unsealed(tat)))
                .is_ok()
            {
                return r;
            }
            // Another thread inserted it first: update that one.
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Charges `cost` tokens whether or not the bucket holds them (for
    /// events that already happened, such as failed authentications): the
    /// bucket's debt grows by `cost` intervals, but never beyond `max_debt`
    /// ahead of now. Returns what a check of one token would now answer.
    pub fn charge(&self, key: &K, quota: &Quota, cost: u32, max_debt: Duration) -> Decision {
        let now = self.clock.now();
        let cap = nanos(max_debt);
        let update = |tat: u64| gcra::charge(tat, now, quota, cost, cap);
        let tat = self.update_or_insert(
            &self.map.pin(),
            key,
            now,
            |cell| apply(cell, update),
            || {
                let tat = unsealed(update(0));
                Ok((tat, tat))
            },
        );
        gcra::peek(tat, now, quota, 1)
    }

    /// What [`check`](Self::check) would answer, without taking anything.
    pub fn peek(&self, key: &K, quota: &Quota, cost: u32) -> Decision {
        let now = self.clock.now();
        let tat = match self.map.pin().get(key).map(|c| c.load(Ordering::Acquire)) {
            // A sealed bucket was full: the same as no bucket.
            Some(SEALED) | None => 0,
            Some(tat) => tat,
        };
        gcra::peek(tat, now, quota, cost)
    }

    /// Gives back `cost` tokens taken by an earlier allowed check (used when
    /// another limit refuses the same request).
    pub fn refund(&self, key: &K, quota: &Quota, cost: u32) {
        if let Some(cell) = self.map.pin().get(key) {
            // Nothing to give back to a sealed (full) bucket.
            let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat != SEALED).then(|| gcra::give_back(tat, quota, cost))
            });
        }
    }

    /// Takes each item's cost if every bucket holds it, else nothing; the
    /// answers are those of [`RateLimitStore::check_all`]. `parts` gives an
    /// item's key, quota and cost.
    #[inline]
    pub(crate) fn take_all<T>(
        &self,
        items: &[T],
        parts: impl Fn(&T) -> (&K, &Quota, u32),
    ) -> Decisions {
        let mut out = Decisions::new();
        for (i, item) in items.iter().enumerate() {
            let (key, quota, cost) = parts(item);
            let d = self.check(key, quota, cost);
            out.push(d);
            if !d.is_allowed() {
                return self.undo(items, i, out, parts);
            }
        }
        out
    }

    /// Item `refused` was refused: gives back what the items before it took,
    /// and reads the ones after it without taking.
    #[cold]
    #[inline(never)]
    fn undo<T>(
        &self,
        items: &[T],
        refused: usize,
        mut out: Decisions,
        parts: impl Fn(&T) -> (&K, &Quota, u32),
    ) -> Decisions {
        for (i, item) in items.iter().enumerate() {
            let (key, quota, cost) = parts(item);
            match i.cmp(&refused) {
                std::cmp::Ordering::Less => {
                    self.refund(key, quota, cost);
                    out[i] = self.peek(key, quota, 0);
                }
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => {
                    let d = self.peek(key, quota, cost);
                    out.push(if d.is_allowed() {
                        self.peek(key, quota, 0)
                    } else {
                        d
                    });
                }
            }
        }
        out
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many buckets the cap has forced out so far (not counting full
    /// buckets, which lose nothing).
    pub fn forced_evictions(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Drops every bucket that is full again; returns how many.
    pub fn sweep(&self) -> usize {
        let _guard = self.sweeping.lock().unwrap_or_else(|e| e.into_inner());
        self.drop_full(self.clock.now())
    }

    /// Called before inserting a new key.
    fn make_room(&self, now: u64) {
        if self.tracked.load(Ordering::Relaxed) >= self.max_keys {
            // Wait for a sweep in progress rather than insert past the cap.
            let _guard = self.sweeping.lock().unwrap_or_else(|e| e.into_inner());
            if self.tracked.load(Ordering::Relaxed) >= self.max_keys {
                self.evict(now);
                self.next_sweep
                    .store(now.saturating_add(self.sweep_interval), Ordering::Relaxed);
            }
            return;
        }
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(self.sweep_interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            if let Ok(_guard) = self.sweeping.try_lock() {
                self.drop_full(now);
            }
        }
    }

    fn drop_full(&self, now: u64) -> usize {
        let mut removed = 0usize;
        self.map.pin().retain(|_, cell| {
            let tat = cell.load(Ordering::Acquire);
            let drop_it = gcra::is_full(tat, now) && seal(cell, tat);
            removed += usize::from(drop_it);
            !drop_it
        });
        self.tracked.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Frees a quarter of the cap: full buckets first, then the least in debt.
    fn evict(&self, now: u64) {
        let target = self.max_keys - self.max_keys / 4;
        self.drop_full(now);
        let len = self.tracked.load(Ordering::Relaxed);
        if len <= target {
            return;
        }
        let excess = len - target;
        let map = self.map.pin();
        let mut tats: Vec<u64> = map
            .values()
            .map(|cell| cell.load(Ordering::Relaxed))
            .filter(|&tat| tat != SEALED)
            .collect();
        if tats.is_empty() {
            return;
        }
        let nth = excess.min(tats.len()) - 1;
        let (below, &mut threshold, _) = tats.select_nth_unstable(nth);
        // Remove everything under the threshold and just enough equal to it.
        let mut equal_budget = nth + 1 - below.iter().filter(|&&t| t < threshold).count();
        drop(tats);
        let mut removed = 0usize;
        map.retain(|_, cell| {
            let t = cell.load(Ordering::Relaxed);
            let drop_it = t != SEALED
                && (t < threshold || (t == threshold && equal_budget > 0))
                && seal(cell, t);
            if drop_it {
                if t == threshold {
                    equal_budget -= 1;
                }
                removed += 1;
            }
            !drop_it
        });
        self.tracked.fetch_sub(removed, Ordering::Relaxed);
        self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
    }
}

impl<K, S> fmt::Debug for MemoryStore<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("tracked", &self.tracked.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .field("sweep_interval", &Duration::from_nanos(self.sweep_interval))
            .field("clock", &self.clock)
            .finish()
    }
}

impl<S: BuildHasher + Clone> MemoryStore<LimitKey, S> {
    /// [`RateLimitStore::charge`], answered at once.
    pub(crate) fn charge_bucket(&self, bucket: &Bucket<'_>, max_debt: Duration) -> Decision {
        if bucket.cost == 0 {
            self.peek(&bucket.key, &bucket.quota, 1)
        } else {
            self.charge(&bucket.key, &bucket.quota, bucket.cost, max_debt)
        }
    }
}

impl<S> RateLimitStore for MemoryStore<LimitKey, S>
where
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    #[inline]
    fn check_all(&self, buckets: &[Bucket<'_>]) -> StoreFuture<Decisions> {
        StoreFuture::ready(Ok(self.take_all(buckets, |b| (&b.key, &b.quota, b.cost))))
    }

    fn charge(&self, bucket: &Bucket<'_>, max_debt: Duration) -> StoreFuture<Decision> {
        StoreFuture::ready(Ok(self.charge_bucket(bucket, max_debt)))
    }
}

/// A pinned view of the map (lives as long as its guard).
type Pinned<'m, K, S> = papaya::HashMapRef<'m, K, AtomicU64, S, LocalGuard<'m>>;

/// The word of a bucket a sweep is dropping: checks that find it start over.
/// No real state reaches it ([`unsealed`]).
const SEALED: u64 = u64::MAX;

/// A state as stored: one nanosecond short of the seal at most (a state
/// that far out is refused alike).
#[inline]
fn unsealed(tat: u64) -> u64 {
    tat.min(SEALED - 1)
}

/// Seals a bucket found at `seen`; false if it changed in between.
fn seal(cell: &AtomicU64, seen: u64) -> bool {
    cell.compare_exchange(seen, SEALED, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Removes `key`'s bucket if it is sealed (its sweep may not have got to
/// it yet). The sweep counted it already.
fn forget_sealed<K: Hash + Eq, S: BuildHasher>(map: &Pinned<'_, K, S>, key: &K) {
    let _ = map.remove_if(key, |_, cell| cell.load(Ordering::Acquire) == SEALED);
}

/// Applies `update` to the cell atomically; returns the new state, or `None`
/// if the bucket is sealed.
fn apply(cell: &AtomicU64, update: impl Fn(u64) -> u64) -> Option<u64> {
    let step = |tat: u64| (tat != SEALED).then(|| unsealed(update(tat)));
    match cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, step) {
        Ok(old) => Some(unsealed(update(old))),
        Err(_) => None,
    }
}

/// The compare-and-swap loop on one bucket; `None` if it is sealed.
#[inline]
fn take(cell: &AtomicU64, now: u64, quota: &Quota, cost: u32) -> Option<Decision> {
    let mut tat = cell.load(Ordering::Acquire);
    loop {
        if tat == SEALED {
            return None;
        }
        match gcra::take(tat, now, quota, cost) {
            Err(decision) => return Some(decision),
            Ok((next, decision)) => {
                let next = unsealed(next);
                match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(decision),
                    Err(actual) => tat = actual,
                }
            }
        }
    }
}

/// The store's clock, with the real clock as a direct (inlined) call.
#[derive(Debug)]
enum StoreClock {
    Quanta(QuantaClock),
    Other(Arc<dyn MonotonicClock>),
}

impl StoreClock {
    fn new<C: MonotonicClock>(clock: C) -> Self {
        let any: &dyn Any = &clock;
        match any.downcast_ref::<QuantaClock>() {
            Some(&m) => Self::Quanta(m),
            None => Self::Other(Arc::new(clock)),
        }
    }
}

impl MonotonicClock for StoreClock {
    #[inline]
    fn now(&self) -> u64 {
        match self {
            Self::Quanta(c) => c.now(),
            Self::Other(c) => c.now(),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn idle_full_buckets_are_swept_on_insert_after_the_interval() {
        let clock = FakeClock::new();
        let store = MemoryStore::<u32>::new()
            .clock(clock.clone())
            .sweep_interval(10 * S);
        let q = Quota::per_second(1);
        // The first insert sweeps (nothing) and schedules the next at t=10s.
        for k in 0..100 {
            assert!(store.check(&k, &q, 1).is_allowed());
        }
        assert_eq!(store.len(), 100);
        clock.advance(5 * S);
        store.check(&1000, &q, 1);
        assert_eq!(store.len(), 101, "not due yet");
        clock.advance(5 * S);
        store.check(&1001, &q, 1);
        // Everything but the new key (and 1000, refilled too) was full.
        assert_eq!(store.len(), 1);
        assert_eq!(store.forced_evictions(), 0);
    }

    #[test]
    fn cap_forgets_the_least_indebted_first() {
        let clock = FakeClock::new();
        let store = MemoryStore::<u32>::new().clock(clock.clone()).max_keys(100);
        let q = Quota::per_hour(10);
        // Key 0 is deep in debt.
        for _ in 0..10 {
            assert!(store.check(&0, &q, 1).is_allowed());
        }
        assert!(!store.check(&0, &q, 1).is_allowed());
        for k in 1..10_000 {
            store.check(&k, &q, 1);
            assert!(store.len() <= 100);
        }
        assert!(store.forced_evictions() > 0);
        assert!(
            !store.check(&0, &q, 1).is_allowed(),
            "the limited key survived the spray"
        );
    }

    #[test]
    fn concurrent_spray_keeps_the_count_exact_and_bounded() {
        let clock = FakeClock::new();
        let store = Arc::new(
            MemoryStore::<u64>::new()
                .clock(clock.clone())
                .max_keys(1000),
        );
        let q = Quota::per_minute(10);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut peak = 0;
                    for k in 0..20_000 {
                        store.check(&(t << 32 | k), &q, 1);
                        peak = peak.max(store.len());
                    }
                    peak
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap() <= 1000 + 4);
        }
        assert_eq!(store.len(), store.map.len(), "the counter matches the map");
        assert!(store.len() <= 1000);
    }

    #[test]
    fn refund_and_peek() {
        let store = MemoryStore::<&str>::new().clock(FakeClock::new());
        let q = Quota::per_minute(5);
        store.check(&"a", &q, 3);
        // Cost 0 peeks at what the bucket holds; cost 3 would not fit.
        assert_eq!(store.peek(&"a", &q, 0).remaining(), 2);
        assert!(!store.peek(&"a", &q, 3).is_allowed());
        store.refund(&"a", &q, 2);
        assert_eq!(store.peek(&"a", &q, 0).remaining(), 4);
        assert!(store.peek(&"a", &q, 3).is_allowed());
        assert_eq!(store.peek(&"b", &q, 0).remaining(), 5);
        assert_eq!(store.len(), 1, "peek does not insert");
    }
}
