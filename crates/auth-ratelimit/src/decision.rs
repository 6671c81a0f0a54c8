//! The answer to one check: allowed or not, and the numbers for the headers.

use std::time::Duration;

use crate::Quota;

/// The result of taking tokens from one bucket.
///
/// ```
/// use std::time::Duration;
/// use auth_ratelimit::{clock::FakeClock, MemoryStore, Quota};
/// let store = MemoryStore::<&str>::new().clock(FakeClock::new());
/// let q = Quota::per_minute(2);
/// let d = store.check(&"alice", &q, 1);
/// assert!(d.is_allowed());
/// assert_eq!((d.limit(), d.remaining()), (2, 1));
/// assert_eq!(d.reset(), Duration::from_secs(30));
/// store.check(&"alice", &q, 1);
/// let d = store.check(&"alice", &q, 1);
/// assert!(!d.is_allowed());
/// assert_eq!(d.retry_after(), Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    allowed: bool,
    quota: Quota,
    /// Nanoseconds until the bucket is full again (after this request, if it passed).
    reset: u64,
    /// Nanoseconds until this request could pass; 0 when it passed.
    retry_after: u64,
}

impl Decision {
    #[inline]
    pub(crate) fn allowed(quota: Quota, reset_nanos: u64) -> Self {
        Self {
            allowed: true,
            quota,
            reset: reset_nanos,
            retry_after: 0,
        }
    }

    #[inline]
    pub(crate) fn denied(quota: Quota, reset_nanos: u64, retry_after_nanos: u64) -> Self {
        Self {
            allowed: false,
            quota,
            reset: reset_nanos,
            // A denied request always has something to wait for.
            retry_after: retry_after_nanos.max(1),
        }
    }

    /// Whether the request may pass (its tokens were taken).
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The quota the request was checked against.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The bucket's capacity (`RateLimit-Limit`).
    pub fn limit(&self) -> u32 {
        self.quota.burst()
    }

    /// Whole tokens left now (`RateLimit-Remaining`): after this request if it
    /// passed, else what the bucket holds (fewer than the request's cost).
    pub fn remaining(&self) -> u32 {
        let free = self.quota.tau_nanos().saturating_sub(self.reset);
        let tokens = free / self.quota.interval_nanos();
        u32::try_from(tokens)
            .unwrap_or(u32::MAX)
            .min(self.quota.burst())
    }

    /// How long until the bucket is full again (`RateLimit-Reset`).
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.reset)
    }

    /// For a denied request, how long until the same request could pass
    /// (never zero); `None` when it passed.
    pub fn retry_after(&self) -> Option<Duration> {
        (!self.allowed).then(|| Duration::from_nanos(self.retry_after))
    }

    pub(crate) fn reset_nanos(&self) -> u64 {
        self.reset
    }

    pub(crate) fn retry_after_nanos(&self) -> u64 {
        self.retry_after
    }
}
