//! [`VerifierBuilder`]: the verifier's settings and its construction.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;

use super::{
    cache::{CacheInvalidator, KeyCache},
    guard::AttackGuard,
    usage::UsageRecorder,
    Inner, Verifier,
};
use crate::{
    clock::SystemClock, clock::WallClock, digest::DigestKey, scope::ScopePolicy, KeyStore,
    SecretHasher, TokenPrefix,
};

/// Builds a [`Verifier`].
pub struct VerifierBuilder {
    store: Arc<dyn KeyStore>,
    hasher: Option<SecretHasher>,
    prefixes: Vec<TokenPrefix>,
    policy: ScopePolicy,
    pub(crate) clock: Arc<dyn WallClock>,
    cache_capacity: usize,
    negative_ttl: Duration,
    failure_backoff: Duration,
    usage_interval: Duration,
    #[cfg(feature = "jwt")]
    jwt: Option<crate::jwt::JwtAuthority>,
}

// By hand: the store is a trait object.
impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("prefixes", &self.prefixes)
            .field("cache_capacity", &self.cache_capacity)
            .field("negative_ttl", &self.negative_ttl)
            .field("failure_backoff", &self.failure_backoff)
            .field("usage_interval", &self.usage_interval)
            .finish_non_exhaustive()
    }
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

    /// The clock for expiry checks (tests use [`FakeClock`](crate::clock::FakeClock)).
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
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
        let weak: std::sync::Weak<dyn crate::store::ChangeListener> =
            Arc::downgrade(&(invalidator.clone() as Arc<dyn crate::store::ChangeListener>));
        self.store.changes().subscribe(weak);
        // Subscribed after the cache: a connection's re-read never finds a stale entry.
        let watches = super::watch::Watches::new(
            self.store.clone(),
            self.clock.clone(),
            self.policy.clone(),
            #[cfg(feature = "jwt")]
            self.jwt.as_ref().map(|j| j.secret_store()),
        );
        Verifier {
            inner: Arc::new(Inner {
                usage: UsageRecorder::new(self.store.clone(), self.usage_interval),
                store: self.store,
                hasher: self.hasher.unwrap_or_default(),
                prefixes: self.prefixes,
                policy: self.policy,
                clock: self.clock,
                digest_key: DigestKey::random(),
                cache,
                guard,
                inflight: DashMap::new(),
                #[cfg(feature = "jwt")]
                jwt: self.jwt,
                _invalidator: invalidator,
                watches,
            }),
        }
    }
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
}
