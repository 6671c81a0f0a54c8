//! The shared store: token buckets in Redis, for services running many
//! instances (cargo feature `redis`).
//!
//! Each check is **one round trip**: a Lua script (sent once, then called by
//! its SHA) reads the buckets of every rule that applies, decides with the
//! same GCRA arithmetic as the in-memory store, and writes them back only if
//! all allow the request. Scripts run atomically, so any number of limiters
//! sharing one Redis together admit no more than the quota. Time is an
//! argument of the script, in microseconds: by default it is left empty and
//! the script reads the Redis server's `TIME`, so instance clocks don't
//! matter; [`RedisStore::clock`] passes a clock's time instead (a fake
//! one in tests, which is how the Lua arithmetic is checked against the
//! token-bucket model). The refill interval is rounded down to whole
//! microseconds. Each bucket key
//! expires (`PX`) when the bucket would be full again, so Redis holds only
//! buckets in debt.
//!
//! The connection is a multiplexed `redis::aio::ConnectionManager` (one TCP
//! connection shared by all tasks, reconnecting by itself), opened at the
//! first check. Every check is bounded by a timeout; after a failure the store
//! answers [`LimitStoreError::Down`] at once for a retry interval instead of
//! making every request wait. What the limiter does then is its
//! [`OnStoreError`](crate::OnStoreError) policy.
//!
//! The script touches several keys at once, so on Redis Cluster all rules of
//! a request must hash to one slot: put a hash tag in the prefix
//! (`{rl}`) if you use a cluster.
//!
//! **Key names reveal no user name.** A bucket counted by user (or by an
//! application's own key function) is named by a keyed BLAKE3 digest of the
//! identifier, not by the identifier: listing, monitoring or backing up
//! Redis shows no login name. The digest key comes from
//! [`RedisStore::with_key_secret`] (the same secret on every instance; then
//! names cannot be recovered without it), or else from a random secret the
//! first instance stores in Redis under `prefix:names-key`, which every
//! instance reads and re-asserts every 10 s (so a Redis that lost it
//! converges on one secret again); with that default, someone who can read
//! that one Redis key could test guessed names.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, Script,
};
use tokio::sync::OnceCell;

use crate::{
    store::{Bucket, Decisions, RateLimitStore, StoreFuture},
    Decision, LimitStoreError, MonotonicClock, QuantaClock, Quota,
};

/// Default for [`RedisStore::with_timeout`].
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Default for [`RedisStore::with_retry_interval`].
pub const DEFAULT_REDIS_RETRY: Duration = Duration::from_secs(1);

/// Now, in microseconds: ARGV[1], or the server's time when it is empty.
pub(crate) const NOW: &str = r"
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
";

/// Every bucket of a request (see [`RateLimitStore::check_all`]). ARGV: now
/// (see [`NOW`]), then per key its refill interval and tau in microseconds
/// and its cost. Returns per key: allowed (1 or 0), microseconds until full,
/// microseconds until it could pass.
const CHECK_ALL: &str = r"
local out = {}
local new = {}
local cur = {}
local all = true
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 1])
  local tau = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
  if tat < now then tat = now end
  local next_tat = tat + cost * interval
  local debt = next_tat - now
  cur[i] = tat - now
  if debt > tau then
    all = false
    out[3 * i - 2] = 0
    out[3 * i - 1] = tat - now
    out[3 * i] = debt - tau
  else
    out[3 * i - 2] = 1
    out[3 * i - 1] = debt
    out[3 * i] = 0
    new[i] = next_tat
  end
end
if not all then
  -- Nothing is taken: report what the allowed buckets hold now.
  for i = 1, #KEYS do
    if new[i] then out[3 * i - 1] = cur[i] end
  end
else
  for i = 1, #KEYS do
    local ttl = new[i] - now
    if ttl > 0 then
      redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', math.ceil(ttl / 1000))
    end
  end
end
return out
";

/// One bucket charged whether or not it holds the tokens (see
/// [`RateLimitStore::charge`]). ARGV: now (see [`NOW`]), the refill interval
/// and tau in microseconds, the tokens to charge (0 to only read), and the
/// most debt charges may build. Returns whether one more token would fit,
/// the debt, and how long until it would.
const CHARGE: &str = r"
local interval = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local charge = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
if charge > 0 then
  local new = tat + charge * interval
  local limit = now + cap
  if limit < tat then limit = tat end
  if new > limit then new = limit end
  tat = new
  if tat > now then
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
  end
end
local debt = tat + interval - now
if debt > tau then
  return {0, tat - now, debt - tau}
end
return {1, tat - now, 0}
";

fn charge_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(&format!("{NOW}{CHARGE}")))
}

fn check_all_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(&format!("{NOW}{CHECK_ALL}")))
}

/// Token buckets in Redis, shared by every instance that uses the same
/// server and prefix. Cheap to clone (clones share the connection).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use auth_ratelimit::{OnStoreError, Quota, RateLimiter, RedisStore, Rule};
/// let store = RedisStore::open("redis://127.0.0.1:6379")?.with_prefix("myapp:rl");
/// let limiter = RateLimiter::builder()
///     .rule(Rule::per_user("default", Quota::per_hour(200)))
///     .redis(store)
///     .on_store_error(OnStoreError::FallBackToMemory)
///     .build()?;
/// # let _ = limiter; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: Arc<str>,
    timeout: Duration,
    retry_interval: Duration,
    /// The script's time source; `None` for the server's `TIME`.
    clock: Option<Arc<dyn MonotonicClock>>,
    shared: Arc<Shared>,
    names: Arc<Names>,
}

struct Shared {
    conn: OnceCell<ConnectionManager>,
    /// `QuantaClock` time before which no attempt is made after a failure.
    down_until: AtomicU64,
}

/// One bucket to check: its Redis key's name, quota and cost.
struct RedisCheck {
    key: KeyName,
    quota: Quota,
    cost: u32,
}

/// A bucket's Redis key before the digest of its user-chosen part, if any.
#[derive(Clone)]
pub(crate) struct KeyName {
    pub(crate) head: String,
    pub(crate) hidden: Option<String>,
}

impl KeyName {
    pub(crate) fn finish(&self, names: &[u8; 32]) -> String {
        let Some(hidden) = &self.hidden else {
            return self.head.clone();
        };
        let digest = blake3::keyed_hash(names, hidden.as_bytes());
        let mut key = String::with_capacity(self.head.len() + 32);
        key.push_str(&self.head);
        for b in &digest.as_bytes()[..16] {
            use std::fmt::Write;
            let _ = write!(key, "{b:02x}");
        }
        key
    }
}

/// The key of the digests of names in key names.
struct Names {
    /// From [`RedisStore::with_key_secret`].
    fixed: Option<[u8; 32]>,
    /// The secret read from Redis, its key, and when it was read.
    read: std::sync::Mutex<Option<(String, [u8; 32], u64)>>,
}

/// How the digest key is derived from a secret.
const NAMES_CONTEXT: &str = "keygate auth-ratelimit Redis key names v1";

/// How often the secret stored in Redis is read again (and re-asserted).
const NAMES_REFRESH_NANOS: u64 = 10_000_000_000;

impl RedisStore {
    /// A store for the server at `url` (`redis://host:port/db`), with prefix
    /// `rl`. Nothing is connected until the first check.
    pub fn open(url: &str) -> Result<Self, LimitStoreError> {
        let client = Client::open(url).map_err(LimitStoreError::backend)?;
        Ok(Self::from_client(client))
    }

    /// Like [`open`](Self::open) for a `rediss://` URL whose server
    /// certificate is signed by the CA certificates in `ca_pem` (PEM) rather
    /// than a public CA (feature `tls`). A certificate from another CA is
    /// refused at the first connection.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn open_with_ca(url: &str, ca_pem: &[u8]) -> Result<Self, LimitStoreError> {
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = Client::build_with_tls(url, certs).map_err(LimitStoreError::backend)?;
        Ok(Self::from_client(client))
    }

    fn from_client(client: Client) -> Self {
        Self {
            client,
            prefix: "rl".into(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            retry_interval: DEFAULT_REDIS_RETRY,
            clock: None,
            shared: Arc::new(Shared {
                conn: OnceCell::new(),
                down_until: AtomicU64::new(0),
            }),
            names: Arc::new(Names {
                fixed: None,
                read: std::sync::Mutex::new(None),
            }),
        }
    }

    /// [`open`](Self::open), then connect now: fails if the server cannot be
    /// reached within the timeout.
    pub async fn connect(url: &str) -> Result<Self, LimitStoreError> {
        let store = Self::open(url)?;
        store.connection().await?;
        Ok(store)
    }

    /// Prefixes every key with `prefix:` (default `rl`). Instances that must
    /// share limits use the same prefix.
    pub fn with_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Names the buckets of users (and of custom keys) in Redis by a
    /// digest keyed with `secret`; give every instance sharing the buckets
    /// the same secret. Without it, a random secret kept in Redis is used
    /// (see the [module docs](crate::RedisStore)).
    pub fn with_key_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.names = Arc::new(Names {
            fixed: Some(blake3::derive_key(NAMES_CONTEXT, secret.as_ref())),
            read: std::sync::Mutex::new(None),
        });
        self
    }

    /// Bounds each check, connecting included (default 250 ms).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a failure, answers [`LimitStoreError::Down`] at once for this long
    /// before trying again (default 1 s).
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Reads the time from `clock` and passes it to the scripts, instead of
    /// the server's `TIME`. Every instance sharing the buckets must then read
    /// the same time: meant for tests with a [`FakeClock`](crate::clock::FakeClock).
    pub fn clock(mut self, clock: impl MonotonicClock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of `bucket`, `prefix:name:value`, with a user-chosen
    /// value still to be replaced by its digest ([`KeyName::finish`]).
    pub(crate) fn key_of(&self, bucket: &Bucket<'_>) -> KeyName {
        let mut head = String::with_capacity(self.prefix.len() + 48);
        head.push_str(&self.prefix);
        head.push(':');
        let hidden = bucket.write_key_hiding_names(&mut head);
        KeyName { head, hidden }
    }

    /// The digest key of names: the configured one, else the secret stored
    /// in Redis (created by the first instance, re-asserted and read again
    /// every 10 s).
    pub(crate) async fn names_key(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<[u8; 32], LimitStoreError> {
        if let Some(key) = self.names.fixed {
            return Ok(key);
        }
        let now = QuantaClock.now();
        let mine = {
            let read = self.names.read.lock().unwrap_or_else(|e| e.into_inner());
            match &*read {
                Some((_, key, at)) if now.saturating_sub(*at) < NAMES_REFRESH_NANOS => {
                    return Ok(*key);
                }
                Some((secret, ..)) => secret.clone(),
                None => {
                    use rand::RngCore;
                    let mut bytes = [0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut bytes);
                    bytes.iter().map(|b| format!("{b:02x}")).collect()
                }
            }
        };
        let name = format!("{}:names-key", self.prefix);
        let (_, stored): (Option<String>, String) = redis::pipe()
            .cmd("SET")
            .arg(&name)
            .arg(&mine)
            .arg("NX")
            .cmd("GET")
            .arg(&name)
            .query_async(conn)
            .await
            .map_err(LimitStoreError::backend)?;
        let key = blake3::derive_key(NAMES_CONTEXT, stored.as_bytes());
        *self.names.read.lock().unwrap_or_else(|e| e.into_inner()) = Some((stored, key, now));
        Ok(key)
    }

    /// The scripts' first argument: now in microseconds, or empty for the
    /// server's time.
    pub(crate) fn now_arg(&self) -> String {
        match &self.clock {
            Some(c) => (c.now() / 1000).to_string(),
            None => String::new(),
        }
    }

    /// Charges (`charge > 0`) or reads (`charge == 0`) one bucket in one
    /// round trip; see [`CHARGE`].
    async fn charge_one(
        &self,
        key: KeyName,
        now: String,
        quota: Quota,
        charge: u32,
        max_debt: Duration,
    ) -> Result<Decision, LimitStoreError> {
        self.guarded(async {
            let mut conn = self.connection().await?;
            let key = match key.hidden {
                Some(_) => key.finish(&self.names_key(&mut conn).await?),
                None => key.head,
            };
            let q = quota.rounded_to_micros();
            let max_debt = u64::try_from(max_debt.as_micros()).unwrap_or(u64::MAX / 2);
            let reply: Vec<i64> = charge_script()
                .key(key)
                .arg(now)
                .arg(q.interval_nanos() / 1000)
                .arg(q.tau_nanos() / 1000)
                .arg(charge)
                .arg(max_debt)
                .invoke_async(&mut conn)
                .await
                .map_err(LimitStoreError::backend)?;
            let micros = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1000);
            match reply[..] {
                [1, reset, _] => Ok(Decision::allowed(q, micros(reset))),
                [0, reset, retry] => Ok(Decision::denied(q, micros(reset), micros(retry))),
                _ => Err(LimitStoreError::backend(format!(
                    "unexpected script reply of {} items",
                    reply.len()
                ))),
            }
        })
        .await
    }

    /// Bounds `op` by the timeout, and answers [`LimitStoreError::Down`] at once
    /// during the retry interval after a failure.
    pub(crate) async fn guarded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, LimitStoreError>>,
    ) -> Result<T, LimitStoreError> {
        let now = QuantaClock.now();
        if now < self.shared.down_until.load(Ordering::Relaxed) {
            return Err(LimitStoreError::Down);
        }
        let result = tokio::time::timeout(self.timeout, op).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(LimitStoreError::Timeout),
        };
        if result.is_err() {
            let retry = u64::try_from(self.retry_interval.as_nanos()).unwrap_or(u64::MAX);
            self.shared
                .down_until
                .store(QuantaClock.now().saturating_add(retry), Ordering::Relaxed);
        }
        result
    }

    /// Checks every bucket in one atomic round trip; see [`CHECK_ALL`].
    async fn run(&self, checks: &[RedisCheck], now: String) -> Result<Decisions, LimitStoreError> {
        let mut conn = self.connection().await?;
        // Only buckets named by a user-chosen identifier need the key.
        let names = if checks.iter().any(|c| c.key.hidden.is_some()) {
            self.names_key(&mut conn).await?
        } else {
            [0; 32]
        };
        let mut inv = check_all_script().prepare_invoke();
        inv.arg(now);
        let mut quotas = Vec::with_capacity(checks.len());
        for c in checks {
            let q = c.quota.rounded_to_micros();
            let interval = q.interval_nanos() / 1000;
            inv.key(c.key.finish(&names))
                .arg(interval)
                .arg(q.tau_nanos() / 1000)
                .arg(c.cost.min(q.burst()));
            quotas.push(q);
        }
        let reply: Vec<i64> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(LimitStoreError::backend)?;
        if reply.len() != 3 * checks.len() {
            return Err(LimitStoreError::backend(format!(
                "unexpected script reply of {} items",
                reply.len()
            )));
        }
        let micros = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1000);
        Ok(reply
            .chunks_exact(3)
            .zip(quotas)
            .map(|(r, q)| {
                if r[0] == 1 {
                    Decision::allowed(q, micros(r[1]))
                } else {
                    Decision::denied(q, micros(r[1]), micros(r[2]))
                }
            })
            .collect())
    }

    pub(crate) async fn connection(&self) -> Result<ConnectionManager, LimitStoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            // No retry loop inside a check (its backoff starts at 1 s): a
            // failed attempt fails the check, and the retry interval above
            // paces the next attempt.
            .set_number_of_retries(0);
        let conn = self
            .shared
            .conn
            .get_or_try_init(|| async {
                match tokio::time::timeout(
                    self.timeout,
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await
                {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(LimitStoreError::backend(e)),
                    Err(_) => Err(LimitStoreError::Timeout),
                }
            })
            .await?;
        Ok(conn.clone())
    }
}

impl RateLimitStore for RedisStore {
    fn check_all(&self, buckets: &[Bucket<'_>]) -> StoreFuture<Decisions> {
        let checks: Vec<RedisCheck> = buckets
            .iter()
            .map(|b| RedisCheck {
                key: self.key_of(b),
                quota: b.quota,
                cost: b.cost,
            })
            .collect();
        let now = self.now_arg();
        let this = self.clone();
        StoreFuture::pending(async move { this.guarded(this.run(&checks, now)).await })
    }

    fn charge(&self, bucket: &Bucket<'_>, max_debt: Duration) -> StoreFuture<Decision> {
        let (key, now) = (self.key_of(bucket), self.now_arg());
        let (quota, cost) = (bucket.quota, bucket.cost);
        let this = self.clone();
        StoreFuture::pending(async move { this.charge_one(key, now, quota, cost, max_debt).await })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.client.get_connection_info().addr)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("retry_interval", &self.retry_interval)
            .field("clock", &self.clock)
            .finish()
    }
}
