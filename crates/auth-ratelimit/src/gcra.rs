//! The bucket arithmetic: GCRA over one integer, the theoretical arrival time.
//!
//! A token bucket of capacity `C` refilled one token per `T` is stored as a
//! single number `tat`: the time at which the bucket would be full again if
//! nothing else arrived. With `tau = C × T`:
//!
//! * tokens now = `floor((tau - max(tat - now, 0)) / T)`;
//! * a request of cost `n` passes iff `max(tat, now) + n × T - now <= tau`,
//!   and then `tat := max(tat, now) + n × T`;
//! * a denied request could pass after `max(tat, now) + n × T - now - tau`.
//!
//! This is exactly an integer token bucket that keeps the fractional progress
//! of the next token (see the property test against such a model in
//! `tests/bucket_model.rs`), with integer nanoseconds throughout: no float,
//! no drift. A `tat` of 0 (or anything at or before `now`) is a full bucket.

use crate::{Decision, Quota};

/// Takes `cost` tokens if the bucket whose state is `tat` holds them at `now`.
///
/// Returns the new state with an allowed decision, or a denied decision (the
/// state does not change). A cost above the capacity is clamped to it, so the
/// most expensive request needs a full bucket rather than never passing.
#[inline]
pub(crate) fn take(
    tat: u64,
    now: u64,
    quota: &Quota,
    cost: u32,
) -> Result<(u64, Decision), Decision> {
    let cost = cost.min(quota.burst());
    let tat = if tat > now { tat } else { now };
    let new_tat = tat.saturating_add(quota.interval_nanos().saturating_mul(u64::from(cost)));
    let debt = new_tat - now;
    if debt > quota.tau_nanos() {
        Err(Decision::denied(
            *quota,
            tat - now,
            debt - quota.tau_nanos(),
        ))
    } else {
        Ok((new_tat, Decision::allowed(*quota, debt)))
    }
}

/// The state after charging `cost` tokens whether or not the bucket holds
/// them: the debt grows by `cost` intervals but never beyond `max_debt`
/// nanoseconds ahead of `now`. Used for failures, which have already
/// happened and so cannot be refused: every one counts, up to the cap.
#[inline]
pub(crate) fn charge(tat: u64, now: u64, quota: &Quota, cost: u32, max_debt: u64) -> u64 {
    let tat = if tat > now { tat } else { now };
    let charged = tat.saturating_add(quota.interval_nanos().saturating_mul(u64::from(cost)));
    charged.min(now.saturating_add(max_debt).max(tat))
}

/// What [`take`] would answer, without the new state.
#[inline]
pub(crate) fn peek(tat: u64, now: u64, quota: &Quota, cost: u32) -> Decision {
    match take(tat, now, quota, cost) {
        Ok((_, d)) | Err(d) => d,
    }
}

/// The state after giving `cost` tokens back (never more than a full bucket).
#[inline]
pub(crate) fn give_back(tat: u64, quota: &Quota, cost: u32) -> u64 {
    let cost = cost.min(quota.burst());
    tat.saturating_sub(quota.interval_nanos().saturating_mul(u64::from(cost)))
}

/// Whether the bucket is full at `now` (and so can be forgotten).
#[inline]
pub(crate) fn is_full(tat: u64, now: u64) -> bool {
    tat <= now
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_one_per_interval() {
        let q = Quota::per_minute(3); // one token per 20 s
        let mut tat = 0;
        let now = 100 * S;
        for left in [2, 1, 0] {
            let (t, d) = take(tat, now, &q, 1).unwrap();
            assert_eq!(d.remaining(), left);
            tat = t;
        }
        let d = take(tat, now, &q, 1).unwrap_err();
        assert_eq!(d.retry_after(), Some(Duration::from_secs(20)));
        assert_eq!(d.reset(), Duration::from_secs(60));
        assert_eq!(d.remaining(), 0);
        // One nanosecond early is still too early; on time passes.
        assert!(take(tat, now + 20 * S - 1, &q, 1).is_err());
        let (t, d) = take(tat, now + 20 * S, &q, 1).unwrap();
        assert_eq!(d.remaining(), 0);
        assert_eq!(t, tat + 20 * S);
    }

    #[test]
    fn weighted_cost_and_clamp() {
        let q = Quota::per_second(10);
        let (tat, d) = take(0, 0, &q, 4).unwrap();
        assert_eq!(d.remaining(), 6);
        let d = take(tat, 0, &q, 7).unwrap_err();
        assert_eq!(d.remaining(), 6);
        assert_eq!(d.retry_after(), Some(Duration::from_millis(100)));
        // A cost of 1000 is treated as 10: it needs a full bucket.
        assert!(take(tat, 0, &q, 1000).is_err());
        assert!(take(0, 0, &q, 1000).is_ok());
    }

    #[test]
    fn give_back_restores_tokens() {
        let q = Quota::per_second(10);
        let (tat, _) = take(0, 5 * S, &q, 3).unwrap();
        let tat = give_back(tat, &q, 3);
        assert!(is_full(tat, 5 * S));
        assert_eq!(peek(tat, 5 * S, &q, 1).remaining(), 9);
        assert_eq!(give_back(0, &q, 10), 0);
    }

    #[test]
    fn no_drift_over_a_million_intervals() {
        // One request per interval for a million intervals stays exactly at
        // burst-1 remaining.
        let q = Quota::per_second(7);
        let mut tat = 0;
        for i in 0..1_000_000u64 {
            let now = i * q.interval_nanos();
            let (t, d) = take(tat, now, &q, 1).unwrap();
            assert_eq!(d.remaining(), 6, "at step {i}");
            tat = t;
        }
    }

    #[test]
    fn charges_beyond_the_bucket_up_to_the_cap() {
        let q = Quota::per_minute(3); // one token per 20 s, tau 60 s
        let cap = 2 * 60 * S;
        let mut tat = 0;
        for _ in 0..3 {
            tat = charge(tat, 100 * S, &q, 1, cap);
        }
        assert_eq!(tat, 160 * S);
        assert!(
            take(tat, 100 * S, &q, 1).is_err(),
            "three failures empty it"
        );
        // Failures past the empty bucket still count, up to two windows.
        tat = charge(tat, 100 * S, &q, 1, cap);
        assert_eq!(tat, 180 * S);
        for _ in 0..10 {
            tat = charge(tat, 100 * S, &q, 1, cap);
        }
        assert_eq!(tat, 220 * S);
        let d = peek(tat, 100 * S, &q, 1);
        assert_eq!(d.retry_after(), Some(Duration::from_secs(80)));
        // A fresh or refilled bucket starts from now.
        assert_eq!(charge(5 * S, 100 * S, &q, 1, cap), 120 * S);
        assert_eq!(charge(u64::MAX, u64::MAX - 1, &q, 1, cap), u64::MAX);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let q = Quota::new(1, Duration::MAX).with_burst(u32::MAX);
        let (tat, _) = take(u64::MAX - 1, u64::MAX - 1, &q, 1).unwrap();
        assert_eq!(tat, u64::MAX);
        // At the end of time the state sticks at u64::MAX instead of wrapping.
        let (tat, d) = take(tat, u64::MAX - 1, &q, 1).unwrap();
        assert_eq!((tat, d.reset_nanos()), (u64::MAX, 1));
    }
}
