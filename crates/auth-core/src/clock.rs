//! An injectable wall clock, so expiry and grace periods test without sleeping.

use std::{
    fmt,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
};

use time::OffsetDateTime;

/// A source of the current wall-clock time: what expiry, grace periods and
/// `last_used_at` are measured against. Injected with a `clock(..)` builder
/// method ([`SystemClock`] by default; tests pass a [`FakeClock`]).
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    /// Now, as nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> i64;

    /// Now, to within a few milliseconds (the system timer's last tick), for
    /// bookkeeping that tolerates it: whether a key's last use is due to be
    /// reported. Expiry never reads it. Defaults to [`now_nanos`](Self::now_nanos).
    fn recent_nanos(&self) -> i64 {
        self.now_nanos()
    }

    /// Now, as a date-time.
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.now_nanos() as i128)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl<C: WallClock + ?Sized> WallClock for Arc<C> {
    fn now_nanos(&self) -> i64 {
        (**self).now_nanos()
    }

    fn recent_nanos(&self) -> i64 {
        (**self).recent_nanos()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_nanos(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }

    /// `CLOCK_REALTIME_COARSE`: the last tick's time, without reading the
    /// TSC, which virtual machines make slow.
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    fn recent_nanos(&self) -> i64 {
        use nix::time::{clock_gettime, ClockId};
        match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
            Ok(t) => t
                .tv_sec()
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec()),
            Err(_) => self.now_nanos(),
        }
    }
}

/// A clock that moves only when told to: for tests.
///
/// ```
/// use auth_core::{clock::WallClock, clock::FakeClock};
/// let c = FakeClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
/// c.advance(std::time::Duration::from_secs(60));
/// assert_eq!(c.now(), time::macros::datetime!(2026-01-01 0:01 UTC));
/// ```
#[derive(Debug)]
pub struct FakeClock(AtomicI64);

impl FakeClock {
    /// A clock stopped at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(AtomicI64::new(at.unix_timestamp_nanos() as i64))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, at: OffsetDateTime) {
        self.0
            .store(at.unix_timestamp_nanos() as i64, Ordering::SeqCst);
    }
}

impl WallClock for FakeClock {
    fn now_nanos(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub(crate) fn nanos(t: OffsetDateTime) -> i64 {
    t.unix_timestamp_nanos()
        .clamp(i64::MIN as i128, i64::MAX as i128) as i64
}
