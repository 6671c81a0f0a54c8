//! What to do when the shared store (Redis) cannot answer, and the store a
//! limiter holds with its in-memory fallback.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::{
    key::LimitKey, LimitKeyHasher, MemoryStore, MonotonicClock, QuantaClock, RateLimitStore,
    StoreError,
};

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

    /// The store failed with `err`: warns (at most once per interval) and
    /// returns the policy to apply.
    #[cold]
    pub(crate) fn failed(&self, err: &StoreError) -> OnStoreError {
        self.warn.warn(err, self.policy);
        self.policy
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

/// Logs store failures at most once per interval, counting the rest.
#[derive(Debug)]
struct WarnThrottle {
    next: AtomicU64,
    suppressed: AtomicU64,
}

const WARN_EVERY_NANOS: u64 = 10_000_000_000;

impl WarnThrottle {
    const fn new() -> Self {
        Self {
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn warn(&self, err: &StoreError, policy: OnStoreError) {
        let now = QuantaClock.now();
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
