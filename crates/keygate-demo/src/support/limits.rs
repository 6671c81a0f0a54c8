//! Rate limits and the failed-authentication limit: in memory, or in Redis
//! (`--redis`) so that several instances of one example share them.

use auth_core::{client_ip::TrustedProxies, response::ErrorFormat};
use auth_ratelimit::{FailedAuthLimiter, Quota, RateLimiter, RateLimiterBuilder, Rule};

/// The options every demo's limits share: the failed-authentication quota,
/// where the buckets are kept, and which proxies name the client.
#[derive(Clone, Debug)]
pub struct SharedLimits {
    /// Failed authentications (401s) per client address before 429
    /// (default [`FAILED_AUTH`]).
    pub failed_auth: Quota,
    /// Keep rate limits in this Redis, shared by every instance.
    pub redis: Option<String>,
    /// Key prefix in Redis: instances that share limits use the same one.
    pub redis_prefix: String,
    /// Proxies whose X-Forwarded-For names the client (`--trusted-proxy`),
    /// for the audit log, the rate limits and the IP allowlists.
    pub trusted_proxies: TrustedProxies,
}

impl SharedLimits {
    /// The defaults: [`FAILED_AUTH`], in memory, no trusted proxy; Redis
    /// keys (with `--redis`) under `redis_prefix`.
    pub fn new(redis_prefix: &str) -> Self {
        Self {
            failed_auth: FAILED_AUTH,
            redis: None,
            redis_prefix: redis_prefix.to_owned(),
            trusted_proxies: TrustedProxies::none(),
        }
    }

    /// A limiter with `rules`, kept where these options say: see [`limiter`].
    pub fn limiter(&self, rules: Vec<Rule>) -> Result<RateLimiter, String> {
        self.limiter_with(rules, |b| b)
    }

    /// [`SharedLimits::limiter`], with `more` of the builder (tiers, credits).
    pub fn limiter_with(
        &self,
        rules: Vec<Rule>,
        more: impl FnOnce(RateLimiterBuilder) -> RateLimiterBuilder,
    ) -> Result<RateLimiter, String> {
        limiter_with(
            rules,
            self.redis.as_deref(),
            &self.redis_prefix,
            &self.trusted_proxies,
            more,
        )
    }

    /// The failed-authentication limiter, answering in `format`: see [`failed_auth`].
    pub fn failed_auth_limiter(&self, format: ErrorFormat) -> Result<FailedAuthLimiter, String> {
        failed_auth(
            self.failed_auth,
            format,
            self.redis.as_deref(),
            &self.redis_prefix,
            &self.trusted_proxies,
        )
    }

    /// Prints the startup banner's limits: `rates` (what the demo allows),
    /// where they are kept, and the failed-authentication limit.
    pub fn print_banner(&self, rates: &str) {
        let kept = if self.redis.is_some() {
            "Redis"
        } else {
            "memory"
        };
        println!("rate limits: {rates}, in {kept}");
        println!("{}", describe_failed_auth(self.failed_auth));
    }
}

/// Failed authentications (401 answers) allowed per client address, on by
/// default in every example: 30 at once, then one every 6 seconds (10 per
/// minute). A person mistyping a token or a misconfigured client never gets
/// near it; a guessing script is stopped after 30 tries and then gets 429
/// with `Retry-After`, before any store read, argon2 run or audit event.
/// A script that keeps going is blocked for up to two windows (6 minutes).
pub const FAILED_AUTH: Quota = Quota::per_minute(10).with_burst(30);

/// One line for the startup banner: the failed-authentication limit.
pub fn describe_failed_auth(quota: Quota) -> String {
    let per_minute = 60_000 / quota.interval().as_millis().max(1);
    format!(
        "failed auth: {} refusals (401) per client address at once, then {per_minute}/minute; past that, 429",
        quota.burst()
    )
}

/// A limiter with `rules`; with `redis`, buckets live there under `prefix`
/// (instances sharing limits use the same prefix), with memory as the
/// fallback while Redis is down. Per-address rules count the client that
/// `proxies` name (when no outer layer resolved it already).
pub fn limiter(
    rules: Vec<Rule>,
    redis: Option<&str>,
    prefix: &str,
    proxies: &TrustedProxies,
) -> Result<RateLimiter, String> {
    limiter_with(rules, redis, prefix, proxies, |b| b)
}

/// [`limiter`], with `more` of the builder (tiers, credits).
pub fn limiter_with(
    rules: Vec<Rule>,
    redis: Option<&str>,
    prefix: &str,
    proxies: &TrustedProxies,
    more: impl FnOnce(RateLimiterBuilder) -> RateLimiterBuilder,
) -> Result<RateLimiter, String> {
    let mut builder = RateLimiter::builder()
        .rules(rules)
        .trusted_proxies(proxies.clone());
    if let Some(url) = redis {
        #[cfg(feature = "redis")]
        {
            builder = builder.redis(redis_store(url, prefix)?);
        }
        #[cfg(not(feature = "redis"))]
        return Err(no_redis(url, prefix));
    }
    more(builder)
        .build()
        .map_err(|e| format!("invalid rate limits: {e}"))
}

/// The failed-authentication limiter: `quota` failures per client address
/// (the client `proxies` name), answered in `format`; shared through
/// `redis` like [`limiter`]'s buckets.
pub fn failed_auth(
    quota: Quota,
    format: ErrorFormat,
    redis: Option<&str>,
    prefix: &str,
    proxies: &TrustedProxies,
) -> Result<FailedAuthLimiter, String> {
    let mut builder = FailedAuthLimiter::builder(quota)
        .error_format(format)
        .trusted_proxies(proxies.clone());
    if let Some(url) = redis {
        #[cfg(feature = "redis")]
        {
            builder = builder.redis(redis_store(url, prefix)?);
        }
        #[cfg(not(feature = "redis"))]
        return Err(no_redis(url, prefix));
    }
    Ok(builder.build())
}

#[cfg(feature = "redis")]
fn redis_store(url: &str, prefix: &str) -> Result<auth_ratelimit::RedisStore, String> {
    Ok(auth_ratelimit::RedisStore::open(url)
        .map_err(|e| format!("invalid Redis URL: {e}"))?
        .with_prefix(prefix.to_owned()))
}

#[cfg(not(feature = "redis"))]
fn no_redis(_url: &str, _prefix: &str) -> String {
    "--redis needs the `redis` cargo feature".into()
}
