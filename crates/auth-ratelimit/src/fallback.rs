//! What to do when the shared store (Redis) cannot answer, and the store a
//! limiter holds with its in-memory fallback.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use crate::{key::LimitKey, LimitKeyHasher, LimitStoreError, MemoryStore, RateLimitStore};

/// What the limiter does when its shared store cannot answer a check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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

/// The in-memory store of a limiter.
pub(crate) type LimiterMemory = MemoryStore<LimitKey, LimitKeyHasher>;

/// A limiter's store, the in-memory store it falls back to, and what to do
/// when the store cannot answer. Without a shared store, the memory store
/// is the store (and never fails).
pub(crate) struct Stores {
    pub(crate) store: Arc<dyn RateLimitStore>,
    pub(crate) memory: Arc<LimiterMemory>,
    /// Whether `store` is `memory` (no shared store configured).
    pub(crate) memory_only: bool,
    policy: OnStoreError,
    warn: WarnThrottle,
}

impl Stores {
    pub(crate) fn new(
        memory: LimiterMemory,
        store: Option<Arc<dyn RateLimitStore>>,
        policy: OnStoreError,
    ) -> Self {
        let memory = Arc::new(memory);
        Self {
            memory_only: store.is_none(),
            store: store.unwrap_or_else(|| memory.clone()),
            memory,
            policy,
            warn: WarnThrottle::new(),
        }
    }

    /// The store failed with `err`: warns once per outage and returns the
    /// policy to apply.
    #[cold]
    pub(crate) fn failed(&self, err: &LimitStoreError) -> OnStoreError {
        self.warn.warn(err, self.policy);
        self.policy
    }

    /// The shared store answered after a round trip: ends an outage, if
    /// one was under way (an answer from leases held locally does not).
    #[inline]
    pub(crate) fn answered(&self) {
        self.warn.recovered();
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("store", &self.store)
            .field("memory", &self.memory)
            .field("on_store_error", &self.policy)
            .finish()
    }
}

/// Logs one warning when the store starts failing and one line when it
/// answers again, counting the failures in between.
#[derive(Debug)]
struct WarnThrottle {
    down: AtomicBool,
    suppressed: AtomicU64,
}

impl WarnThrottle {
    const fn new() -> Self {
        Self {
            down: AtomicBool::new(false),
            suppressed: AtomicU64::new(0),
        }
    }

    fn warn(&self, err: &LimitStoreError, policy: OnStoreError) {
        if self.down.swap(true, Ordering::Relaxed) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %crate::error::chain(err), "rate-limit store still unavailable");
            return;
        }
        let action = match policy {
            OnStoreError::FallBackToMemory => "limiting with local in-memory buckets",
            OnStoreError::FailClosed => "refusing requests with 503",
            OnStoreError::FailOpen => "letting requests through unlimited",
        };
        tracing::warn!(
            error = %crate::error::chain(err),
            "rate-limit store unavailable; {action} until it answers again"
        );
    }

    #[inline]
    fn recovered(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            let failed = self.suppressed.swap(0, Ordering::Relaxed) + 1;
            tracing::info!(failed, "rate-limit store available again");
        }
    }
}
