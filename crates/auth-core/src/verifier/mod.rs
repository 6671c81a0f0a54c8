//! The verifier: token in, [`AuthContext`] or [`AuthError`] out.
//!
//! Hot path: a token whose secret was verified once is checked against an
//! in-memory cache (keyed BLAKE3 digest of the token, constant-time compare):
//! no argon2, no store read. Store changes (revoke, rotate) drop cache entries
//! synchronously through the store's [`ChangeFeed`](crate::ChangeFeed), so a
//! request made after `revoke` returns is refused.
//!
//! Cold path: parse and checksum (garbage never reaches the store), store read,
//! one argon2 run per key id at a time (concurrent requests with the same
//! token wait for it and then hit the cache).
//!
//! Attack path: see `guard.rs`: unknown ids cost one store read and are then
//! remembered; wrong secrets for a known id are remembered and throttled.

mod cache;
mod guard;
mod usage;

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use rand::{rngs::OsRng, RngCore};
use subtle::ConstantTimeEq;

use self::{
    cache::{CacheEntry, CacheInvalidator, KeyCache},
    guard::{AttackGuard, Verdict},
    usage::UsageRecorder,
};
use crate::{
    clock::nanos, AuthContext, AuthError, Clock, KeyId, KeyRecord, KeyStore, ParsedToken,
    RejectReason, ScopePolicy, SecretHasher, SystemClock, TokenError, TokenPrefix,
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
    /// A hit to confirm against the store: the context and the hash it was verified with.
    Confirm(AuthContext, Arc<str>),
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
            Cached::Miss => {
                self.parse(token)
                    .map_err(|e| unauthorized(token_reason(e)))?;
                self.check_guard(id, &digest)?;
            }
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
            Cached::Miss | Cached::Confirm(..) => {
                crate::metrics::cache_miss();
                None
            }
        }
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

        // One argon2 run per key id at a time; the others wait and hit the cache.
        let lock = inner.inflight.entry(id).or_default().clone();
        let result = {
            let _running = lock.lock().await;
            match self.check_cached(id, &digest).await {
                Some(result) => result,
                None => self.verify_cold(id, parsed.secret(), digest).await,
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
            Cached::Confirm(ctx, hash) => self.confirm(id, ctx, &hash).await,
        }
    }

    /// Decided under the map's read guard, without refcount traffic.
    fn check_cached_now(&self, id: KeyId, digest: &[u8; 32]) -> Cached {
        let inner = &*self.inner;
        let Some(entry) = inner.cache.entries.get(&id) else {
            return Cached::Miss;
        };
        if !bool::from(entry.digest[..].ct_eq(&digest[..])) {
            return Cached::Hit(Err(unauthorized(RejectReason::WrongSecret)));
        }
        let now = inner.clock.now_nanos();
        if let Some((t, reason)) = entry.ends {
            if now >= t {
                return Cached::Hit(Err(unauthorized(reason)));
            }
        }
        if !inner.store.changes().is_in_sync() {
            return Cached::Confirm(entry.ctx.clone(), entry.hash.clone());
        }
        self.report_use(id, &entry, now);
        Cached::Hit(Ok(entry.ctx.clone()))
    }

    /// Other instances' changes may be missed: confirm a hit against the store.
    async fn confirm(
        &self,
        id: KeyId,
        ctx: AuthContext,
        hash: &str,
    ) -> Option<Result<AuthContext, AuthError>> {
        let inner = &*self.inner;
        match crate::metrics::timed_read(inner.store.get(id)).await {
            Err(e) => Some(Err(store_failed(e))),
            Ok(None) => Some(Err(unauthorized(RejectReason::UnknownKey))),
            Ok(Some(r)) => {
                if let Err(reason) = r.check_active(inner.clock.now()) {
                    return Some(Err(unauthorized(reason)));
                }
                if *r.hash != *hash {
                    return None;
                }
                if let Some(entry) = inner.cache.entries.get(&id) {
                    self.report_use(id, &entry, inner.clock.now_nanos());
                }
                Some(Ok(ctx))
            }
        }
    }

    fn report_use(&self, id: KeyId, entry: &CacheEntry, now: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        let last = entry.last_reported.load(Relaxed);
        if now - last >= self.inner.usage.interval
            && entry
                .last_reported
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.inner.usage.report(id, self.inner.clock.now());
        }
    }

    async fn verify_cold(
        &self,
        id: KeyId,
        secret: &[u8; 32],
        digest: [u8; 32],
    ) -> Result<AuthContext, AuthError> {
        let inner = &*self.inner;
        let epoch = inner.cache.epoch.load(std::sync::atomic::Ordering::Acquire);
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
        // Another waiter may have failed while we queued.
        if let Verdict::KnownWrong | Verdict::Throttled = inner.guard.check(id, &digest, now) {
            return Err(unauthorized(RejectReason::Throttled));
        }
        let ok = inner
            .hasher
            .verify(secret, &record.hash)
            .await
            .map_err(|e| {
                tracing::error!(key_id = %id, error = %e, "stored hash unusable");
                AuthError::unavailable("Authentication service temporarily unavailable")
            })?;
        if !ok {
            inner
                .guard
                .record_wrong(id, digest, inner.clock.now_nanos());
            return Err(unauthorized(RejectReason::WrongSecret));
        }
        let ctx = self.context_for(&record);
        let entry = CacheEntry {
            digest,
            ends: record.ends().map(|(t, r)| (nanos(t), r)),
            ctx: ctx.clone(),
            hash: record.hash.as_str().into(),
            last_reported: Default::default(),
        };
        self.report_use(id, &entry, now);
        inner.cache.insert_if_unchanged(id, entry, epoch, now);
        if inner.hasher.needs_rehash(&record.hash) {
            self.spawn_rehash(id, *secret);
        }
        Ok(ctx)
    }

    fn context_for(&self, record: &KeyRecord) -> AuthContext {
        AuthContext::for_key(
            record.id,
            record.name.as_str(),
            record.owner.clone(),
            self.inner.policy.expand(&record.scopes),
        )
    }

    fn spawn_rehash(&self, id: KeyId, secret: [u8; 32]) {
        let secret = zeroize::Zeroizing::new(secret);
        let this = self.clone();
        tokio::spawn(async move {
            match this.inner.hasher.hash(&secret).await {
                Ok(phc) => match this.inner.store.update_hash(id, &phc).await {
                    Ok(()) => {
                        // Cached entries remember the old hash; drop them.
                        this.inner.cache.entries.remove(&id);
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
            loop {
                let ends = match store.get(id).await {
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
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                // The verifier is gone: nothing more will be heard.
                                return std::future::pending().await;
                            }
                            // This key, everything, or missed messages: check again.
                            _ => return,
                        }
                    }
                };
                tokio::select! {
                    () = until_end => {}
                    () = this_key_changed => {}
                }
            }
        }
    }

    /// Writes out pending `last_used_at` updates (call on graceful shutdown).
    pub async fn flush_usage(&self) {
        self.inner.usage.flush().await;
    }
}
