//! The failed-authentication guard in a fleet: failures are charged to
//! Redis (one round trip per 401), and every other request is answered from
//! a local mirror of the addresses that are over the limit, with no round
//! trip.
//!
//! * An instance that charges a failure and finds the address over the
//!   limit puts it in its mirror at once, and publishes it on a Redis stream
//!   (`prefix:auth-failures:blocked`, capped at about 10,000 entries). On a
//!   Redis Cluster the stream is one key, so it lives on one node, which
//!   every instance writes and reads; no pub/sub is involved.
//! * Every 100 ms each instance reads what the others published since its
//!   last read, and forgets entries whose time is over.
//! * **Bound**: the Redis buckets count every failure exactly. An address
//!   over the limit is refused by the instance that saw it cross the limit
//!   at once, and by the others within 100 ms (their next read); meanwhile
//!   they let its requests reach authentication, and each of those that
//!   fails is charged, refused by Redis, and mirrored by that instance too.
//!   So beyond the quota an address gets at most the requests it has in
//!   flight, per instance, during those 100 ms.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    key::{KeyValue, LimitKey},
    redis_lease::RECONCILE_EVERY,
    store::{Bucket, Decisions, RateLimitStore, StoreFuture},
    Decision, LimitStoreError, MonotonicClock, QuantaClock, Quota, RedisStore,
};

/// Entries kept on the stream, about.
const STREAM_LEN: u64 = 10_000;

/// A `RedisStore` for the failed-authentication limiter: charges go to
/// Redis, reads to the local mirror (see the [module docs](self)).
#[derive(Clone)]
pub(crate) struct MirroredFailures {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisStore,
    /// Over the limit until (`QuantaClock` nanoseconds), and the refusal.
    blocked: Mutex<HashMap<LimitKey, (u64, Decision), crate::LimitKeyHasher>>,
    /// The limiter's quota, for refusals of addresses others published.
    quota: Quota,
    /// The last stream entry read.
    last_id: Mutex<String>,
    task_started: AtomicBool,
}

impl std::fmt::Debug for MirroredFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredFailures")
            .field("redis", &self.inner.redis)
            .finish_non_exhaustive()
    }
}

impl MirroredFailures {
    pub(crate) fn new(redis: RedisStore, quota: Quota) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                blocked: Mutex::new(HashMap::default()),
                quota,
                last_id: Mutex::new("0-0".into()),
                task_started: AtomicBool::new(false),
            }),
        }
    }

    fn start_task(&self) {
        if !self.inner.task_started.load(Ordering::Relaxed)
            && !self.inner.task_started.swap(true, Ordering::AcqRel)
        {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(refresh_loop(Arc::downgrade(&self.inner)));
            }
        }
    }
}

fn stream_key(redis: &RedisStore) -> String {
    format!("{}:auth-failures:blocked", redis.prefix())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stream's name for a bucket value: `ip` or `site`, and the address.
fn published(value: &KeyValue<'_>) -> Option<(&'static str, String)> {
    match value {
        KeyValue::Ip(ip) => Some(("ip", ip.to_string())),
        KeyValue::Site(net) => Some(("site", net.to_string())),
        _ => None,
    }
}

/// The local key of a published bucket value.
fn local_key(kind: &str, addr: &str) -> Option<LimitKey> {
    let ip: IpAddr = addr.parse().ok()?;
    let value = match (kind, ip) {
        ("ip", ip) => KeyValue::Ip(ip),
        ("site", IpAddr::V6(net)) => KeyValue::Site(net),
        _ => return None,
    };
    Some(LimitKey::new(0, &value))
}

impl RateLimitStore for MirroredFailures {
    fn check_all(&self, buckets: &[Bucket<'_>]) -> StoreFuture<Decisions> {
        self.inner.redis.check_all(buckets)
    }

    fn charge(&self, bucket: &Bucket<'_>, max_debt: Duration) -> StoreFuture<Decision> {
        self.start_task();
        let now = QuantaClock.now();
        if bucket.cost == 0 {
            // A read: the mirror answers.
            let blocked = self.inner.blocked.lock().unwrap_or_else(|e| e.into_inner());
            return StoreFuture::ready(Ok(match blocked.get(&bucket.key) {
                Some((until, refusal)) if *until > now => {
                    let left = until - now;
                    Decision::denied(refusal.quota(), refusal.reset_nanos(), left)
                }
                _ => Decision::allowed(bucket.quota, 0),
            }));
        }
        let pending = self.inner.redis.charge(bucket, max_debt);
        let this = self.clone();
        let key = bucket.key;
        let name = published(&bucket.value);
        StoreFuture::pending(async move {
            let d = pending.await?;
            if !d.is_allowed() {
                let retry = d.retry_after_nanos();
                let until = QuantaClock.now().saturating_add(retry);
                this.inner
                    .blocked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, (until, d));
                if let Some((kind, addr)) = name {
                    this.publish(kind, &addr, retry).await;
                }
            }
            Ok(d)
        })
    }
}

impl MirroredFailures {
    /// Tells the other instances that `addr` is over the limit for `retry`
    /// nanoseconds.
    async fn publish(&self, kind: &str, addr: &str, retry: u64) {
        let redis = &self.inner.redis;
        let until = unix_millis().saturating_add(retry / 1_000_000);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream_key(redis))
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_LEN)
            .arg("*")
            .arg("k")
            .arg(kind)
            .arg("a")
            .arg(addr)
            .arg("u")
            .arg(until);
        let result = redis
            .guarded(async {
                let mut conn = redis.connection().await?;
                cmd.query_async::<String>(&mut conn)
                    .await
                    .map_err(LimitStoreError::backend)
            })
            .await;
        if let Err(err) = result {
            tracing::debug!(error = %err, "publishing an address over the failure limit failed");
        }
    }
}

/// Every 100 ms, until the store is dropped: what the others published.
async fn refresh_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(err) = refresh(&inner).await {
            tracing::debug!(error = %err, "reading addresses over the failure limit failed");
        }
    }
}

type Entries = Vec<(String, Vec<(String, String)>)>;

async fn refresh(inner: &Inner) -> Result<(), LimitStoreError> {
    let redis = &inner.redis;
    let last = inner
        .last_id
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(stream_key(redis))
        .arg(format!("({last}"))
        .arg("+")
        .arg("COUNT")
        .arg(1000);
    let entries: Entries = redis
        .guarded(async {
            let mut conn = redis.connection().await?;
            cmd.query_async(&mut conn)
                .await
                .map_err(LimitStoreError::backend)
        })
        .await?;
    let now = QuantaClock.now();
    let now_ms = unix_millis();
    let quota = inner.quota;
    let mut blocked = inner.blocked.lock().unwrap_or_else(|e| e.into_inner());
    blocked.retain(|_, (until, _)| *until > now);
    let Some(last) = entries.last().map(|(id, _)| id.clone()) else {
        return Ok(());
    };
    for (_, fields) in entries {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let (Some(kind), Some(addr), Some(until)) = (field("k"), field("a"), field("u")) else {
            continue;
        };
        let Ok(until) = until.parse::<u64>() else {
            continue;
        };
        if until <= now_ms {
            continue;
        }
        let Some(key) = local_key(kind, addr) else {
            continue;
        };
        let left = (until - now_ms).saturating_mul(1_000_000);
        let refusal = Decision::denied(quota, quota.tau_nanos(), left);
        let entry = blocked.entry(key).or_insert((0, refusal));
        if entry.0 < now + left {
            *entry = (now + left, refusal);
        }
    }
    drop(blocked);
    *inner.last_id.lock().unwrap_or_else(|e| e.into_inner()) = last;
    Ok(())
}
