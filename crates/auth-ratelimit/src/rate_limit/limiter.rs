//! The rate limiter: rules, a store, and how answers are rendered.

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

use auth_core::{
    audit::RefusedFor, policy::CreditSpend, response::ErrorFormat, AuthContext, AuthError,
    KeyStore, RejectReason,
};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use time::OffsetDateTime;

use smallvec::SmallVec;

use crate::options::{limiter_setters, LimiterOptions};
use crate::{
    credits::{refill_in, CreditLedger},
    error::check_rule_name,
    fallback::{LimiterMemory, Stores},
    headers::{Checked, RateHeaders},
    key::{KeyValue, LimitKey},
    store::{Bucket, Decisions, RULES_INLINE},
    tiers::{Lookup, TierKey, Tiers, DEFAULT_TIER_CACHE_SIZE},
    ConfigError, HeaderStyle, KeyBy, MonotonicClock, OnStoreError, Quota, QuotaResolver,
    RateLimitLayer, RequestInfo, Rule, TrustedProxies,
};

/// A set of [`Rule`]s with their store. Build it once, then make layers
/// from it ([`RateLimiter::layer`]); clones share the buckets.
///
/// ```
/// use auth_ratelimit::{headers::HeaderStyle, Quota, RateLimiter, Rule};
/// use auth_core::client_ip::TrustedProxies;
/// use http::Method;
///
/// let limiter = RateLimiter::builder()
///     .rule(Rule::per_user("default", Quota::per_hour(200)))
///     .rule(Rule::per_ip("login", Quota::per_minute(5)).method(Method::POST).path("/login"))
///     .headers(HeaderStyle::Both)
///     .trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
///     .build()
///     .unwrap();
/// assert_eq!(limiter.rules().len(), 2);
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Vec<Rule>,
    /// Each rule's decision counters, by rule index.
    decisions: Vec<crate::metrics::DecisionKeys>,
    stores: Stores,
    /// The quota resolver and its cache, for rules with `key_quota`.
    tiers: Option<Arc<Tiers>>,
    /// Where usage-limited keys spend their credits, when enabled.
    credits: Option<CreditLedger>,
    headers: HeaderStyle,
    format: ErrorFormat,
    proxies: TrustedProxies,
    ipv6_prefix: u8,
    ipv6_site: crate::ipv6_site::Ipv6Site,
    warned_no_peer: AtomicBool,
    /// The leases of buckets kept in Redis.
    #[cfg(feature = "redis")]
    leases: Option<crate::redis_lease::LeasedRedis>,
}

/// Builds a [`RateLimiter`].
pub struct RateLimiterBuilder {
    rules: Vec<Rule>,
    headers: HeaderStyle,
    options: LimiterOptions,
    tiers: Option<TiersConfig>,
    credits: Option<Arc<dyn KeyStore>>,
    /// Leased credits go back after this idle time; `Some` once asked for.
    lease: Option<Duration>,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis_lease::LeasedRedis>,
}

/// Makes the [`Tiers`] from the TTL, the capacity and the limiter's clock.
type MakeTiers = Box<dyn FnOnce(Duration, usize, Arc<dyn MonotonicClock>) -> Tiers + Send>;

/// The resolver given to the builder, made into [`Tiers`] with the clock.
struct TiersConfig {
    make: MakeTiers,
    ttl: Duration,
    capacity: usize,
}

/// A rule's second bucket (see [`RateLimiter::also_charged`]).
enum Also<'a> {
    Nothing,
    Site(std::net::Ipv6Addr),
    Actor(KeyValue<'a>),
}

/// What the in-memory store needs of a bucket: its rule, key, quota and
/// cost (no rule name or key value, which only Redis reads). Owned, so the
/// fallback can keep it once the request is gone.
#[derive(Clone, Copy)]
struct Owned {
    rule: usize,
    key: LimitKey,
    quota: Quota,
    cost: u32,
}

/// The outcome for a request.
pub(crate) enum Verdict {
    /// Passes; these headers go on the response.
    Allow(RateHeaders),
    /// Refused with this response (429, or 503 when failing closed).
    Deny(Response<Bytes>),
}

/// A verdict now, or after a round trip to the shared store.
pub(crate) enum Evaluation {
    Ready(Verdict),
    Pending(Pin<Box<dyn Future<Output = Verdict> + Send>>),
    /// A key's quota must first be asked of the resolver; then evaluate
    /// again with the answer ([`RateLimiter::evaluate_with`]).
    Resolve(Pin<Box<dyn Future<Output = Result<Resolved, Verdict>> + Send>>),
}

/// The resolver's answer for one key, for the evaluation that follows it.
pub(crate) struct Resolved {
    key: TierKey,
    quota: Option<Quota>,
}

impl RateLimiter {
    /// Starts a limiter with no rules, legacy headers, the flat error
    /// format, no trusted proxy and an in-memory store on the real clock.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder {
            rules: Vec::new(),
            headers: HeaderStyle::default(),
            options: LimiterOptions::default(),
            tiers: None,
            credits: None,
            lease: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// A tower layer applying this limiter.
    pub fn layer(&self) -> RateLimitLayer {
        RateLimitLayer::new(self.clone())
    }

    /// The rules, in the order they are checked.
    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    /// The in-memory store (the only store, or the fallback when Redis is
    /// down), e.g. to watch [`MemoryStore::len`](crate::MemoryStore::len).
    pub fn memory(&self) -> &LimiterMemory {
        &self.inner.stores.memory
    }

    /// Where credits are spent, when [`RateLimiterBuilder::credits`] enabled
    /// them (e.g. to [`flush`](CreditLedger::flush) unspent leases at shutdown).
    pub fn credits(&self) -> Option<&CreditLedger> {
        self.inner.credits.as_ref()
    }

    /// Tokens this instance holds in leases of Redis buckets and has not
    /// spent (0 without [`RateLimiterBuilder::redis`]).
    pub fn leased_tokens(&self) -> u64 {
        #[cfg(feature = "redis")]
        if let Some(leases) = &self.inner.leases {
            return leases.leased();
        }
        0
    }

    /// Gives the unspent leased tokens back to Redis now, as the background
    /// reconciliation does every 100 ms (e.g. at shutdown).
    pub async fn give_back_leases(&self) {
        #[cfg(feature = "redis")]
        if let Some(leases) = &self.inner.leases {
            leases.give_back_all().await;
        }
    }

    /// Checks `req` against every rule that covers it, outside the layer
    /// (in a handler, for instance). `Ok` holds the rate-limit headers for
    /// the response; `Err` the 429 (or 503) to send instead.
    pub async fn check<B>(&self, req: &Request<B>) -> Result<HeaderMap, Response<Bytes>> {
        let verdict = match self.evaluate(req) {
            Evaluation::Ready(v) => v,
            Evaluation::Pending(f) => f.await,
            Evaluation::Resolve(resolving) => match resolving.await {
                Ok(resolved) => self.evaluate_resolved(req, &resolved).await,
                Err(v) => v,
            },
        };
        match verdict {
            Verdict::Allow(rate_headers) => {
                let mut headers = HeaderMap::new();
                rate_headers.apply(&mut headers);
                Ok(headers)
            }
            Verdict::Deny(res) => Err(res),
        }
    }

    /// Decides `req`: at once when the store answers at once (memory),
    /// else after its round trip (or first the quota resolver's).
    #[inline]
    pub(crate) fn evaluate<B>(&self, req: &Request<B>) -> Evaluation {
        self.evaluate_with(req, None)
    }

    /// After the resolver answered: decides `req` with `resolved`.
    pub(crate) fn evaluate_resolved<B>(
        &self,
        req: &Request<B>,
        resolved: &Resolved,
    ) -> impl Future<Output = Verdict> + Send + 'static {
        let evaluation = self.evaluate_with(req, Some(resolved));
        let this = self.clone();
        async move {
            match evaluation {
                Evaluation::Ready(v) => v,
                Evaluation::Pending(f) => f.await,
                // The answer was just given; only a racing cache reset can
                // ask again. Fail closed rather than loop.
                Evaluation::Resolve(_) => this.unavailable(),
            }
        }
    }

    fn evaluate_with<B>(&self, req: &Request<B>, resolved: Option<&Resolved>) -> Evaluation {
        let inner = &*self.inner;
        let info = RequestInfo::new(req, &inner.proxies);
        let evaluation = if inner.stores.memory_only {
            match self.check_in_memory(&info, resolved) {
                Some(verdict) => Evaluation::Ready(verdict),
                None => return self.resolving(info.auth()),
            }
        } else {
            let mut buckets = SmallVec::<[Bucket<'_>; RULES_INLINE]>::new();
            let ready = self.prepare(&info, resolved, |i, value, quota, cost| {
                buckets.push(Bucket::for_rule(
                    i,
                    &inner.rules[i].name,
                    value,
                    quota,
                    cost,
                ));
            });
            if !ready {
                return self.resolving(info.auth());
            }
            self.check_buckets(&buckets)
        };
        // Looked up only when credits are enabled: the hot path pays nothing.
        if let Some(ledger) = &inner.credits {
            if let Some(ctx) = info.auth().filter(|c| c.credits().is_some()) {
                return self.then_spend(ledger, ctx, evaluation);
            }
        }
        evaluation
    }

    /// With no shared store: takes the tokens straight from the in-memory
    /// map, as its [`RateLimitStore::check_all`](crate::store::RateLimitStore::check_all)
    /// would, without a bucket list (names and key values are for Redis) or
    /// a store answer to unwrap. `None` when the resolver must be asked first.
    #[inline]
    fn check_in_memory(
        &self,
        info: &RequestInfo<'_>,
        resolved: Option<&Resolved>,
    ) -> Option<Verdict> {
        let mut owned = SmallVec::<[Owned; RULES_INLINE]>::new();
        let ready = self.prepare(info, resolved, |rule, value, quota, cost| {
            owned.push(Owned {
                rule,
                key: LimitKey::new(rule, &value),
                quota,
                cost,
            });
        });
        ready.then(|| self.take_from_memory(&owned))
    }

    /// Takes the tokens from the in-memory store, all or nothing: the only
    /// store, or the fallback when the shared one fails.
    #[inline]
    fn take_from_memory(&self, owned: &[Owned]) -> Verdict {
        let decisions = self
            .inner
            .stores
            .memory
            .take_all(owned, |o| (&o.key, &o.quota, o.cost));
        self.decided(owned.iter().map(|o| o.rule), decisions)
    }

    /// Takes the buckets' tokens from the store.
    #[inline]
    fn check_buckets(&self, buckets: &[Bucket<'_>]) -> Evaluation {
        if buckets.is_empty() {
            return Evaluation::Ready(Verdict::Allow(RateHeaders::default()));
        }
        match self.inner.stores.store.check_all(buckets).now() {
            Ok(Ok(decisions)) => {
                Evaluation::Ready(self.decided(buckets.iter().map(|b| b.rule), decisions))
            }
            Ok(Err(err)) => Evaluation::Ready(self.store_failed(&err, &owned(buckets))),
            Err(pending) => {
                let owned = owned(buckets);
                let this = self.clone();
                Evaluation::Pending(Box::pin(async move {
                    match pending.await {
                        Ok(decisions) => {
                            this.inner.stores.answered();
                            this.decided(owned.iter().map(|o| o.rule), decisions)
                        }
                        Err(err) => this.store_failed(&err, &owned),
                    }
                }))
            }
        }
    }

    /// After the rate limits let the request through, spends one of the
    /// key's credits: 429 `usage_exceeded` when none is left, 503 when the
    /// ledger cannot answer. Decided at once when both answer at once (a
    /// leased credit).
    #[cold]
    fn then_spend(
        &self,
        ledger: &CreditLedger,
        ctx: &AuthContext,
        rated: Evaluation,
    ) -> Evaluation {
        let (ledger, ctx) = (ledger.clone(), ctx.clone());
        let headers = match rated {
            Evaluation::Ready(Verdict::Allow(headers)) => headers,
            Evaluation::Ready(deny) => return Evaluation::Ready(deny),
            Evaluation::Resolve(_) => return Evaluation::Ready(self.unavailable()),
            Evaluation::Pending(rated) => {
                let this = self.clone();
                return Evaluation::Pending(Box::pin(async move {
                    match rated.await {
                        Verdict::Allow(headers) => match ledger.spend(&ctx) {
                            Some(spending) => this.spent(&ctx, headers, spending.await),
                            None => Verdict::Allow(headers),
                        },
                        deny => deny,
                    }
                }));
            }
        };
        let Some(spending) = ledger.spend(&ctx) else {
            return Evaluation::Ready(Verdict::Allow(headers));
        };
        match spending.now() {
            Ok(answer) => Evaluation::Ready(self.spent(&ctx, headers, answer)),
            Err(pending) => {
                let this = self.clone();
                Evaluation::Pending(Box::pin(
                    async move { this.spent(&ctx, headers, pending.await) },
                ))
            }
        }
    }

    /// The verdict once a credit was spent (or not).
    fn spent(
        &self,
        ctx: &AuthContext,
        headers: RateHeaders,
        answer: Result<CreditSpend, crate::LimitStoreError>,
    ) -> Verdict {
        match answer {
            Ok(CreditSpend::Spent { .. } | CreditSpend::Unlimited) => Verdict::Allow(headers),
            Ok(CreditSpend::Exhausted) => {
                let retry = ctx
                    .credits()
                    .and_then(|c| refill_in(c, OffsetDateTime::now_utc()));
                let mut res = self.render(&AuthError::usage_exceeded(retry));
                res.extensions_mut()
                    .insert(RefusedFor(RejectReason::UsageExceeded));
                headers.apply(res.headers_mut());
                Verdict::Deny(res)
            }
            Err(err) => {
                tracing::warn!(error = %err, "spending a credit failed; refusing with 503");
                self.unavailable()
            }
        }
    }

    /// The verdict on the store's decisions, one per bucket of `rules`.
    #[inline]
    fn decided(&self, rules: impl Iterator<Item = usize>, decisions: Decisions) -> Verdict {
        let mut checked = Checked::default();
        for (i, d) in rules.zip(decisions) {
            checked.push(i, d);
        }
        for (i, d) in &checked.items {
            self.inner.decisions[*i].record(d.is_allowed());
        }
        self.verdict(&checked)
    }

    /// The store could not answer: the policy decides.
    #[cold]
    fn store_failed(&self, err: &crate::LimitStoreError, owned: &[Owned]) -> Verdict {
        let stores = &self.inner.stores;
        match stores.failed(err) {
            OnStoreError::FallBackToMemory => self.take_from_memory(owned),
            OnStoreError::FailClosed => self.unavailable(),
            OnStoreError::FailOpen => Verdict::Allow(RateHeaders::default()),
        }
    }

    /// 503: the limiter cannot decide (fail closed).
    #[cold]
    fn unavailable(&self) -> Verdict {
        Verdict::Deny(self.render(&AuthError::unavailable(
            "Rate limiting is temporarily unavailable",
        )))
    }

    /// Asks the resolver for `ctx`'s quota.
    #[cold]
    fn resolving(&self, ctx: Option<&AuthContext>) -> Evaluation {
        let (Some(ctx), Some(tiers)) = (ctx, &self.inner.tiers) else {
            // `prepare` only waits for the resolver when both exist.
            return Evaluation::Ready(self.unavailable());
        };
        let ctx = ctx.clone();
        let (this, tiers) = (self.clone(), tiers.clone());
        Evaluation::Resolve(Box::pin(async move {
            match tiers.resolve(&ctx).await {
                Ok(quota) => Ok(Resolved {
                    key: Tiers::key_of(&ctx),
                    quota,
                }),
                Err(err) => {
                    tracing::warn!(error = %err, "quota resolver failed; refusing with 503");
                    Err(this.unavailable())
                }
            }
        }))
    }

    /// Calls `f` with each rule that covers the request, its key, quota and
    /// cost. `false` when a key's quota must first be asked of the resolver.
    #[inline]
    fn prepare<'a>(
        &'a self,
        info: &RequestInfo<'a>,
        resolved: Option<&Resolved>,
        mut f: impl FnMut(usize, KeyValue<'a>, Quota, u32),
    ) -> bool {
        let inner = &*self.inner;
        for (i, rule) in inner.rules.iter().enumerate() {
            if !rule.matches(info) {
                continue;
            }
            match rule.key.extract(info, inner.ipv6_prefix) {
                Some(value) => {
                    let also = self.also_charged(&value);
                    let quota = if rule.key_quota {
                        match self.key_quota(info.auth(), resolved) {
                            Ok((tier, own)) => {
                                let base = tier.unwrap_or_else(|| rule.quota_for(info));
                                // The key's own limit only tightens, burst
                                // and rate each.
                                own.map_or(base, |own| base.tighter(own))
                            }
                            Err(()) => return false,
                        }
                    } else {
                        rule.quota_for(info)
                    };
                    f(i, value, quota, rule.cost);
                    match also {
                        Also::Nothing => {}
                        Also::Site(net) => {
                            let site = inner.ipv6_site.quota(quota);
                            f(i, KeyValue::Site(net), site, rule.cost);
                        }
                        Also::Actor(actor) => f(i, actor, quota, rule.cost),
                    }
                }
                None => {
                    if matches!(rule.key, KeyBy::Ip | KeyBy::UserOrIp) && info.peer_addr().is_none()
                    {
                        self.warn_no_peer();
                    }
                }
            }
        }
        true
    }

    /// The second bucket a rule charges besides `value`'s: the site
    /// aggregate of an IPv6 client, or the acting key (or user) of a request
    /// on someone else's behalf, so impersonation cannot spread one key's
    /// traffic over many users' buckets.
    #[inline]
    fn also_charged<'a>(&self, value: &KeyValue<'a>) -> Also<'a> {
        match value {
            KeyValue::Ip(ip) => self
                .inner
                .ipv6_site
                .network(*ip)
                .map_or(Also::Nothing, Also::Site),
            KeyValue::User(ctx) if ctx.is_impersonating() => match ctx.key_id() {
                Some(key) => Also::Actor(KeyValue::ApiKey(key)),
                None => {
                    let actor = ctx.actor();
                    let mut name = format!("actor:{}:{}", actor.user_id().len(), actor.user_id());
                    if let Some(org) = actor.org_id() {
                        name.push('@');
                        name.push_str(org);
                    }
                    Also::Actor(KeyValue::Custom(name))
                }
            },
            _ => Also::Nothing,
        }
    }

    /// The quotas `ctx`'s key carries: its tier (`Err` when the resolver
    /// must be asked; `None` for the rule's own) and its own rate limit.
    #[inline]
    fn key_quota(
        &self,
        ctx: Option<&AuthContext>,
        resolved: Option<&Resolved>,
    ) -> Result<(Option<Quota>, Option<Quota>), ()> {
        let Some(ctx) = ctx else {
            return Ok((None, None));
        };
        let own = ctx
            .key_rate_limit()
            .map(|own| Quota::per_seconds(own.limit, own.period_seconds));
        let Some(tiers) = &self.inner.tiers else {
            return Ok((None, own));
        };
        if let Some(r) = resolved {
            if r.key == Tiers::key_of(ctx) {
                return Ok((r.quota, own));
            }
        }
        match tiers.lookup(ctx) {
            Lookup::Hit(q) => Ok((q, own)),
            Lookup::Miss => Err(()),
        }
    }

    fn verdict(&self, checked: &Checked) -> Verdict {
        let rules = &self.inner.rules;
        let headers = checked.render(self.inner.headers, |i| &rules[i].name);
        if checked.allowed() {
            return Verdict::Allow(headers);
        }
        let retry = checked
            .most_restrictive()
            .and_then(|d| d.retry_after())
            .unwrap_or(Duration::from_secs(1));
        let mut res = self.render(&AuthError::rate_limited(retry));
        res.extensions_mut()
            .insert(RefusedFor(RejectReason::RateLimited));
        headers.apply(res.headers_mut());
        Verdict::Deny(res)
    }

    fn render(&self, err: &AuthError) -> Response<Bytes> {
        self.inner.format.render(err)
    }

    fn warn_no_peer(&self) {
        if !self.inner.warned_no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "rate limit by client IP skipped: no client address in the request (a ClientIp or SocketAddr \
                 extension; with axum, auth-ratelimit's `axum` feature and \
                 into_make_service_with_connect_info::<SocketAddr>())"
            );
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RateLimiter");
        d.field("rules", &self.inner.rules)
            .field("headers", &self.inner.headers)
            .field("format", &self.inner.format)
            .field("proxies", &self.inner.proxies)
            .field("stores", &self.inner.stores);
        d.finish()
    }
}

impl RateLimiterBuilder {
    /// Adds a rule (checked in the order added).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds several rules.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// Which rate-limit headers responses carry (default
    /// [`HeaderStyle::Legacy`]; [`HeaderStyle::Hidden`] to disclose nothing).
    pub fn headers(mut self, style: HeaderStyle) -> Self {
        self.headers = style;
        self
    }

    limiter_setters!();

    /// Keeps the buckets in Redis, shared by every instance, each instance
    /// spending a small lease of a bucket's tokens locally: allowed requests
    /// make no round trip in steady state, and the fleet never admits more
    /// than the quota (see the crate's fleet-mode docs, `RedisStore`). For
    /// one round trip per check instead, pass the `RedisStore` to
    /// [`store`](Self::store).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, store: crate::RedisStore) -> Self {
        let leased = crate::redis_lease::LeasedRedis::new(store);
        self.redis = Some(leased.clone());
        self.store(leased)
    }

    /// Spends a credit of every usage-limited key (one with `credits`) per
    /// request that passes the rate limits, and answers 429
    /// `usage_exceeded` when none is left: from leases taken from `store`
    /// when the limiter keeps its buckets in Redis (a fleet), else one at a
    /// time with [`KeyStore::spend_credit`]. See the [`credits`](crate::credits) module.
    pub fn credits(mut self, store: Arc<dyn KeyStore>) -> Self {
        self.credits = Some(store);
        self
    }

    /// Spends credits from leases taken from the key store in batches
    /// ([`CreditLedger::leased`]), even without Redis; leases unused for
    /// `idle` go back to the store (default with Redis: 5 s).
    pub fn lease_credits(mut self, idle: Duration) -> Self {
        self.lease = Some(idle);
        self
    }

    /// Asks `resolver` for the quota of keys without their own rate limit
    /// (typically their owner's tier), for rules marked
    /// [`Rule::key_quota`]. Answers are kept `ttl` on the limiter's clock
    /// (see [`tier_cache_size`](Self::tier_cache_size)).
    pub fn quota_resolver(mut self, resolver: impl QuotaResolver, ttl: Duration) -> Self {
        let capacity = self
            .tiers
            .as_ref()
            .map_or(DEFAULT_TIER_CACHE_SIZE, |t| t.capacity);
        self.tiers = Some(TiersConfig {
            make: Box::new(move |ttl, capacity, clock| Tiers::new(resolver, ttl, capacity, clock)),
            ttl,
            capacity,
        });
        self
    }

    /// How many resolver answers are kept at most (default 100,000).
    pub fn tier_cache_size(mut self, capacity: usize) -> Self {
        if let Some(t) = &mut self.tiers {
            t.capacity = capacity;
        }
        self
    }

    /// The limiter, or why the rules cannot work.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        for (i, rule) in self.rules.iter().enumerate() {
            check_rule_name(&rule.name)?;
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(ConfigError::DuplicateRule(rule.name.to_string()));
            }
        }
        let clock = self.options.clock();
        let tiers = self
            .tiers
            .map(|t| Arc::new((t.make)(t.ttl, t.capacity, clock)));
        #[cfg(feature = "redis")]
        let lease = self.lease.or_else(|| {
            self.redis
                .is_some()
                .then_some(crate::credits::DEFAULT_LEASE_IDLE)
        });
        #[cfg(not(feature = "redis"))]
        let lease = self.lease;
        let credits = self.credits.map(|store| match lease {
            Some(idle) => CreditLedger::leased(store, idle),
            None => CreditLedger::key_store(store),
        });
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                decisions: self
                    .rules
                    .iter()
                    .map(|r| crate::metrics::DecisionKeys::new(&r.name))
                    .collect(),
                rules: self.rules,
                stores: self.options.stores(),
                tiers,
                credits,
                headers: self.headers,
                format: self.options.format,
                proxies: self.options.proxies,
                ipv6_prefix: self.options.ipv6_prefix,
                ipv6_site: self.options.ipv6_site,
                warned_no_peer: AtomicBool::new(false),
                #[cfg(feature = "redis")]
                leases: self.redis,
            }),
        })
    }
}

/// What the fallback needs of `buckets` once the request is gone.
fn owned(buckets: &[Bucket<'_>]) -> SmallVec<[Owned; RULES_INLINE]> {
    buckets
        .iter()
        .map(|b| Owned {
            rule: b.rule,
            key: b.key,
            quota: b.quota,
            cost: b.cost,
        })
        .collect()
}

impl fmt::Debug for RateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("rules", &self.rules)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn rule_names_are_checked() {
        let q = Quota::per_minute(1);
        let dup = RateLimiter::builder()
            .rule(Rule::global("a", q))
            .rule(Rule::per_ip("a", q))
            .build();
        assert_eq!(dup.unwrap_err(), ConfigError::DuplicateRule("a".into()));
        for bad in ["", "has space", "quote\"", "é", &"x".repeat(65)] {
            let err = RateLimiter::builder()
                .rule(Rule::global(bad, q))
                .build()
                .unwrap_err();
            assert_eq!(err, ConfigError::InvalidRuleName(bad.to_owned()));
        }
        assert!(RateLimiter::builder()
            .rule(Rule::global("api:v1.read-all_x", q))
            .build()
            .is_ok());
    }

    #[tokio::test]
    async fn check_outside_the_layer() {
        let limiter = RateLimiter::builder()
            .rule(Rule::global("all", Quota::per_second(2)))
            .clock(FakeClock::new())
            .build()
            .unwrap();
        let req = Request::get("/").body(()).unwrap();
        let headers = limiter.check(&req).await.unwrap();
        assert_eq!(headers["ratelimit-remaining"], "1");
        assert!(limiter.check(&req).await.is_ok());
        let res = limiter.check(&req).await.unwrap_err();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "1");
        assert_eq!(limiter.memory().len(), 1);
    }

    #[test]
    fn no_rule_no_headers_no_state() {
        let limiter = RateLimiter::builder().build().unwrap();
        let req = Request::get("/").body(()).unwrap();
        match limiter.evaluate(&req) {
            Evaluation::Ready(Verdict::Allow(h)) => {
                let mut map = HeaderMap::new();
                h.apply(&mut map);
                assert!(map.is_empty());
            }
            _ => panic!("a limiter without rules refused a request"),
        }
        assert!(limiter.memory().is_empty());
    }
}
