//! Fleet mode at local speed: each instance leases a small share of a
//! bucket's tokens from Redis and spends it locally, so an allowed request
//! in steady state makes no round trip.
//!
//! * **Take before serve.** A lease is taken from the Redis bucket (its
//!   theoretical arrival time moves forward) before any of its tokens is
//!   spent, in the same atomic script that checks the request's own cost.
//!   So the instances together never admit more than the bucket allows:
//!   while Redis answers, the **overshoot is zero**.
//! * **Lease size.** 1% of the bucket's burst (at least 2 tokens, so only
//!   quotas with a burst of 200 or more lease at all). Buckets with a
//!   smaller burst (a sign-in limit of 5 a minute) take exactly the
//!   request's cost per round trip, as without leases: exact.
//! * **Reconciliation.** Every 100 ms the tokens of leases taken 100 ms ago
//!   or more and not spent go back to Redis (the arrival time moves back,
//!   never before now). A lease that runs out is renewed by the next request
//!   that needs it (one round trip). A refusal from Redis is remembered for
//!   at most 100 ms (or until the bucket would admit again, if sooner), so a
//!   refused client makes at most one round trip per bucket per 100 ms.
//! * **The other bound** (under-admission): at any moment each other
//!   instance holds at most one lease per bucket (1% of the burst) for at
//!   most 200 ms, and a refusal is remembered for at most 100 ms. So a
//!   fleet of `n` instances admits at least the quota minus `(n - 1)` leases
//!   in any window in which clients keep asking.
//! * **Outage.** Tokens already leased are spent as usual; a lease whose
//!   return fails is dropped, its tokens stay spent (never handed out twice).
//!   New checks fail, and the limiter's `OnStoreError` policy applies.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::Duration,
};

use redis::Script;

use crate::{
    key::LimitKey,
    redis_store::KeyName,
    store::{Bucket, Decisions, RateLimitStore, StoreFuture},
    Decision, LimitStoreError, MonotonicClock, QuantaClock, Quota, RedisStore,
};

/// How often unspent leases go back, and the longest a refusal is remembered.
pub(crate) const RECONCILE_EVERY: Duration = Duration::from_millis(100);

/// A lease is this share of the burst (1/100)...
const LEASE_SHARE: u32 = 100;
/// ...and only worth taking from this many tokens up.
const MIN_LEASE: u32 = 2;

/// The tokens a bucket of `quota` leases besides a request's own cost; 0 for
/// small buckets, which are checked exactly, one round trip per request.
pub(crate) fn lease_size(quota: &Quota) -> u32 {
    let share = quota.burst() / LEASE_SHARE;
    if share < MIN_LEASE {
        0
    } else {
        share
    }
}

/// Takes each key's cost plus up to its lease if every key holds its cost,
/// else nothing. ARGV: now (see the store's `NOW`), then per key the refill
/// interval and tau in microseconds, the cost and the most to take. Returns
/// per key: allowed (1 or 0), tokens taken, microseconds until full,
/// microseconds until the cost would fit.
const TAKE: &str = r"
local out = {}
local tats = {}
local takes = {}
local all = true
for i = 1, #KEYS do
  local interval = tonumber(ARGV[4 * i - 2])
  local tau = tonumber(ARGV[4 * i - 1])
  local cost = tonumber(ARGV[4 * i])
  local most = tonumber(ARGV[4 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
  if tat < now then tat = now end
  tats[i] = tat
  local fits = math.floor((tau - (tat - now)) / interval)
  if fits < cost then
    all = false
    out[4 * i - 3] = 0
    out[4 * i - 2] = 0
    out[4 * i - 1] = tat - now
    out[4 * i] = tat + cost * interval - now - tau
  else
    if fits > most then fits = most end
    takes[i] = fits
    out[4 * i - 3] = 1
    out[4 * i - 2] = 0
    out[4 * i - 1] = tat - now
    out[4 * i] = 0
  end
end
if all then
  for i = 1, #KEYS do
    local interval = tonumber(ARGV[4 * i - 2])
    local new = tats[i] + takes[i] * interval
    redis.call('SET', KEYS[i], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000))
    out[4 * i - 2] = takes[i]
    out[4 * i - 1] = new - now
  end
end
return out
";

fn take_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(&format!("{}{TAKE}", crate::redis_store::NOW)))
}

/// One bucket's local share.
struct Lease {
    /// Tokens taken from Redis and not spent.
    tokens: u64,
    /// When the oldest of them was taken (`QuantaClock` nanoseconds).
    taken_at: u64,
    /// Refused by Redis until then (`QuantaClock` nanoseconds).
    refused_until: u64,
    /// The refusal to repeat meanwhile.
    refusal: Option<Decision>,
    /// Nanoseconds until the Redis bucket is full, as of `seen_at`.
    reset: u64,
    seen_at: u64,
    quota: Quota,
    key: KeyName,
    /// Held by the one request of this instance that goes to Redis for the
    /// bucket; the others wait for it and then look at the lease again, so
    /// an instance holds at most one lease per bucket and a cold burst makes
    /// one round trip, not one per request.
    fetch: Arc<tokio::sync::Mutex<()>>,
}

impl Lease {
    fn new(quota: Quota, key: KeyName, now: u64) -> Self {
        Self {
            tokens: 0,
            taken_at: now,
            refused_until: 0,
            refusal: None,
            reset: 0,
            seen_at: now,
            quota,
            key,
            fetch: Arc::default(),
        }
    }

    /// What a check answered from the lease reports: the Redis bucket as
    /// last seen, plus the tokens still leased.
    fn decision(&self, now: u64) -> Decision {
        let elapsed = now.saturating_sub(self.seen_at);
        let reset = self.reset.saturating_sub(elapsed);
        let leased = self.tokens.saturating_mul(self.quota.interval_nanos());
        Decision::allowed(self.quota, reset.saturating_sub(leased))
    }
}

type Leases = HashMap<LimitKey, Lease, crate::LimitKeyHasher>;

/// A `RedisStore` whose checks spend leased tokens locally (see the
/// [module docs](self)). Failure charges go to Redis as they are.
#[derive(Clone)]
pub(crate) struct LeasedRedis {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisStore,
    leases: Mutex<Leases>,
    task_started: AtomicBool,
}

impl std::fmt::Debug for LeasedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedRedis")
            .field("redis", &self.inner.redis)
            .finish_non_exhaustive()
    }
}

/// A bucket of a check, owned, for the way to Redis.
struct Owned {
    limit_key: LimitKey,
    key: KeyName,
    quota: Quota,
    cost: u64,
}

/// One bucket of a check that needs Redis.
struct Needed {
    index: usize,
    limit_key: LimitKey,
    key: KeyName,
    quota: Quota,
    cost: u64,
    most: u64,
}

/// What the leases alone say about a check.
enum Local {
    /// Decided: spent from the leases, or refused as Redis refused lately.
    Decided(Decisions),
    /// Some buckets must go to Redis.
    Redis,
}

/// Decides `items` (key, quota, cost) from `leases` if they can: a bucket
/// refused lately refuses the check; else, if every bucket's lease holds
/// its cost, spends them.
fn from_leases(leases: &mut Leases, items: &[(LimitKey, Quota, u64)], now: u64) -> Local {
    if items
        .iter()
        .any(|(k, ..)| leases.get(k).is_some_and(|l| l.refused_until > now))
    {
        return Local::Decided(
            items
                .iter()
                .map(|(k, q, _)| match leases.get(k) {
                    Some(l) if l.refused_until > now => {
                        l.refusal.unwrap_or_else(|| Decision::denied(*q, 0, 1))
                    }
                    Some(l) => l.decision(now),
                    None => Decision::allowed(*q, 0),
                })
                .collect(),
        );
    }
    if !items
        .iter()
        .all(|(k, _, cost)| leases.get(k).is_some_and(|l| l.tokens >= *cost))
    {
        return Local::Redis;
    }
    Local::Decided(
        items
            .iter()
            .filter_map(|(k, _, cost)| {
                let l = leases.get_mut(k)?;
                l.tokens -= cost;
                Some(l.decision(now))
            })
            .collect(),
    )
}

impl LeasedRedis {
    pub(crate) fn new(redis: RedisStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                leases: Mutex::new(HashMap::default()),
                task_started: AtomicBool::new(false),
            }),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.inner.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens leased and not spent, over every bucket.
    pub(crate) fn leased(&self) -> u64 {
        self.leases().values().map(|l| l.tokens).sum()
    }

    fn start_task(&self) {
        if !self.inner.task_started.load(Ordering::Relaxed)
            && !self.inner.task_started.swap(true, Ordering::AcqRel)
        {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(reconcile_loop(Arc::downgrade(&self.inner)));
            }
        }
    }

    /// The way to Redis: one request per bucket at a time (the others wait,
    /// then spend what it leased), then one round trip for every bucket the
    /// leases cannot pay for.
    async fn slow(self, owned: Vec<Owned>) -> Result<Decisions, LimitStoreError> {
        let now = QuantaClock.now();
        let mut locks: Vec<(LimitKey, Arc<tokio::sync::Mutex<()>>)> = {
            let mut leases = self.leases();
            owned
                .iter()
                .map(|o| {
                    let lease = leases
                        .entry(o.limit_key)
                        .or_insert_with(|| Lease::new(o.quota, o.key.clone(), now));
                    (o.limit_key, lease.fetch.clone())
                })
                .collect()
        };
        // Always in the same order: two checks never wait for each other.
        locks.sort_by_key(|(k, _)| *k);
        locks.dedup_by_key(|(k, _)| *k);
        let mut guards = Vec::with_capacity(locks.len());
        for (_, lock) in &locks {
            guards.push(lock.lock().await);
        }
        let items: Vec<(LimitKey, Quota, u64)> = owned
            .iter()
            .map(|o| (o.limit_key, o.quota, o.cost))
            .collect();
        let now = QuantaClock.now();
        let mut decisions = Decisions::new();
        let mut needed = Vec::new();
        let mut spent = Vec::new();
        {
            let mut leases = self.leases();
            if let Local::Decided(d) = from_leases(&mut leases, &items, now) {
                return Ok(d);
            }
            for (index, o) in owned.into_iter().enumerate() {
                let lease = leases
                    .entry(o.limit_key)
                    .or_insert_with(|| Lease::new(o.quota, o.key.clone(), now));
                if lease.tokens >= o.cost {
                    lease.tokens -= o.cost;
                    spent.push((o.limit_key, o.cost));
                    decisions.push(lease.decision(now));
                } else {
                    decisions.push(Decision::allowed(o.quota, 0));
                    needed.push(Needed {
                        index,
                        limit_key: o.limit_key,
                        most: o.cost + u64::from(lease_size(&o.quota)),
                        key: o.key,
                        quota: o.quota,
                        cost: o.cost,
                    });
                }
            }
        }
        let reply = self.take(&needed).await;
        let now = QuantaClock.now();
        let mut leases = self.leases();
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                refund(&mut leases, &spent);
                return Err(err);
            }
        };
        let all = reply.iter().all(|r| r.allowed);
        if !all {
            refund(&mut leases, &spent);
        }
        for (n, r) in needed.into_iter().zip(reply) {
            let q = n.quota.rounded_to_micros();
            let lease = leases
                .entry(n.limit_key)
                .or_insert_with(|| Lease::new(n.quota, n.key.clone(), now));
            lease.reset = r.reset;
            lease.seen_at = now;
            lease.quota = n.quota;
            decisions[n.index] = if r.allowed && all {
                if lease.tokens == 0 {
                    lease.taken_at = now;
                }
                lease.tokens += r.taken.saturating_sub(n.cost);
                lease.refused_until = 0;
                lease.refusal = None;
                lease.decision(now)
            } else if r.allowed {
                Decision::allowed(q, r.reset)
            } else {
                let d = Decision::denied(q, r.reset, r.retry);
                let remember = r.retry.min(duration_nanos(RECONCILE_EVERY));
                lease.refused_until = now.saturating_add(remember);
                lease.refusal = Some(d);
                d
            };
        }
        drop(leases);
        drop(guards);
        Ok(decisions)
    }
}

impl RateLimitStore for LeasedRedis {
    fn check_all(&self, buckets: &[Bucket<'_>]) -> StoreFuture<Decisions> {
        self.start_task();
        let now = QuantaClock.now();
        let cost = |b: &Bucket<'_>| u64::from(b.cost.min(b.quota.burst()));
        let items: smallvec::SmallVec<[(LimitKey, Quota, u64); crate::store::RULES_INLINE]> =
            buckets.iter().map(|b| (b.key, b.quota, cost(b))).collect();
        if let Local::Decided(d) = from_leases(&mut self.leases(), &items, now) {
            return StoreFuture::ready(Ok(d));
        }
        let owned = buckets
            .iter()
            .map(|b| Owned {
                limit_key: b.key,
                key: self.inner.redis.key_of(b),
                quota: b.quota,
                cost: cost(b),
            })
            .collect();
        StoreFuture::pending(self.clone().slow(owned))
    }

    fn charge(&self, bucket: &Bucket<'_>, max_debt: Duration) -> StoreFuture<Decision> {
        self.inner.redis.charge(bucket, max_debt)
    }
}

/// Puts back tokens taken from leases for a request that was refused.
fn refund(leases: &mut Leases, spent: &[(LimitKey, u64)]) {
    for (key, cost) in spent {
        if let Some(l) = leases.get_mut(key) {
            l.tokens += cost;
        }
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Redis's answer for one bucket of a take.
struct Took {
    allowed: bool,
    taken: u64,
    reset: u64,
    retry: u64,
}

impl LeasedRedis {
    /// One round trip (one per slot on a cluster): each bucket's cost and
    /// lease, all or nothing.
    async fn take(&self, needed: &[Needed]) -> Result<Vec<Took>, LimitStoreError> {
        let redis = &self.inner.redis;
        let now = redis.now_arg();
        redis
            .guarded(async {
                let mut conn = redis.connection().await?;
                let names = if needed.iter().any(|n| n.key.hidden.is_some()) {
                    redis.names_key(&mut conn).await?
                } else {
                    [0; 32]
                };
                let keys: Vec<String> = needed.iter().map(|n| n.key.finish(&names)).collect();
                let mut args = Vec::with_capacity(4 * needed.len());
                for n in needed {
                    let q = n.quota.rounded_to_micros();
                    args.extend([
                        q.interval_nanos() / 1000,
                        q.tau_nanos() / 1000,
                        n.cost,
                        n.most,
                    ]);
                }
                let (mut reply, groups) = redis
                    .invoke_per_slot(&conn, take_script(), &now, &keys, &args, 4)
                    .await?;
                if groups.len() > 1 {
                    // Slots that took their share give it back if another
                    // refused: all or nothing, as on one server.
                    let refused: Vec<bool> = groups
                        .iter()
                        .map(|g| g.iter().any(|&i| reply[4 * i] != 1))
                        .collect();
                    if refused.contains(&true) {
                        let mut returns = Vec::new();
                        for (group, _) in groups.iter().zip(&refused).filter(|(_, r)| !**r) {
                            for &i in group {
                                let interval = args[4 * i];
                                let taken = u64::try_from(reply[4 * i + 1]).unwrap_or(0);
                                returns.push((keys[i].clone(), interval, taken));
                                let held = i64::try_from(interval * taken).unwrap_or(i64::MAX);
                                reply[4 * i + 1] = 0;
                                reply[4 * i + 2] = reply[4 * i + 2].saturating_sub(held).max(0);
                            }
                        }
                        redis.give_back(&conn, &returns).await?;
                    }
                }
                let num = |v: i64| u64::try_from(v).unwrap_or(0);
                Ok(reply
                    .chunks_exact(4)
                    .map(|r| Took {
                        allowed: r[0] == 1,
                        taken: num(r[1]),
                        reset: num(r[2]).saturating_mul(1000),
                        retry: num(r[3]).saturating_mul(1000),
                    })
                    .collect())
            })
            .await
    }
}

/// Every 100 ms, until the store is dropped: unspent leases taken 100 ms
/// ago or more go back to Redis; refusals past their time are forgotten.
async fn reconcile_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        give_back(&inner, duration_nanos(RECONCILE_EVERY)).await;
    }
}

/// Gives back the leases taken at least `age` nanoseconds ago.
async fn give_back(inner: &Inner, age: u64) {
    let now = QuantaClock.now();
    let returns: Vec<(KeyName, Quota, u64)> = {
        let mut leases = inner.leases.lock().unwrap_or_else(|e| e.into_inner());
        let mut returns = Vec::new();
        leases.retain(|_, l| {
            if l.tokens > 0 && now.saturating_sub(l.taken_at) >= age {
                returns.push((l.key.clone(), l.quota, l.tokens));
                l.tokens = 0;
            }
            // Kept while it holds tokens, a refusal still stands or a
            // request is on its way to Redis for it.
            l.tokens > 0 || l.refused_until > now || Arc::strong_count(&l.fetch) > 1
        });
        returns
    };
    if returns.is_empty() {
        return;
    }
    let redis = &inner.redis;
    let result = redis
        .guarded(async {
            let mut conn = redis.connection().await?;
            let names = if returns.iter().any(|(k, ..)| k.hidden.is_some()) {
                redis.names_key(&mut conn).await?
            } else {
                [0; 32]
            };
            let returns: Vec<(String, u64, u64)> = returns
                .iter()
                .map(|(key, quota, tokens)| {
                    let interval = quota.rounded_to_micros().interval_nanos() / 1000;
                    (key.finish(&names), interval, *tokens)
                })
                .collect();
            redis.give_back(&conn, &returns).await
        })
        .await;
    if let Err(err) = result {
        // The tokens stay spent: a lease is never handed out twice.
        tracing::debug!(error = %err, leases = returns.len(), "unspent rate-limit leases not given back");
    }
}

impl LeasedRedis {
    /// Gives back every unspent lease now (tests; shutdown).
    pub(crate) async fn give_back_all(&self) {
        give_back(&self.inner, 0).await;
    }
}
