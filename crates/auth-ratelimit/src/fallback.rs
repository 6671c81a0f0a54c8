//! What to do when the shared store (Redis) cannot answer.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Clock, MonotonicClock, StoreError};

/// What the limiter does when its shared store cannot answer a check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnStoreError {
    /// Check the request against this process's in-memory buckets instead
    /// (same rules and keys) and log a warning. While the store is down each
    /// instance limits alone, so a fleet of `n` instances admits up to `n`
    /// times the quota. The default.
    #[default]
    FallBackToMemory,
    /// Refuse the request with 503 `unavailable` (fail closed).
    FailClosed,
    /// Let the request through unlimited, with a warning (fail open).
    FailOpen,
}

/// Logs store failures at most once per interval, counting the rest.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct WarnThrottle {
    next: AtomicU64,
    suppressed: AtomicU64,
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const WARN_EVERY_NANOS: u64 = 10_000_000_000;

impl WarnThrottle {
    pub(crate) const fn new() -> Self {
        Self {
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn warn(&self, err: &StoreError, policy: OnStoreError) {
        let now = MonotonicClock.now();
        let next = self.next.load(Ordering::Relaxed);
        if now < next
            || self
                .next
                .compare_exchange(
                    next,
                    now + WARN_EVERY_NANOS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let action = match policy {
            OnStoreError::FallBackToMemory => "limiting with local in-memory buckets",
            OnStoreError::FailClosed => "refusing requests with 503",
            OnStoreError::FailOpen => "letting requests through unlimited",
        };
        tracing::warn!(error = %err, suppressed, "rate-limit store unavailable; {action}");
    }
}
