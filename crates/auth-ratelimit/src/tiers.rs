//! Quotas per key: the owner's tier through the application's
//! [`QuotaResolver`], cached so the hot path does not wait, tightened by the
//! key's own rate limit.
//!
//! A rule marked with [`Rule::key_quota`](crate::Rule::key_quota) takes its
//! quota, for a request made with an API key, from:
//!
//! 1. the limiter's [`QuotaResolver`] (typically the owner's plan or tier),
//!    whose answer is cached per key and effective principal for a time to
//!    live read on the limiter's clock, else
//! 2. the rule's own quota ([`Rule::quota_by`](crate::Rule::quota_by), then
//!    the quota it was made with);
//!
//! then the key's own rate limit (`AuthContext::key_rate_limit`, set on the
//! key record) can only tighten that quota, in each dimension: the smaller
//! burst and the lower sustained rate of the two apply. A key owner cannot
//! raise their own limit past their tier, neither on average nor at once.
//!
//! Only a cache miss waits for the resolver; hits are a map read. A resolver
//! that fails refuses the request with 503 (fail closed), and is asked again
//! by the next request. The cache is bounded: past its capacity, expired
//! answers are dropped first, then all of them.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use auth_core::AuthContext;
use dashmap::DashMap;

use crate::{LimitKeyHasher, LimitStoreError, MonotonicClock, Quota};

/// What a cached answer is for: the API key (if any) and the effective
/// principal. Both, because one key may act for several subjects (impersonation)
/// whose tiers differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TierKey {
    key: Option<u64>,
    principal: [u64; 2],
}

/// Default number of answers kept.
pub const DEFAULT_TIER_CACHE_SIZE: usize = 100_000;

/// The application's lookup of a key's quota, typically its owner's tier
/// or plan. Its answers are cached (see the [module docs](crate::tiers)).
///
/// ```
/// use auth_core::AuthContext;
/// use auth_ratelimit::{tiers::QuotaResolver, Quota, LimitStoreError};
///
/// /// Pro users get 10x the default.
/// struct Plans;
///
/// impl QuotaResolver for Plans {
///     async fn quota(&self, ctx: &AuthContext) -> Result<Option<Quota>, LimitStoreError> {
///         // A database lookup by ctx.actor().user_id() in real life.
///         let pro = ctx.actor().user_id().ends_with("-pro");
///         Ok(pro.then(|| Quota::per_minute(600)))
///     }
/// }
/// ```
pub trait QuotaResolver: Send + Sync + 'static {
    /// The quota of requests made with `ctx`'s key, or `None` for the
    /// rule's own. An error refuses the request with 503.
    fn quota(
        &self,
        ctx: &AuthContext,
    ) -> impl Future<Output = Result<Option<Quota>, LimitStoreError>> + Send;
}

type Resolving<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Quota>, LimitStoreError>> + Send + 'a>>;

/// [`QuotaResolver`] behind a pointer.
trait DynResolver: Send + Sync {
    fn quota<'a>(&'a self, ctx: &'a AuthContext) -> Resolving<'a>;
}

impl<R: QuotaResolver> DynResolver for R {
    fn quota<'a>(&'a self, ctx: &'a AuthContext) -> Resolving<'a> {
        Box::pin(QuotaResolver::quota(self, ctx))
    }
}

#[derive(Clone, Copy)]
struct Cached {
    quota: Option<Quota>,
    /// MonotonicClock time after which the answer is asked again.
    expires: u64,
}

/// The resolver and its cache.
pub(crate) struct Tiers {
    resolver: Arc<dyn DynResolver>,
    cache: DashMap<TierKey, Cached, LimitKeyHasher>,
    ttl: u64,
    capacity: usize,
    clock: Arc<dyn MonotonicClock>,
    clearing: AtomicBool,
}

/// A cached answer, or none (ask the resolver).
pub(crate) enum Lookup {
    Hit(Option<Quota>),
    Miss,
}

impl Tiers {
    pub(crate) fn new(
        resolver: impl QuotaResolver,
        ttl: Duration,
        capacity: usize,
        clock: Arc<dyn MonotonicClock>,
    ) -> Self {
        Self {
            resolver: Arc::new(resolver),
            cache: DashMap::with_hasher(LimitKeyHasher::default()),
            ttl: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            clock,
            clearing: AtomicBool::new(false),
        }
    }

    /// The cache key of `ctx`: its API key and its effective principal.
    pub(crate) fn key_of(ctx: &AuthContext) -> TierKey {
        TierKey {
            key: ctx.key_id().map(|id| id.as_u64()),
            principal: ctx.principal_digest(),
        }
    }

    /// The cached answer for `ctx`, if it is still fresh.
    #[inline]
    pub(crate) fn lookup(&self, ctx: &AuthContext) -> Lookup {
        let key = Self::key_of(ctx);
        match self.cache.get(&key) {
            Some(c) if self.clock.now() < c.expires => Lookup::Hit(c.quota),
            _ => Lookup::Miss,
        }
    }

    /// Asks the resolver about `ctx` and caches the answer.
    pub(crate) async fn resolve(
        &self,
        ctx: &AuthContext,
    ) -> Result<Option<Quota>, LimitStoreError> {
        let quota = self.resolver.quota(ctx).await?;
        let expires = self.clock.now().saturating_add(self.ttl);
        if self.cache.len() >= self.capacity {
            self.make_room();
        }
        self.cache
            .insert(Self::key_of(ctx), Cached { quota, expires });
        Ok(quota)
    }

    /// Drops expired answers; if that is not enough, all of them (they are
    /// asked again on the next request of each key).
    #[cold]
    fn make_room(&self) {
        if self.clearing.swap(true, Ordering::Acquire) {
            return;
        }
        let now = self.clock.now();
        self.cache.retain(|_, c| now < c.expires);
        if self.cache.len() >= self.capacity {
            self.cache.clear();
        }
        self.clearing.store(false, Ordering::Release);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.len()
    }
}

impl fmt::Debug for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiers")
            .field("cached", &self.cache.len())
            .field("capacity", &self.capacity)
            .field("ttl", &Duration::from_nanos(self.ttl))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use auth_core::{KeyId, Principal, ScopeSet};

    use super::*;
    use crate::clock::FakeClock;

    struct Counting(Arc<AtomicU32>);

    impl QuotaResolver for Counting {
        async fn quota(&self, ctx: &AuthContext) -> Result<Option<Quota>, LimitStoreError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if ctx.actor().user_id() == "down" {
                return Err(LimitStoreError::Down);
            }
            Ok((ctx.actor().user_id() == "pro").then(|| Quota::per_minute(100)))
        }
    }

    fn ctx(key: u64, user: &str) -> AuthContext {
        AuthContext::for_key(
            KeyId::from_u64(key),
            "k",
            Principal::user(user),
            ScopeSet::empty(),
        )
    }

    #[tokio::test]
    async fn answers_are_cached_until_the_ttl_then_asked_again() {
        let calls = Arc::new(AtomicU32::new(0));
        let clock = FakeClock::new();
        let tiers = Tiers::new(
            Counting(calls.clone()),
            Duration::from_secs(60),
            10,
            Arc::new(clock.clone()),
        );
        let pro = ctx(1, "pro");
        assert!(matches!(tiers.lookup(&pro), Lookup::Miss));
        assert_eq!(
            tiers.resolve(&pro).await.unwrap(),
            Some(Quota::per_minute(100))
        );
        clock.advance(Duration::from_secs(59));
        assert!(matches!(tiers.lookup(&pro), Lookup::Hit(Some(_))));
        assert!(matches!(tiers.lookup(&ctx(2, "free")), Lookup::Miss));
        clock.advance(Duration::from_secs(1));
        assert!(matches!(tiers.lookup(&pro), Lookup::Miss), "expired");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A failure is not cached.
        let down = ctx(3, "down");
        assert!(matches!(
            tiers.resolve(&down).await,
            Err(LimitStoreError::Down)
        ));
        assert!(matches!(tiers.lookup(&down), Lookup::Miss));
    }

    /// Tiers by the effective principal, as an impersonation-aware app does.
    struct BySubject;

    impl QuotaResolver for BySubject {
        async fn quota(&self, ctx: &AuthContext) -> Result<Option<Quota>, LimitStoreError> {
            let pro = ctx.effective_principal().user_id() == "pro";
            Ok(pro.then(|| Quota::per_minute(100)))
        }
    }

    #[tokio::test]
    async fn one_key_acting_for_two_subjects_gets_each_subject_s_tier() {
        let tiers = Tiers::new(
            BySubject,
            Duration::from_secs(60),
            10,
            Arc::new(FakeClock::new()),
        );
        let admin = ctx(1, "admin");
        let as_pro = admin.with_subject(Principal::user("pro"), &ScopeSet::empty());
        let as_free = admin.with_subject(Principal::user("free"), &ScopeSet::empty());
        assert_eq!(
            tiers.resolve(&as_pro).await.unwrap(),
            Some(Quota::per_minute(100))
        );
        // Same key id, other subject: not the pro answer cached above.
        assert!(matches!(tiers.lookup(&as_free), Lookup::Miss));
        assert_eq!(tiers.resolve(&as_free).await.unwrap(), None);
        assert!(matches!(tiers.lookup(&as_free), Lookup::Hit(None)));
        assert!(matches!(tiers.lookup(&as_pro), Lookup::Hit(Some(_))));
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let clock = FakeClock::new();
        let tiers = Tiers::new(
            Counting(Arc::default()),
            Duration::from_secs(60),
            100,
            Arc::new(clock.clone()),
        );
        for k in 0..1000 {
            tiers.resolve(&ctx(k, "free")).await.unwrap();
            assert!(tiers.len() <= 100);
        }
    }
}
