//! How much may pass: a token bucket's capacity and refill interval.

use std::{fmt, num::NonZeroU32, time::Duration};

use crate::ConfigError;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A token bucket: `burst` tokens of capacity, one token back every
/// `interval`.
///
/// `Quota::per_hour(200)` lets 200 requests through at once, then one every
/// 18 s; after an hour of silence the bucket is full again. The interval is
/// kept in whole nanoseconds (whole microseconds on Redis): `per_second(3)`
/// refills one token every 333 333 333 ns.
///
/// ```
/// use std::time::Duration;
/// use auth_ratelimit::Quota;
/// let q = Quota::per_hour(200);
/// assert_eq!(q.burst(), 200);
/// assert_eq!(q.interval(), Duration::from_secs(18));
/// assert_eq!(q.window(), Duration::from_secs(3600));
/// let q = Quota::per_second(1).with_burst(5);
/// assert_eq!((q.burst(), q.window()), (5, Duration::from_secs(5)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    burst: u32,
    /// Refill interval of one token, nanoseconds, at least 1.
    interval: u64,
    /// `burst * interval`: how far ahead of now the bucket's theoretical
    /// arrival time may run (GCRA's tolerance).
    tau: u64,
}

impl Quota {
    /// `count` requests per `period`, all of which may come at once.
    ///
    /// # Panics
    /// If `count` is 0 or `period` is zero (a configuration error); see
    /// [`Quota::try_new`] and [`Quota::per_seconds`] for values read at run
    /// time.
    pub const fn new(count: u32, period: Duration) -> Self {
        assert!(count > 0, "a quota needs at least one request");
        let period = period.as_nanos();
        assert!(period > 0, "a quota needs a non-zero period");
        let period = if period > u64::MAX as u128 {
            u64::MAX
        } else {
            period as u64
        };
        let interval = period / count as u64;
        Self::from_interval(count, if interval == 0 { 1 } else { interval })
    }

    /// `count` requests per `period`, or why not: for numbers read from
    /// configuration, where [`Quota::new`] would panic.
    ///
    /// ```
    /// use std::time::Duration;
    /// use auth_ratelimit::{ConfigError, Quota};
    /// let q = Quota::try_new(100, Duration::from_secs(60)).unwrap();
    /// assert_eq!(q, Quota::per_minute(100));
    /// assert!(matches!(Quota::try_new(0, Duration::from_secs(60)), Err(ConfigError::InvalidQuota(_))));
    /// assert!(Quota::try_new(1, Duration::ZERO).is_err());
    /// ```
    pub fn try_new(count: u32, period: Duration) -> Result<Self, ConfigError> {
        if count == 0 {
            return Err(ConfigError::InvalidQuota("at least one request"));
        }
        if period.is_zero() {
            return Err(ConfigError::InvalidQuota("a non-zero period"));
        }
        Ok(Self::new(count, period))
    }

    /// `limit` requests per `period_seconds` seconds; both are non-zero, so
    /// this never panics (an API key's own rate limit is stored this way).
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use auth_ratelimit::Quota;
    /// let q = Quota::per_seconds(NonZeroU32::new(100).unwrap(), NonZeroU32::new(60).unwrap());
    /// assert_eq!(q, Quota::per_minute(100));
    /// ```
    pub const fn per_seconds(limit: NonZeroU32, period_seconds: NonZeroU32) -> Self {
        Self::new(
            limit.get(),
            Duration::from_secs(period_seconds.get() as u64),
        )
    }

    /// A bucket of `burst` tokens refilled one every `interval_nanos`.
    const fn from_interval(burst: u32, interval_nanos: u64) -> Self {
        let interval = if interval_nanos == 0 {
            1
        } else {
            interval_nanos
        };
        let tau = interval.saturating_mul(burst as u64);
        Self {
            burst,
            interval,
            tau,
        }
    }

    /// `count` requests per second.
    ///
    /// # Panics
    /// If `count` is 0.
    pub const fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    ///
    /// # Panics
    /// If `count` is 0.
    pub const fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    ///
    /// # Panics
    /// If `count` is 0.
    pub const fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// `count` requests per day.
    ///
    /// # Panics
    /// If `count` is 0.
    pub const fn per_day(count: u32) -> Self {
        Self::new(count, Duration::from_secs(86_400))
    }

    /// One token back every `interval`, bucket of one; combine with
    /// [`Quota::with_burst`].
    ///
    /// # Panics
    /// If `interval` is zero.
    pub const fn every(interval: Duration) -> Self {
        Self::new(1, interval)
    }

    /// The same refill interval with a bucket of `burst` tokens.
    ///
    /// # Panics
    /// If `burst` is 0.
    pub const fn with_burst(self, burst: u32) -> Self {
        assert!(burst > 0, "a quota needs a burst of at least one");
        Self::from_interval(burst, self.interval)
    }

    /// The bucket's capacity: how many requests may pass at once.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// How long one token takes to come back.
    pub const fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// How long an empty bucket takes to fill: `burst × interval`. This is
    /// the `w` of the IETF `RateLimit-Policy` field.
    pub const fn window(&self) -> Duration {
        Duration::from_nanos(self.tau)
    }

    /// The window in whole seconds, rounded up, at least 1.
    pub(crate) fn window_secs(&self) -> u64 {
        ceil_secs(self.tau).max(1)
    }

    /// The same bucket with the interval rounded down to whole microseconds
    /// (at least one), as the Redis store keeps it.
    #[cfg(feature = "redis")]
    pub(crate) const fn rounded_to_micros(&self) -> Self {
        let micros = self.interval / 1000;
        Self::from_interval(self.burst, if micros == 0 { 1000 } else { micros * 1000 })
    }

    pub(crate) const fn interval_nanos(&self) -> u64 {
        self.interval
    }

    pub(crate) const fn tau_nanos(&self) -> u64 {
        self.tau
    }

    /// The stricter of two quotas in each dimension: the smaller burst and
    /// the longer refill interval (the lower sustained rate). Taking either
    /// quota whole would let the one with the lower rate bring its larger
    /// burst: `5000 per 200 000 s` is slower than `100 per hour`, but lets
    /// 5000 requests through at once.
    pub(crate) fn tighter(self, other: Self) -> Self {
        Self::from_interval(
            self.burst.min(other.burst),
            self.interval.max(other.interval),
        )
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Quota({} burst, 1 per {:?})",
            self.burst,
            Duration::from_nanos(self.interval)
        )
    }
}

/// Whole seconds in `nanos`, rounded up.
pub(crate) fn ceil_secs(nanos: u64) -> u64 {
    nanos / NANOS_PER_SEC + u64::from(!nanos.is_multiple_of(NANOS_PER_SEC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_quota() {
        let q = Quota::per_hour(200);
        assert_eq!(q.interval_nanos(), 18 * NANOS_PER_SEC);
        assert_eq!(q.tau_nanos(), 3600 * NANOS_PER_SEC);
        assert_eq!(q.window_secs(), 3600);
    }

    #[test]
    fn uneven_interval_truncates_to_nanos() {
        let q = Quota::per_second(3);
        assert_eq!(q.interval_nanos(), 333_333_333);
        assert_eq!(q.burst(), 3);
        assert_eq!(q.window_secs(), 1);
    }

    #[test]
    fn huge_values_saturate() {
        let q = Quota::new(1, Duration::MAX).with_burst(u32::MAX);
        assert_eq!(q.tau_nanos(), u64::MAX);
        let q = Quota::new(u32::MAX, Duration::from_nanos(1));
        assert_eq!(q.interval_nanos(), 1);
    }

    #[test]
    #[should_panic(expected = "at least one request")]
    fn zero_count_is_a_config_error() {
        let _ = Quota::per_minute(0);
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(NANOS_PER_SEC), 1);
        assert_eq!(ceil_secs(NANOS_PER_SEC + 1), 2);
    }

    #[test]
    fn tighter_takes_the_smaller_burst_and_the_lower_rate() {
        let huge = Quota::per_seconds(NonZeroU32::MAX, NonZeroU32::MIN);
        let tier = Quota::per_minute(10);
        assert_eq!(tier.tighter(huge), tier);
        assert_eq!(huge.tighter(tier), tier);
        let slow = Quota::per_minute(2);
        assert_eq!(tier.tighter(slow), slow);
        // Same rate (one a minute), smaller burst wins.
        let small = Quota::per_minute(1);
        let burst = Quota::per_minute(1).with_burst(5);
        assert_eq!(burst.tighter(small), small);
        assert_eq!(small.tighter(burst), small);
        // Slower on average but burstier than the tier: the tier's burst at
        // the key's rate, never the key's burst.
        let hour = Quota::per_hour(100);
        let own = Quota::per_seconds(
            NonZeroU32::new(5000).unwrap(),
            NonZeroU32::new(200_000).unwrap(),
        );
        for q in [hour.tighter(own), own.tighter(hour)] {
            assert_eq!(q.burst(), 100);
            assert_eq!(q.interval(), own.interval());
        }
        // Faster but with a smaller burst: the key's burst at the tier's rate.
        let quick = Quota::per_second(10).with_burst(3);
        let q = hour.tighter(quick);
        assert_eq!((q.burst(), q.interval()), (3, hour.interval()));
    }
}
