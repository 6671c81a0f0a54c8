//! Rate limits: in memory, or in Redis (`--redis`) so that several instances
//! of one example share them.

use auth_ratelimit::{RateLimiter, Rule};

/// A limiter with `rules`; with `redis`, buckets live there under `prefix`
/// (instances sharing limits use the same prefix), with memory as the
/// fallback while Redis is down.
pub fn limiter(rules: Vec<Rule>, redis: Option<&str>, prefix: &str) -> Result<RateLimiter, String> {
    let builder = RateLimiter::builder().rules(rules);
    let builder = match redis {
        None => builder,
        Some(url) => with_redis(builder, url, prefix)?,
    };
    builder
        .build()
        .map_err(|e| format!("invalid rate limits: {e}"))
}

#[cfg(feature = "redis")]
fn with_redis(
    builder: auth_ratelimit::RateLimiterBuilder,
    url: &str,
    prefix: &str,
) -> Result<auth_ratelimit::RateLimiterBuilder, String> {
    let store = auth_ratelimit::RedisStore::open(url)
        .map_err(|e| format!("invalid Redis URL: {e}"))?
        .with_prefix(prefix.to_owned());
    Ok(builder.redis(store))
}

#[cfg(not(feature = "redis"))]
fn with_redis(
    _builder: auth_ratelimit::RateLimiterBuilder,
    _url: &str,
    _prefix: &str,
) -> Result<auth_ratelimit::RateLimiterBuilder, String> {
    Err("--redis needs the `redis` cargo feature".into())
}
