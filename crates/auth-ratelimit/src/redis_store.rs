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
//! connection shared by all tasks, reconnecting by itself), or on a cluster
//! a `redis::cluster_async::ClusterConnection` (one such connection per
//! node), opened at the first check. Every check is bounded by a timeout;
//! after a failure the store answers [`LimitStoreError::Down`] at once for a
//! retry interval instead of making every request wait. What the limiter does then is its
//! [`OnStoreError`](crate::OnStoreError) policy.
//!
//! **Redis Cluster.** [`RedisStore::open`] with a `redis+cluster://` URL
//! listing some of the nodes (`redis+cluster://h1:6379,h2:6379`), or
//! [`RedisStore::open_cluster`] with node URLs, talks to a cluster
//! (following its slot map and redirects). There each bucket key carries
//! its own hash tag, `prefix:{rule:value}`, so the buckets spread over the
//! nodes and one bucket is always one slot. A script only ever touches keys
//! of one slot: the buckets of a request are checked by one script per slot
//! (all at once), each atomic on its slot; if one slot refuses, the tokens
//! the others took are given back. So the instances still never admit more
//! than a quota; while the give-back is under way a concurrent request may
//! be refused by a bucket that will have room again. A prefix with its own
//! hash tag (`{rl}`) puts every key on one slot, one script per request.
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
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    Client, ConnectionInfo, IntoConnectionInfo, Script,
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

/// Gives back unspent tokens of one bucket. ARGV: now (see [`NOW`]), the
/// refill interval in microseconds, the tokens. The arrival time moves back,
/// never before now.
const GIVE_BACK: &str = r"
local interval = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
local new = tat - tokens * interval
if new > now then
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000))
elseif tat > 0 then
  redis.call('DEL', KEYS[1])
end
return 1
";

fn give_back_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(&format!("{NOW}{GIVE_BACK}")))
}

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
    client: Server,
    prefix: Arc<str>,
    timeout: Duration,
    retry_interval: Duration,
    /// The script's time source; `None` for the server's `TIME`.
    clock: Option<Arc<dyn MonotonicClock>>,
    shared: Arc<Shared>,
    names: Arc<Names>,
}

/// One server, or a cluster.
#[derive(Clone)]
enum Server {
    Single(Client),
    /// The nodes given; the client is built at connection time, with the
    /// store's timeout.
    Cluster {
        nodes: Arc<[ConnectionInfo]>,
        /// CA certificates (PEM) for `rediss://` nodes.
        ca_pem: Option<Arc<[u8]>>,
    },
}

impl Server {
    fn cluster_client(
        nodes: &[ConnectionInfo],
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ClusterClient, LimitStoreError> {
        let builder = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(CLUSTER_RETRIES);
        #[cfg(feature = "tls")]
        let builder = match ca_pem {
            Some(pem) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            }),
            None => builder,
        };
        #[cfg(not(feature = "tls"))]
        let _ = ca_pem;
        builder.build().map_err(LimitStoreError::backend)
    }
}

/// The connection to a [`Server`]; either is multiplexed, cheap to clone.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Redirects (`MOVED`, `ASK`) a cluster command may follow within a check's
/// timeout: enough for a slot that moved or a replica promoted.
const CLUSTER_RETRIES: u32 = 2;

/// The URL schemes of a cluster: `redis+cluster://` and `rediss+cluster://`.
fn cluster_scheme(url: &str) -> Option<(&'static str, &str)> {
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        Some(("redis", rest))
    } else {
        url.strip_prefix("rediss+cluster://")
            .map(|rest| ("rediss", rest))
    }
}

/// The node URLs of `scheme+cluster://[user:pass@]h1:p1,h2:p2[/db][?query]`:
/// `scheme://[user:pass@]h1:p1[/db][?query]` and so on.
fn cluster_nodes(scheme: &str, rest: &str) -> Result<Vec<String>, LimitStoreError> {
    let (authority, tail) = rest
        .find(['/', '?'])
        .map_or((rest, ""), |i| rest.split_at(i));
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| match user {
            Some(user) => format!("{scheme}://{user}@{host}{tail}"),
            None => format!("{scheme}://{host}{tail}"),
        })
        .collect();
    if nodes.is_empty() {
        return Err(LimitStoreError::backend("a cluster URL names no node"));
    }
    Ok(nodes)
}

/// The part of `key` Redis Cluster hashes: the first non-empty `{...}`,
/// else the whole key. Keys with the same tag are on the same slot.
pub(crate) fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

struct Shared {
    conn: OnceCell<Connection>,
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
    /// `}` closing the bucket's hash tag on a cluster, else empty.
    pub(crate) tail: &'static str,
}

impl KeyName {
    pub(crate) fn finish(&self, names: &[u8; 32]) -> String {
        let mut key = String::with_capacity(self.head.len() + 33);
        key.push_str(&self.head);
        if let Some(hidden) = &self.hidden {
            let digest = blake3::keyed_hash(names, hidden.as_bytes());
            for b in &digest.as_bytes()[..16] {
                use std::fmt::Write;
                let _ = write!(key, "{b:02x}");
            }
        }
        key.push_str(self.tail);
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
    ///
    /// A `redis+cluster://` (or `rediss+cluster://`) URL is a Redis
    /// Cluster: it lists some of its nodes, comma-separated, each with the
    /// same credentials, as in
    /// `redis+cluster://user:password@10.0.0.1:6379,10.0.0.2:6379`; the
    /// other nodes are found from them (see [`open_cluster`](Self::open_cluster)).
    pub fn open(url: &str) -> Result<Self, LimitStoreError> {
        if let Some((scheme, rest)) = cluster_scheme(url) {
            return Self::cluster(cluster_nodes(scheme, rest)?, None);
        }
        let client = Client::open(url).map_err(LimitStoreError::backend)?;
        Ok(Self::from_client(Server::Single(client)))
    }

    /// A store for the Redis Cluster of which `nodes` (`redis://host:port`
    /// URLs, or `rediss://`) are members; one reachable node is enough to
    /// find the others. Bucket keys are hash-tagged per bucket and every
    /// script touches one slot (see the [module docs](crate::RedisStore)).
    /// Nothing is connected until the first check.
    pub fn open_cluster<I>(nodes: I) -> Result<Self, LimitStoreError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::cluster(nodes, None)
    }

    fn cluster<I>(nodes: I, ca_pem: Option<&[u8]>) -> Result<Self, LimitStoreError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Arc<[ConnectionInfo]> = nodes
            .into_iter()
            .map(|n| n.as_ref().into_connection_info())
            .collect::<Result<_, _>>()
            .map_err(LimitStoreError::backend)?;
        if nodes.is_empty() {
            return Err(LimitStoreError::backend(
                "a cluster needs at least one node",
            ));
        }
        // Built once now to refuse a bad configuration early.
        Server::cluster_client(&nodes, ca_pem, DEFAULT_REDIS_TIMEOUT)?;
        Ok(Self::from_client(Server::Cluster {
            nodes,
            ca_pem: ca_pem.map(Arc::from),
        }))
    }

    /// Whether this is a store on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Server::Cluster { .. })
    }

    /// Like [`open`](Self::open) for a `rediss://` URL whose server
    /// certificate is signed by the CA certificates in `ca_pem` (PEM) rather
    /// than a public CA (feature `tls`). A certificate from another CA is
    /// refused at the first connection.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn open_with_ca(url: &str, ca_pem: &[u8]) -> Result<Self, LimitStoreError> {
        if let Some((scheme, rest)) = cluster_scheme(url) {
            return Self::cluster(cluster_nodes(scheme, rest)?, Some(ca_pem));
        }
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = Client::build_with_tls(url, certs).map_err(LimitStoreError::backend)?;
        Ok(Self::from_client(Server::Single(client)))
    }

    fn from_client(client: Server) -> Self {
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
    /// On a cluster, `prefix:{name:value}`: the bucket is its own hash tag.
    pub(crate) fn key_of(&self, bucket: &Bucket<'_>) -> KeyName {
        let mut head = String::with_capacity(self.prefix.len() + 48);
        head.push_str(&self.prefix);
        head.push(':');
        let tail = if self.is_cluster() {
            head.push('{');
            "}"
        } else {
            ""
        };
        let hidden = bucket.write_key_hiding_names(&mut head);
        KeyName { head, hidden, tail }
    }

    /// The indices of `keys` in groups a script may touch together: all of
    /// them on one server; those of one slot on a cluster (by hash tag).
    pub(crate) fn slot_groups(&self, keys: &[String]) -> Vec<Vec<usize>> {
        if !self.is_cluster() {
            return vec![(0..keys.len()).collect()];
        }
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let tag = hash_tag(key);
            match groups.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, group)) => group.push(i),
                None => groups.push((tag, vec![i])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Gives back `tokens` to each bucket `key` whose refill interval is
    /// `interval_micros`: one script per bucket, one pipeline per slot.
    pub(crate) async fn give_back(
        &self,
        conn: &Connection,
        returns: &[(String, u64, u64)],
    ) -> Result<(), LimitStoreError> {
        let now = self.now_arg();
        let returns: Vec<&(String, u64, u64)> = returns.iter().filter(|r| r.2 > 0).collect();
        let keys: Vec<String> = returns.iter().map(|(k, ..)| k.clone()).collect();
        let pipes = self.slot_groups(&keys).into_iter().map(|group| {
            let mut pipe = redis::pipe();
            for i in group {
                let (key, interval, tokens) = returns[i];
                pipe.cmd("EVALSHA")
                    .arg(give_back_script().get_hash())
                    .arg(1)
                    .arg(key)
                    .arg(&now)
                    .arg(*interval)
                    .arg(*tokens)
                    .ignore();
            }
            let mut conn = conn.clone();
            async move {
                match pipe.query_async::<()>(&mut conn).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                        // Loaded once per server (every primary of a
                        // cluster); then sent again.
                        give_back_script()
                            .load_async(&mut conn)
                            .await
                            .map_err(LimitStoreError::backend)?;
                        pipe.query_async::<()>(&mut conn)
                            .await
                            .map_err(LimitStoreError::backend)
                    }
                    Err(e) => Err(LimitStoreError::backend(e)),
                }
            }
        });
        futures_util::future::try_join_all(pipes).await.map(|_| ())
    }

    /// Runs `script` over `keys`, with `args` (per key, `width` arguments
    /// after now) and a reply of `width` numbers per key: once for all of
    /// them on one server, once per slot at the same time on a cluster.
    /// Returns the replies in the order of `keys`, and the groups of keys
    /// that went together (each group atomic).
    pub(crate) async fn invoke_per_slot(
        &self,
        conn: &Connection,
        script: &Script,
        now: &str,
        keys: &[String],
        args: &[u64],
        width: usize,
    ) -> Result<(Vec<i64>, Vec<Vec<usize>>), LimitStoreError> {
        let groups = self.slot_groups(keys);
        let calls = groups.iter().map(|group| {
            let mut inv = script.prepare_invoke();
            inv.arg(now);
            for &i in group {
                inv.key(&keys[i]);
                for a in &args[i * width..(i + 1) * width] {
                    inv.arg(*a);
                }
            }
            let mut conn = conn.clone();
            async move {
                let reply: Vec<i64> = inv
                    .invoke_async(&mut conn)
                    .await
                    .map_err(LimitStoreError::backend)?;
                if reply.len() != width * group.len() {
                    return Err(LimitStoreError::backend(format!(
                        "unexpected script reply of {} items",
                        reply.len()
                    )));
                }
                Ok(reply)
            }
        });
        let replies = futures_util::future::try_join_all(calls).await?;
        let mut out = vec![0; width * keys.len()];
        for (group, reply) in groups.iter().zip(replies) {
            for (&i, r) in group.iter().zip(reply.chunks_exact(width)) {
                out[i * width..(i + 1) * width].copy_from_slice(r);
            }
        }
        Ok((out, groups))
    }

    /// The digest key of names: the configured one, else the secret stored
    /// in Redis (created by the first instance, re-asserted and read again
    /// every 10 s).
    pub(crate) async fn names_key(
        &self,
        conn: &mut Connection,
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
            let names = match key.hidden {
                Some(_) => self.names_key(&mut conn).await?,
                None => [0; 32],
            };
            let key = key.finish(&names);
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

    /// Checks every bucket in one atomic round trip (one per slot on a
    /// cluster, see the [module docs](crate::RedisStore)); see [`CHECK_ALL`].
    async fn run(&self, checks: &[RedisCheck], now: String) -> Result<Decisions, LimitStoreError> {
        let mut conn = self.connection().await?;
        // Only buckets named by a user-chosen identifier need the key.
        let names = if checks.iter().any(|c| c.key.hidden.is_some()) {
            self.names_key(&mut conn).await?
        } else {
            [0; 32]
        };
        let keys: Vec<String> = checks.iter().map(|c| c.key.finish(&names)).collect();
        let quotas: Vec<Quota> = checks.iter().map(|c| c.quota.rounded_to_micros()).collect();
        let mut args = Vec::with_capacity(3 * checks.len());
        for (c, q) in checks.iter().zip(&quotas) {
            args.extend([
                q.interval_nanos() / 1000,
                q.tau_nanos() / 1000,
                u64::from(c.cost.min(q.burst())),
            ]);
        }
        let (mut reply, groups) = self
            .invoke_per_slot(&conn, check_all_script(), &now, &keys, &args, 3)
            .await?;
        if groups.len() > 1 {
            // Slots that took their costs give them back if another refused.
            let refused: Vec<bool> = groups
                .iter()
                .map(|g| g.iter().any(|&i| reply[3 * i] != 1))
                .collect();
            if refused.contains(&true) {
                let mut returns = Vec::new();
                for (group, _) in groups.iter().zip(&refused).filter(|(_, r)| !**r) {
                    for &i in group {
                        let (interval, cost) = (args[3 * i], args[3 * i + 2]);
                        returns.push((keys[i].clone(), interval, cost));
                        let taken = i64::try_from(interval * cost).unwrap_or(i64::MAX);
                        reply[3 * i + 1] = reply[3 * i + 1].saturating_sub(taken).max(0);
                    }
                }
                self.give_back(&conn, &returns).await?;
            }
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

    pub(crate) async fn connection(&self) -> Result<Connection, LimitStoreError> {
        let conn = self
            .shared
            .conn
            .get_or_try_init(|| async {
                let opened = match &self.client {
                    Server::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(self.timeout)
                            .set_response_timeout(self.timeout)
                            // No retry loop inside a check (its backoff
                            // starts at 1 s): a failed attempt fails the
                            // check, and the retry interval above paces the
                            // next attempt.
                            .set_number_of_retries(0);
                        tokio::time::timeout(
                            self.timeout,
                            ConnectionManager::new_with_config(client.clone(), config),
                        )
                        .await
                        .map(|r| r.map(Connection::Single))
                    }
                    Server::Cluster { nodes, ca_pem } => {
                        let client =
                            Server::cluster_client(nodes, ca_pem.as_deref(), self.timeout)?;
                        tokio::time::timeout(self.timeout, client.get_async_connection())
                            .await
                            .map(|r| r.map(Connection::Cluster))
                    }
                };
                match opened {
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
        let mut d = f.debug_struct("RedisStore");
        match &self.client {
            Server::Single(client) => d.field("server", &client.get_connection_info().addr),
            Server::Cluster { nodes, .. } => d.field(
                "cluster",
                &nodes.iter().map(|n| n.addr.to_string()).collect::<Vec<_>>(),
            ),
        };
        d.field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("retry_interval", &self.retry_interval)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_nodes_with_one_set_of_credentials() {
        let (scheme, rest) =
            cluster_scheme("redis+cluster://u:p@a:7000,b:7001/0?protocol=resp3").unwrap();
        assert_eq!(
            cluster_nodes(scheme, rest).unwrap(),
            [
                "redis://u:p@a:7000/0?protocol=resp3",
                "redis://u:p@b:7001/0?protocol=resp3"
            ]
        );
        let (scheme, rest) = cluster_scheme("rediss+cluster://[::1]:7000").unwrap();
        assert_eq!(
            cluster_nodes(scheme, rest).unwrap(),
            ["rediss://[::1]:7000"]
        );
        assert!(cluster_scheme("redis://a:6379").is_none());
        assert!(cluster_nodes("redis", "").is_err());
        let store = RedisStore::open("redis+cluster://a:7000,b:7001").unwrap();
        assert!(store.is_cluster());
        assert!(!RedisStore::open("redis://a:6379").unwrap().is_cluster());
    }

    #[test]
    fn the_hash_tag_is_the_first_non_empty_braces() {
        assert_eq!(hash_tag("rl:{user:u:ab}"), "user:u:ab");
        assert_eq!(hash_tag("{rl}:{user:u:ab}"), "rl");
        assert_eq!(hash_tag("rl:{}:x{y}"), "rl:{}:x{y}");
        assert_eq!(hash_tag("rl:names-key"), "rl:names-key");
    }

    #[test]
    fn slot_groups_split_by_tag_only_on_a_cluster() {
        let keys: Vec<String> = ["p:{a:1}", "p:{b:2}", "p:{a:1}"].map(String::from).to_vec();
        let cluster = RedisStore::open_cluster(["redis://a:7000"]).unwrap();
        assert_eq!(cluster.slot_groups(&keys), [vec![0, 2], vec![1]]);
        let single = RedisStore::open("redis://a:6379").unwrap();
        assert_eq!(single.slot_groups(&keys), [vec![0, 1, 2]]);
    }
}
