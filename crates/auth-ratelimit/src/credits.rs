//! Usage-limited keys: every request made with a key that has credits, and
//! that passes the rate limits, spends one; with none left the answer is 429
//! `usage_exceeded` (audit reason `usage_exceeded`), with `Retry-After` until
//! the next refill when the credits are refilled.
//!
//! Enabled with [`RateLimiterBuilder::credits`](crate::RateLimiterBuilder::credits).
//! The key store is the authority on credits: a credit is taken from it
//! before the request it pays for is served, so whatever a cache, a crash or
//! Redis loses, the credits served never exceed what the store said was
//! left. Two ways to take them:
//!
//! * **One at a time** ([`CreditLedger::key_store`], the default): one
//!   atomic statement per request ([`KeyStore::spend_credit`]; refill first
//!   if a period began), exact and shared by every instance on the database.
//! * **Leased** ([`CreditLedger::leased`]; the default when the limiter
//!   keeps its buckets in Redis, i.e. in a fleet): an instance takes a batch
//!   of credits in one statement ([`KeyStore::take_credits`]) and spends it
//!   locally, with no I/O per request. A lease is at most 1/16 of what the
//!   store had left and at most 64 credits; when fewer than that are left it
//!   takes one credit per request, so the last credits are exact. Leases
//!   unused for the idle interval (default 5 s), and all of them on
//!   [`CreditLedger::flush`], go back to the store
//!   ([`KeyStore::return_credits`]), unless the credits were set or refilled
//!   since. A lease taken in an earlier refill period, or before an
//!   administrator set the key's credits, is dropped, not spent.
//!
//! **Bound**: fleet-wide, a key never serves more than its stored
//! `remaining` (plus its refills), whatever the number of instances: every
//! credit served was first taken from the store. The error is the other way
//! and bounded: while other instances hold leases, an instance may answer
//! `usage_exceeded` with up to one lease per other instance (at most 1/16 of
//! what was left, at most 64 credits) still unspent, until those leases are
//! spent or come back after the idle interval; a credit leased by an
//! instance that is killed, or whose key is rotated or revoked before it is
//! spent, is lost, never served twice. The stored count, as listed, is the
//! count minus the credits leased out.
//!
//! Rotation carries credits over as they stand in the store, in the
//! rotation's own transaction ([`KeyStore::rotate`]).
//!
//! A store that cannot answer refuses the request with 503 (fail closed):
//! credits are a billing control.

use std::{fmt, sync::Arc, time::Duration};

use auth_core::{policy::CreditSpend, policy::Credits, AuthContext, KeyId, KeyStore};
use time::OffsetDateTime;

use crate::{credit_lease::CreditLeases, store::StoreFuture, StoreError};

/// Default idle time after which unspent leased credits go back to the store.
pub const DEFAULT_LEASE_IDLE: Duration = Duration::from_secs(5);

/// Where a limiter spends credits: one at a time in the key store, or from
/// leases taken from it (see the [module docs](crate::credits)).
#[derive(Clone)]
pub struct CreditLedger {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Store(Arc<dyn KeyStore>),
    Leased(CreditLeases),
}

impl CreditLedger {
    /// Credits spent one at a time in `store` ([`KeyStore::spend_credit`]).
    pub fn key_store(store: Arc<dyn KeyStore>) -> Self {
        Self {
            kind: Kind::Store(store),
        }
    }

    /// Credits leased from `store` in batches ([`KeyStore::take_credits`])
    /// and spent locally; leases unused for `idle` go back to it.
    pub fn leased(store: Arc<dyn KeyStore>, idle: Duration) -> Self {
        Self {
            kind: Kind::Leased(CreditLeases::new(store, idle)),
        }
    }

    /// Spends one credit of `ctx`'s key, if it has credits (`None` if not).
    pub(crate) fn spend(&self, ctx: &AuthContext) -> Option<StoreFuture<CreditSpend>> {
        let (id, credits) = (ctx.key_id()?, *ctx.credits()?);
        Some(self.spend_for(id, credits))
    }

    /// Spends one credit of key `id`, whose record carries `credits` (as
    /// the verifier last read it: their refill, and when they were set).
    pub fn spend_for(&self, id: KeyId, credits: Credits) -> StoreFuture<CreditSpend> {
        let now = OffsetDateTime::now_utc();
        match &self.kind {
            Kind::Store(store) => {
                let store = store.clone();
                StoreFuture::pending(async move {
                    store
                        .spend_credit(id, now)
                        .await
                        .map_err(|e| StoreError::Backend(e.to_string()))
                })
            }
            Kind::Leased(leases) => leases.spend(id, credits, now),
        }
    }

    /// Gives the unspent leased credits back to the key store now (e.g. at
    /// shutdown; nothing to do for credits spent one at a time).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.kind {
            Kind::Store(_) => Ok(()),
            Kind::Leased(leases) => leases.flush().await,
        }
    }

    /// How many credits this instance holds in leases, not yet spent.
    pub fn leased_credits(&self) -> u64 {
        match &self.kind {
            Kind::Store(_) => 0,
            Kind::Leased(leases) => leases.leased(),
        }
    }
}

/// When credits exhausted at `now` come back: the start of the next period.
pub(crate) fn refill_in(credits: &Credits, now: OffsetDateTime) -> Option<Duration> {
    use auth_core::policy::RefillEvery;
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
            Kind::Leased(_) => "CreditLedger::Leased",
        })
    }
}
