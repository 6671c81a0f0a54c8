//! The verifier: token in, [`AuthContext`] or [`AuthError`] out.
//!
//! Hot path: a token whose secret was verified once is checked against an
//! in-memory cache (keyed BLAKE3 digest of the token, constant-time compare):
//! no argon2, no store read. Store changes (revoke, rotate) drop cache entries
//! synchronously through the store's [`ChangeFeed`](crate::ChangeFeed), so a
//! request made after `revoke` returns is refused.
//!
//! Cold path: parse and checksum (garbage never reaches the store), store read,
//! the record's secret check (32 bits of a fast hash: all but one wrong
//! secret in 2^32 stop here), then one argon2 run per key id at a time
//! (concurrent requests with the same token wait for it and then hit the
//! cache). Argon2 parameters are cheap by default (the secrets are random
//! 256-bit values), so a restarted instance serves every key at once.
//!
//! Attack path: see `guard.rs`: unknown ids cost one store read and are then
//! remembered; a key's secret check is remembered, so a wrong secret costs a
//! fast hash and no store read; no backoff locks the owner out (only legacy
//! records without a check keep a per-id backoff until they migrate).
//!
//! Resync: a [`KeyChange::All`](crate::KeyChange::All) makes every cached
//! entry confirm itself against the store on its next use (record compare,
//! no argon2); open connections re-check spread over a few seconds.

mod cache;
mod guard;
mod usage;

use std::{
    sync::{
        atomic::Ordering::{Acquire, Relaxed},
        Arc,
    },
    time::Duration,
};

use dashmap::DashMap;
use rand::{rngs::OsRng, RngCore};

use self::{
    cache::{CacheEntry, CacheInvalidator, KeyCache},
    guard::{AttackGuard, Verdict},
    usage::UsageRecorder,
};
use crate::{
    clock::nanos, AuthContext, AuthError, Clock, HashError, KeyId, KeyPolicy, KeyRecord, KeyStore,
    ParsedToken, RejectReason, ScopePolicy, SecretCheck, SecretHasher, SystemClock, TokenError,
    TokenPrefix,
};

/// Verifies API-key tokens. Cheap to clone; clones share caches.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_core::*;
/// let store = Arc::new(MemoryKeyStore::new());
/// let hasher = SecretHasher::for_tests();
/// let prefix = TokenPrefix::new("sk_live_").unwrap();
/// let issuer = KeyIssuer::new(store.clone(), hasher.clone(), prefix.clone());
/// let verifier = Verifier::builder(store).hasher(hasher).prefix(prefix).build();
///
/// let key = issuer
///     .issue(NewKey::new(Principal::user("alice"), "n8n", ScopeSet::parse(["skills.invoke"]).unwrap()))
///     .await
///     .unwrap();
/// let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
/// assert!(ctx.scopes().has("skills.invoke"));
///
/// issuer.revoke(key.record.id).await.unwrap();
/// let err = verifier.verify(key.token.expose_secret()).await.unwrap_err();
/// assert_eq!(err.reason(), RejectReason::Revoked);
/// # });
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    hasher: SecretHasher,
    prefixes: Vec<TokenPrefix>,
    policy: ScopePolicy,
    clock: Arc<dyn Clock>,
    digest_key: [u8; 32],
    cache: Arc<KeyCache>,
    guard: Arc<AttackGuard>,
    inflight: DashMap<KeyId, Arc<tokio::sync::Mutex<()>>>,
    usage: UsageRecorder,
    #[cfg(feature = "jwt")]
    jwt: Option<crate::jwt::JwtAuthority>,
    // Keeps the feed subscription alive as long as the verifier.
    _invalidator: Arc<CacheInvalidator>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("prefixes", &self.inner.prefixes)
            .field("cached_keys", &self.inner.cache.entries.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Verifier`].
pub struct VerifierBuilder {
    store: Arc<dyn KeyStore>,
    hasher: Option<SecretHasher>,
    prefixes: Vec<TokenPrefix>,
    policy: ScopePolicy,
    clock: Arc<dyn Clock>,
    cache_capacity: usize,
    negative_ttl: Duration,
    failure_backoff: Duration,
    usage_interval: Duration,
    #[cfg(feature = "jwt")]
    jwt: Option<crate::jwt::JwtAuthority>,
}

impl VerifierBuilder {
    /// Also accept JWTs signed with per-user secrets. The kind of a token is
    /// told from its shape (`eyJ…` with two dots), never by trying both.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn jwt(mut self, authority: crate::jwt::JwtAuthority) -> Self {
        self.jwt = Some(authority);
        self
    }

    /// The hasher (share it with the [`KeyIssuer`](crate::KeyIssuer)). Default: argon2id defaults.
    pub fn hasher(mut self, hasher: SecretHasher) -> Self {
        self.hasher = Some(hasher);
        self
    }

    /// Accept tokens with this prefix; call again for more. Default: any valid prefix.
    pub fn prefix(mut self, prefix: TokenPrefix) -> Self {
        self.prefixes.push(prefix);
        self
    }

    /// Scope implications applied to every key's scopes.
    pub fn scope_policy(mut self, policy: ScopePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock for expiry checks (tests use [`ManualClock`](crate::ManualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Most keys kept in the verified cache (default 100 000).
    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// How long unknown ids and wrong secrets are remembered (default 60 s).
    pub fn negative_ttl(mut self, d: Duration) -> Self {
        self.negative_ttl = d;
        self
    }

    /// After a wrong secret, at most one argon2 run per key id per this (default 1 s).
    pub fn failure_backoff(mut self, d: Duration) -> Self {
        self.failure_backoff = d;
        self
    }

    /// `last_used_at` is reported at most once per key per this (default 60 s).
    pub fn last_used_interval(mut self, d: Duration) -> Self {
        self.usage_interval = d;
        self
    }

    /// Builds the verifier and subscribes it to the store's change feed.
    pub fn build(self) -> Verifier {
        let to_nanos = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        let cache = Arc::new(KeyCache::new(self.cache_capacity));
        let guard = Arc::new(AttackGuard::new(
            to_nanos(self.negative_ttl),
            to_nanos(self.failure_backoff),
            self.cache_capacity,
        ));
        let invalidator = Arc::new(CacheInvalidator {
            cache: cache.clone(),
            guard: guard.clone(),
            ended: tokio::sync::broadcast::channel(64).0,
        });
        let weak: std::sync::Weak<dyn crate::ChangeListener> =
            Arc::downgrade(&(invalidator.clone() as Arc<dyn crate::ChangeListener>));
        self.store.changes().subscribe(weak);
        let mut digest_key = [0u8; 32];
        OsRng.fill_bytes(&mut digest_key);
        Verifier {
            inner: Arc::new(Inner {
                usage: UsageRecorder::new(self.store.clone(), self.usage_interval),
                store: self.store,
                hasher: self.hasher.unwrap_or_default(),
                prefixes: self.prefixes,
                policy: self.policy,
                clock: self.clock,
                digest_key,
                cache,
                guard,
                inflight: DashMap::new(),
                #[cfg(feature = "jwt")]
                jwt: self.jwt,
                _invalidator: invalidator,
            }),
        }
    }
}

enum Cached {
    Hit(Result<AuthContext, AuthError>),
    Miss,
    /// A hit to confirm against the store: the hash it was verified with.
    Confirm(Arc<str>),
}

fn token_reason(e: TokenError) -> RejectReason {
    match e {
        TokenError::TooLong | TokenError::Malformed => RejectReason::Malformed,
        TokenError::WrongPrefix => RejectReason::WrongPrefix,
        TokenError::BadChecksum => RejectReason::BadChecksum,
    }
}

/// A store failure: logged here, answered with a generic 503 (the detail may
/// describe infrastructure).
fn store_failed(e: crate::StoreError) -> AuthError {
    tracing::warn!(error = %e, "key store read failed");
    AuthError::unavailable("Authentication service temporarily unavailable")
}

/// Connections re-checked after a resync wait a random delay below this,
/// so a resync does not send every open connection to the store at once.
pub(crate) const RECHECK_SPREAD: Duration = Duration::from_secs(3);
/// Attempts at a re-check after a resync before failing closed.
const RECHECK_ATTEMPTS: u32 = 3;

fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(OsRng.next_u64() % nanos.max(1))
}

/// Reads the state of a long-lived connection's credential. After a resync
/// the read waits a random delay below [`RECHECK_SPREAD`] first, and a
/// failed read is retried (spread out again) a few times before the error
/// is returned (and the connection ends, failing closed): a store blip
/// becomes neither a thundering herd nor a mass disconnect.
pub(crate) async fn recheck<T, E, F, Fut>(after_resync: bool, mut read: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    if !after_resync {
        return read().await;
    }
    let mut attempt = 1;
    loop {
        tokio::time::sleep(jitter(RECHECK_SPREAD * attempt)).await;
        match read().await {
            Err(_) if attempt < RECHECK_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

/// How long a client told "busy" should wait.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A hasher failure: a full queue is 503 with `Retry-After`; anything else
/// (a corrupt stored hash) a generic 503.
fn hash_failed(id: KeyId) -> impl FnOnce(HashError) -> AuthError {
    move |e| match e {
        HashError::Busy => {
            tracing::warn!(key_id = %id, "argon2 queue full; refusing with 503");
            AuthError::unavailable("Authentication service busy; retry shortly")
                .with_retry_after(BUSY_RETRY_AFTER)
        }
        e => {
            tracing::error!(key_id = %id, error = %e, "stored hash unusable");
            AuthError::unavailable("Authentication service temporarily unavailable")
        }
    }
}

fn unauthorized(reason: RejectReason) -> AuthError {
    AuthError::unauthorized(reason)
}

impl Verifier {
    /// Starts building a verifier over `store`.
    pub fn builder(store: Arc<dyn KeyStore>) -> VerifierBuilder {
        VerifierBuilder {
            store,
            hasher: None,
            prefixes: Vec::new(),
            policy: ScopePolicy::default(),
            clock: Arc::new(SystemClock),
            cache_capacity: 100_000,
            negative_ttl: Duration::from_secs(60),
            failure_backoff: Duration::from_secs(1),
            usage_interval: Duration::from_secs(60),
            #[cfg(feature = "jwt")]
            jwt: None,
        }
    }

    /// The store behind this verifier.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// The clock this verifier reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The token prefixes accepted (empty: any).
    pub fn prefixes(&self) -> &[TokenPrefix] {
        &self.inner.prefixes
    }

    /// Number of keys in the verified cache.
    pub fn cached_keys(&self) -> usize {
        self.inner.cache.entries.len()
    }

    /// Verifies a token.
    ///
    /// Errors are [`AuthError::unauthorized`] with the reason (malformed, bad
    /// checksum, unknown, revoked, expired, wrong secret, throttled), or
    /// [`AuthError::unavailable`] when the store fails: never a pass.
    pub async fn verify(&self, token: &str) -> Result<AuthContext, AuthError> {
        #[cfg(feature = "jwt")]
        if crate::jwt::looks_like_jwt(token) {
            return match &self.inner.jwt {
                Some(jwt) => match jwt.verify_cached(token) {
                    Some(result) => result,
                    None => Box::pin(jwt.verify_uncached(token)).await,
                },
                None => Err(unauthorized(RejectReason::Malformed)),
            };
        }
        let (id, digest) = self.cache_key(token)?;
        match self.check_cached_now(id, &digest) {
            Cached::Hit(result) => return self.refine(token, result),
            Cached::Confirm(..) => {}
            // Settle what needs no I/O before allocating the slow path.
            Cached::Miss => self.settle_miss(token, id, &digest)?,
        }
        // Boxed so the hot path's future stays small.
        Box::pin(self.verify_uncached(token, id, digest)).await
    }

    /// The synchronous hot path: `Some` when the token is decided without
    /// I/O (a cache hit, or a token that is not well formed), `None` when
    /// [`Verifier::verify`] would have to read the store or run argon2.
    pub fn verify_cached(&self, token: &str) -> Option<Result<AuthContext, AuthError>> {
        #[cfg(feature = "jwt")]
        if crate::jwt::looks_like_jwt(token) {
            return self
                .inner
                .jwt
                .as_ref()
                .and_then(|jwt| jwt.verify_cached(token));
        }
        let (id, digest) = match self.cache_key(token) {
            Ok(k) => k,
            Err(e) => return Some(Err(e)),
        };
        match self.check_cached_now(id, &digest) {
            Cached::Hit(result) => {
                crate::metrics::cache_hit();
                Some(self.refine(token, result))
            }
            Cached::Confirm(..) => {
                crate::metrics::cache_miss();
                None
            }
            // Bad checksums, remembered unknown ids and wrong secrets for a
            // key whose check is known are settled here too, so a flood of
            // them never leaves the synchronous path.
            Cached::Miss => {
                crate::metrics::cache_miss();
                self.settle_miss(token, id, &digest).err().map(Err)
            }
        }
    }

    /// What a cache miss can be refused for without I/O.
    fn settle_miss(&self, token: &str, id: KeyId, digest: &[u8; 32]) -> Result<(), AuthError> {
        let parsed = self
            .parse(token)
            .map_err(|e| unauthorized(token_reason(e)))?;
        self.check_guard(id, digest)?;
        self.check_known(&parsed)
    }

    /// Key id and keyed digest of the token, from the token's shape.
    fn cache_key(&self, token: &str) -> Result<(KeyId, [u8; 32]), AuthError> {
        let shape = crate::token::shape(token).filter(|s| self.prefix_ok(s.prefix));
        let Some(shape) = shape else {
            let reason = self
                .parse(token)
                .err()
                .map_or(RejectReason::Malformed, token_reason);
            return Err(unauthorized(reason));
        };
        // The whole token, so a token that differs anywhere (checksum and
        // prefix included) misses, and is then judged by the full parse.
        let digest = *blake3::keyed_hash(&self.inner.digest_key, token.as_bytes()).as_bytes();
        Ok((shape.key_id, digest))
    }

    /// A cache hit that failed on the digest may be a typo: say "bad checksum".
    fn refine(
        &self,
        token: &str,
        result: Result<AuthContext, AuthError>,
    ) -> Result<AuthContext, AuthError> {
        match result {
            Err(e) if e.reason() == RejectReason::WrongSecret => match self.parse(token) {
                Err(te) => Err(unauthorized(token_reason(te))),
                Ok(_) => Err(e),
            },
            other => other,
        }
    }

    async fn verify_uncached(
        &self,
        token: &str,
        id: KeyId,
        digest: [u8; 32],
    ) -> Result<AuthContext, AuthError> {
        let inner = &*self.inner;
        if let Some(result) = self.check_cached(id, &digest).await {
            return self.refine(token, result);
        }
        let parsed = self
            .parse(token)
            .map_err(|e| unauthorized(token_reason(e)))?;
        self.check_guard(id, &digest)?;
        self.check_known(&parsed)?;

        // One argon2 run per key id at a time; the others wait and hit the cache.
        let lock = inner.inflight.entry(id).or_default().clone();
        let result = {
            let _running = lock.lock().await;
            match self.check_cached(id, &digest).await {
                Some(result) => result,
                None => self.verify_cold(&parsed, digest).await,
            }
        };
        drop(lock);
        inner
            .inflight
            .remove_if(&id, |_, l| Arc::strong_count(l) == 1);
        result
    }

    /// What the attack guard remembers against this token.
    fn check_guard(&self, id: KeyId, digest: &[u8; 32]) -> Result<(), AuthError> {
        match self
            .inner
            .guard
            .check(id, digest, self.inner.clock.now_nanos())
        {
            Verdict::Unknown => Ok(()),
            Verdict::NoSuchKey => Err(unauthorized(RejectReason::UnknownKey)),
            Verdict::KnownWrong => Err(unauthorized(RejectReason::WrongSecret)),
            Verdict::Throttled => Err(unauthorized(RejectReason::Throttled)),
        }
    }

    /// A wrong secret for an id whose check was read before: refused with
    /// one fast hash, no store read, no argon2, no backoff.
    fn check_known(&self, parsed: &ParsedToken<'_>) -> Result<(), AuthError> {
        let id = parsed.key_id();
        match self.inner.guard.known_check(id) {
            Some(stored)
                if !stored.matches(SecretCheck::compute(id, parsed.prefix(), parsed.secret())) =>
            {
                Err(unauthorized(RejectReason::WrongSecret))
            }
            _ => Ok(()),
        }
    }

    fn prefix_ok(&self, prefix: &str) -> bool {
        let prefixes = &self.inner.prefixes;
        if prefixes.is_empty() {
            crate::token::is_valid_prefix(prefix.as_bytes())
        } else {
            prefixes.iter().any(|p| p.as_str() == prefix)
        }
    }

    fn parse<'t>(&self, token: &'t str) -> Result<ParsedToken<'t>, TokenError> {
        if self.inner.prefixes.is_empty() {
            ParsedToken::parse(token)
        } else {
            ParsedToken::parse_with_prefix(token, &self.inner.prefixes)
        }
    }

    /// `None` on a miss. A hit with a different digest is a wrong secret,
    /// decided without argon2.
    async fn check_cached(
        &self,
        id: KeyId,
        digest: &[u8; 32],
    ) -> Option<Result<AuthContext, AuthError>> {
        match self.check_cached_now(id, digest) {
            Cached::Hit(result) => Some(result),
            Cached::Miss => None,
            Cached::Confirm(hash) => self.confirm(id, digest, &hash).await,
        }
    }

    /// Decided under the map's read guard, without refcount traffic.
    fn check_cached_now(&self, id: KeyId, digest: &[u8; 32]) -> Cached {
        let inner = &*self.inner;
        let Some(entry) = inner.cache.entries.get(&id) else {
            return Cached::Miss;
        };
        // Four word XORs behind an optimisation barrier: constant time, and
        // a fraction of a byte-wise `subtle` loop on the hot path.
        if !constant_time_eq::constant_time_eq_32(&entry.digest, digest) {
            return Cached::Hit(Err(unauthorized(RejectReason::WrongSecret)));
        }
        let now = inner.clock.now_nanos();
        if let Some((t, reason)) = entry.ends {
            if now >= t {
                return Cached::Hit(Err(unauthorized(reason)));
            }
        }
        if !inner.store.changes().is_in_sync()
            || entry.confirmed.load(Relaxed) != inner.cache.resync.load(Relaxed)
        {
            return Cached::Confirm(entry.hash.clone());
        }
        self.report_use(id, &entry, now);
        Cached::Hit(Ok(entry.ctx.clone()))
    }

    /// Other instances' changes may be missed (the feed is out of sync, or
    /// was resynchronised since the entry was confirmed): confirm a hit
    /// against the store by comparing the record, without argon2. `None`
    /// when the stored hash changed (the cold path decides).
    async fn confirm(
        &self,
        id: KeyId,
        digest: &[u8; 32],
        hash: &str,
    ) -> Option<Result<AuthContext, AuthError>> {
        let inner = &*self.inner;
        // Read before the store: a resync during the read confirms again.
        let resync = inner.cache.resync.load(Acquire);
        let refused = |reason| {
            inner
                .cache
                .entries
                .remove_if(&id, |_, e| e.digest == *digest);
            Some(Err(unauthorized(reason)))
        };
        match crate::metrics::timed_read(inner.store.get(id)).await {
            Err(e) => Some(Err(store_failed(e))),
            Ok(None) => refused(RejectReason::UnknownKey),
            Ok(Some(r)) => {
                if let Err(reason) = r.check_active(inner.clock.now()) {
                    return refused(reason);
                }
                if *r.hash != *hash {
                    return None;
                }
                // An edit made elsewhere (scopes, policy) may have been
                // missed too: the context is rebuilt from the record.
                let ctx = self.context_for(&r);
                if let Some(mut entry) = inner.cache.entries.get_mut(&id) {
                    if entry.digest == *digest {
                        // A revocation time set elsewhere (a rotation's
                        // grace) may have been missed: take the record's.
                        entry.ends = r.ends().map(|(t, why)| (nanos(t), why));
                        entry.ctx = ctx.clone();
                        if inner.store.changes().is_in_sync() {
                            entry.confirmed.store(resync, Relaxed);
                        }
                        self.report_use(id, &entry, inner.clock.now_nanos());
                    }
                }
                Some(Ok(ctx))
            }
        }
    }

    fn report_use(&self, id: KeyId, entry: &CacheEntry, now: i64) {
        let last = entry.last_reported.load(Relaxed);
        if now - last >= self.inner.usage.interval
            && entry
                .last_reported
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.inner
                .usage
                .report(crate::KeyUse::new(id, self.inner.clock.now()));
        }
    }

    async fn verify_cold(
        &self,
        parsed: &ParsedToken<'_>,
        digest: [u8; 32],
    ) -> Result<AuthContext, AuthError> {
        let inner = &*self.inner;
        let (id, secret) = (parsed.key_id(), parsed.secret());
        let epoch = inner.cache.epoch.load(Acquire);
        let resync = inner.cache.resync.load(Acquire);
        let record = crate::metrics::timed_read(inner.store.get(id))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "key store read failed");
                AuthError::unavailable("Authentication service temporarily unavailable")
            })?;
        let now = inner.clock.now_nanos();
        let Some(record) = record else {
            inner.guard.record_unknown(id, now);
            return Err(unauthorized(RejectReason::UnknownKey));
        };
        record
            .check_active(inner.clock.now())
            .map_err(unauthorized)?;
        // The prefix is bound to the key: a `sk_test_` key presented as
        // `sk_live_` (checksum recomputed) is refused, old records included.
        if record.token_prefix() != Some(parsed.prefix()) {
            return Err(unauthorized(RejectReason::WrongPrefix));
        }
        let legacy = match record.check {
            Some(stored) => {
                inner.guard.remember_check(id, stored);
                if !stored.matches(SecretCheck::compute(id, parsed.prefix(), secret)) {
                    return Err(unauthorized(RejectReason::WrongSecret));
                }
                false
            }
            None => {
                // Another waiter may have failed while we queued.
                if let Verdict::KnownWrong | Verdict::Throttled =
                    inner.guard.check(id, &digest, now)
                {
                    return Err(unauthorized(RejectReason::Throttled));
                }
                true
            }
        };
        let ok = inner
            .hasher
            .verify(secret, &record.hash)
            .await
            .map_err(hash_failed(id))?;
        if !ok {
            // Only legacy records throttle the id: with a check, a secret
            // reaching argon2 and failing is a 1-in-2^32 event.
            inner
                .guard
                .record_wrong(id, digest, inner.clock.now_nanos(), legacy);
            return Err(unauthorized(RejectReason::WrongSecret));
        }
        let ctx = self.context_for(&record);
        let entry = CacheEntry {
            digest,
            ends: record.ends().map(|(t, r)| (nanos(t), r)),
            ctx: ctx.clone(),
            hash: record.hash.as_str().into(),
            last_reported: Default::default(),
            confirmed: resync.into(),
        };
        self.report_use(id, &entry, now);
        inner.cache.insert_if_unchanged(id, entry, epoch, now);
        if legacy || inner.hasher.needs_rehash(&record.hash) {
            self.spawn_rehash(id, parsed.prefix(), *secret, digest);
        }
        Ok(ctx)
    }

    fn context_for(&self, record: &KeyRecord) -> AuthContext {
        let ctx = AuthContext::for_key(
            record.id,
            record.name.as_str(),
            record.owner.clone(),
            self.inner.policy.expand(&record.scopes),
        );
        match KeyPolicy::of(record) {
            Some(policy) => ctx.with_key_policy(policy),
            None => ctx,
        }
    }

    /// Re-hashes with the current parameters and fills the secret check:
    /// how records move to the current scheme.
    fn spawn_rehash(&self, id: KeyId, prefix: &str, secret: [u8; 32], digest: [u8; 32]) {
        let secret = zeroize::Zeroizing::new(secret);
        let check = SecretCheck::compute(id, prefix, &secret);
        let this = self.clone();
        tokio::spawn(async move {
            let inner = &*this.inner;
            match inner.hasher.hash(&secret).await {
                Ok(phc) => match inner.store.update_hash_and_check(id, &phc, check).await {
                    Ok(()) => {
                        inner.guard.remember_check(id, check);
                        // The cached entry was verified with this secret:
                        // point it at the new hash instead of dropping it
                        // (which would cost another argon2 run).
                        if let Some(mut e) = inner.cache.entries.get_mut(&id) {
                            if e.digest == digest {
                                e.hash = phc.as_str().into();
                            }
                        }
                        tracing::info!(key_id = %id, "re-hashed key with current parameters");
                    }
                    Err(e) => tracing::warn!(key_id = %id, error = %e, "re-hash not stored"),
                },
                Err(e) => tracing::warn!(key_id = %id, error = %e, "re-hash failed"),
            }
        });
    }

    /// Resolves once key `id` stops working: revoked (at once, or when a
    /// rotation's grace period ends), expired, or gone. For connections that
    /// authenticate once and stay open (WebSockets): close them when it
    /// resolves, so revocation reaches them too. A store error while checking
    /// counts as ended (fail closed).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use auth_core::*;
    /// # let store = Arc::new(MemoryKeyStore::new());
    /// # let issuer = KeyIssuer::new(store.clone(), SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
    /// # let verifier = Verifier::builder(store).hasher(SecretHasher::for_tests()).build();
    /// # let key = issuer.issue(NewKey::new(Principal::user("a"), "ws", ScopeSet::empty())).await.unwrap();
    /// let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
    /// let ended = verifier.key_ended(ctx.key_id().unwrap());
    /// issuer.revoke(key.record.id).await.unwrap();
    /// ended.await; // close the connection here
    /// # });
    /// ```
    pub fn key_ended(&self, id: KeyId) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Subscribed before the store is read, so no change can slip between.
        let mut changes = self.inner._invalidator.ended.subscribe();
        let (store, clock) = (self.inner.store.clone(), self.inner.clock.clone());
        async move {
            let mut after_resync = false;
            loop {
                let record = recheck(after_resync, || store.get(id)).await;
                let ends = match record {
                    Ok(Some(r)) if r.check_active(clock.now()).is_ok() => r.ends().map(|(t, _)| t),
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(key_id = %id, error = %e, "cannot confirm a connection's key; ending it");
                        return;
                    }
                };
                let until_end = async {
                    match ends {
                        Some(t) => {
                            let left = (t - clock.now()).max(time::Duration::ZERO);
                            tokio::time::sleep(left.unsigned_abs()).await
                        }
                        None => std::future::pending().await,
                    }
                };
                let this_key_changed = async {
                    loop {
                        match changes.recv().await {
                            Ok(Some(other)) if other != id => continue,
                            Ok(Some(_)) => return false,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                // The verifier is gone: nothing more will be heard.
                                return std::future::pending().await;
                            }
                            // Everything, or missed messages: check again,
                            // spread out (every connection heard the same).
                            _ => return true,
                        }
                    }
                };
                after_resync = tokio::select! {
                    () = until_end => false,
                    resync = this_key_changed => resync,
                };
            }
        }
    }

    /// Resolves once the credential behind `ctx` stops working: for an API
    /// key, [`Verifier::key_ended`]; for a JWT, when its user's secret is
    /// regenerated ([`JwtAuthority::secret_ended`](crate::jwt::JwtAuthority::secret_ended)).
    /// Never resolves for a credential with nothing to watch (a JWT when
    /// this verifier has no JWT authority). Hold it next to a WebSocket or
    /// Socket.IO connection and close the connection when it resolves.
    pub fn credential_ended(
        &self,
        ctx: &AuthContext,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        if let Some(id) = ctx.key_id() {
            return Box::pin(self.key_ended(id));
        }
        #[cfg(feature = "jwt")]
        if let (Some(jwt), Some(generation)) = (&self.inner.jwt, ctx.secret_generation()) {
            return Box::pin(jwt.secret_ended(ctx.actor().user_id(), generation));
        }
        Box::pin(std::future::pending())
    }

    /// Writes out pending `last_used_at` updates (call on graceful shutdown).
    pub async fn flush_usage(&self) {
        self.inner.usage.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ErrorFormat, KeyIssuer, MemoryKeyStore, NewKey, Principal, ScopeSet};

    #[tokio::test]
    async fn a_full_argon2_queue_answers_503_with_retry_after() {
        let store = Arc::new(MemoryKeyStore::new());
        let prefix = TokenPrefix::new("st_").unwrap();
        let key = KeyIssuer::new(store.clone(), SecretHasher::for_tests(), prefix)
            .issue(NewKey::new(Principal::user("a"), "k", ScopeSet::empty()))
            .await
            .unwrap();
        let hasher = SecretHasher::with_concurrency(SecretHasher::for_tests().params(), 1)
            .unwrap()
            .with_queue(0);
        let verifier = Verifier::builder(store).hasher(hasher.clone()).build();
        // Every worker busy, no room to wait: refused at once, not queued.
        let workers = hasher.occupy_workers();
        let err = verifier
            .verify(key.token.expose_secret())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503);
        assert_eq!(err.retry_after(), Some(BUSY_RETRY_AFTER));
        let res = ErrorFormat::Flat.render(&err);
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
        // Nothing was remembered against the key: it works once there is room.
        drop(workers);
        verifier.verify(key.token.expose_secret()).await.unwrap();
    }
}
