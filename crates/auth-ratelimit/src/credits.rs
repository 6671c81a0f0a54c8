//! Usage-limited keys: every request made with a key that has credits, and
//! that passes the rate limits, spends one; with none left the answer is 429
//! `usage_exceeded` (audit reason `usage_exceeded`), with `Retry-After` until
//! the next refill when the credits are refilled.
//!
//! Enabled with [`RateLimiterBuilder::credits`](crate::RateLimiterBuilder::credits).
//! Where a credit is spent:
//!
//! * **The key store** ([`KeyStore::spend_credit`]): one atomic SQL
//!   statement (refill first if a period began), shared by every instance on
//!   the same database. The default.
//! * **Redis**, when the limiter keeps its buckets there
//!   ([`RateLimiterBuilder::redis`](crate::RateLimiterBuilder::redis)): one
//!   Lua script per request initialises the key's counter from the credits
//!   the key carried when it was verified (its stored `remaining` and
//!   `refilled_at`), refills it when a period began, and decrements it, so
//!   instances sharing Redis never overspend. The counts reach the store by
//!   **batched write-back**: the keys spent since the last write-back are
//!   written with [`KeyStore::lower_credits`] at most once per write-back
//!   interval (default 5 s) per limiter, so listings lag by at most that
//!   interval, and
//!   [`CreditLedger::flush`] writes at once (e.g. at shutdown). A Redis that
//!   loses its data starts again from the stored counts: at most the credits
//!   spent since the last write-back are handed out again, never the key's
//!   initial credits. The write-back only lowers the stored count and
//!   publishes no key change (so no verifier drops its cached key); after a
//!   refill in Redis the row keeps its lower count and its own refill time
//!   (a store spend or a restarted counter refills it from that). Credits
//!   changed in the store while Redis holds a
//!   counter for the key apply once that counter expires (after 30 idle
//!   days).
//!
//! A store that cannot answer refuses the request with 503 (fail closed):
//! credits are a billing control.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use auth_core::{store::KeyStore, AuthContext, CreditSpend, Credits, KeyId};
use time::OffsetDateTime;

use crate::StoreError;

/// Default interval between write-backs of the Redis counts to the store.
pub const DEFAULT_WRITE_BACK: Duration = Duration::from_secs(5);

type Spending = Pin<Box<dyn Future<Output = Result<CreditSpend, StoreError>> + Send>>;

/// Where a limiter spends credits: the key store, or Redis written back to it.
#[derive(Clone)]
pub struct CreditLedger {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Store(Arc<dyn KeyStore>),
    #[cfg(feature = "redis")]
    Redis(crate::redis_credits::RedisCredits),
}

impl CreditLedger {
    /// Credits spent in `store` ([`KeyStore::spend_credit`]).
    pub fn key_store(store: Arc<dyn KeyStore>) -> Self {
        Self {
            kind: Kind::Store(store),
        }
    }

    /// Credits counted in `redis` and written back to `store` every
    /// `write_back` (see the [module docs](crate::credits)).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(redis: crate::RedisStore, store: Arc<dyn KeyStore>, write_back: Duration) -> Self {
        Self {
            kind: Kind::Redis(crate::redis_credits::RedisCredits::new(
                redis, store, write_back,
            )),
        }
    }

    /// Spends one credit of `ctx`'s key, if it has credits (`None` if not).
    pub(crate) fn spend(&self, ctx: &AuthContext) -> Option<Spending> {
        let (id, credits) = (ctx.key_id()?, *ctx.credits()?);
        Some(self.spend_for(id, credits))
    }

    /// Spends one credit of key `id`, which had `credits` when verified.
    pub fn spend_for(&self, id: KeyId, credits: Credits) -> Spending {
        let now = OffsetDateTime::now_utc();
        match &self.kind {
            Kind::Store(store) => {
                // The store reads the credits itself.
                let _ = credits;
                let store = store.clone();
                Box::pin(async move {
                    store
                        .spend_credit(id, now)
                        .await
                        .map_err(|e| StoreError::Backend(e.to_string()))
                })
            }
            #[cfg(feature = "redis")]
            Kind::Redis(redis) => redis.spend(id, credits, now),
        }
    }

    /// Writes the Redis counts spent since the last write-back to the key
    /// store now (nothing to do for credits kept in the store).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.kind {
            Kind::Store(_) => Ok(()),
            #[cfg(feature = "redis")]
            Kind::Redis(redis) => redis.flush().await,
        }
    }
}

/// When credits exhausted at `now` come back: the start of the next period.
pub(crate) fn refill_in(credits: &Credits, now: OffsetDateTime) -> Option<Duration> {
    use auth_core::RefillEvery;
    let every = credits.refill?.every;
    let start = every.period_start(now);
    let next = match every {
        RefillEvery::Hour => start + time::Duration::HOUR,
        RefillEvery::Day => start + time::Duration::DAY,
        RefillEvery::Week => start + time::Duration::WEEK,
        // 32 days after the first of a month is in the next one.
        RefillEvery::Month => every.period_start(start + time::Duration::days(32)),
    };
    let wait = next - now;
    Some(Duration::from_secs(
        u64::try_from(wait.whole_seconds()).unwrap_or(0).max(1),
    ))
}

impl fmt::Debug for CreditLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match &self.kind {
            Kind::Store(_) => "CreditLedger::KeyStore",
            #[cfg(feature = "redis")]
            Kind::Redis(_) => "CreditLedger::Redis",
        })
    }
}
