//! The injectable monotonic clock the in-memory limiter reads.
//!
//! Like `governor`'s `Clock`, the time source is a trait so tests can drive
//! refill with a [`FakeClock`] instead of sleeping. Time is a plain `u64` of
//! nanoseconds since an arbitrary, fixed origin: all bucket arithmetic is on
//! integers, so nothing drifts however long a process runs.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

/// A monotonic source of time, in nanoseconds since a fixed origin.
///
/// Implementations should not go backwards (a small step back is harmless:
/// it reads as no time having passed); the origin is arbitrary but must not
/// change during the life of a limiter.
pub trait MonotonicClock: Send + Sync + fmt::Debug + 'static {
    /// Now, in nanoseconds since this clock's origin.
    fn now(&self) -> u64;
}

impl<C: MonotonicClock + ?Sized> MonotonicClock for Arc<C> {
    fn now(&self) -> u64 {
        (**self).now()
    }
}

/// The real clock, counted from the first time any `QuantaClock` is read
/// in this process.
///
/// It reads the CPU's time-stamp counter through `quanta` (as `governor`'s
/// default clock does), calibrated against the OS monotonic clock, which
/// costs about half of [`std::time::Instant::now`]; where the counter is not
/// usable, `quanta` falls back to the OS monotonic clock. The first read in a
/// process calibrates (up to ~200 ms, once). `u64` nanoseconds last 584 years.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuantaClock;

struct Source {
    clock: quanta::Clock,
    origin: u64,
}

fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Source { clock, origin }
    })
}

impl MonotonicClock for QuantaClock {
    #[inline]
    fn now(&self) -> u64 {
        let s = source();
        s.clock.delta_as_nanos(s.origin, s.clock.raw())
    }
}

/// A clock that moves only when told to, for deterministic tests.
///
/// Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use auth_ratelimit::clock::{MonotonicClock, FakeClock};
/// let clock = FakeClock::new();
/// assert_eq!(clock.now(), 0);
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), 1_500_000_000);
/// ```
#[derive(Debug, Default, Clone)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    /// A clock stopped at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.advance_nanos(nanos);
    }

    /// Moves the clock forward by `nanos` nanoseconds.
    pub fn advance_nanos(&self, nanos: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(nanos))
            });
    }

    /// Sets the clock to `nanos`; ignored if that would move it backwards.
    pub fn set_nanos(&self, nanos: u64) {
        self.0.fetch_max(nanos, Ordering::SeqCst);
    }
}

impl MonotonicClock for FakeClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let c = QuantaClock;
        let mut last = c.now();
        for _ in 0..1000 {
            let t = c.now();
            assert!(t >= last);
            last = t;
        }
    }

    #[test]
    fn fake_clock_is_shared_and_never_goes_back() {
        let a = FakeClock::new();
        let b = a.clone();
        a.advance(Duration::from_secs(2));
        assert_eq!(b.now(), 2_000_000_000);
        b.set_nanos(1);
        assert_eq!(a.now(), 2_000_000_000);
        a.advance_nanos(u64::MAX);
        assert_eq!(a.now(), u64::MAX);
    }
}
