//! Usage-limited keys: a number of uses left, optionally refilled every
//! hour, day, week or month.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, Time, UtcOffset};

/// The largest number of credits a store keeps (SQL stores use signed
/// 64-bit integers); larger values are kept as this.
pub const MAX_CREDITS: u64 = i64::MAX as u64;

/// How often a key's credits are refilled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RefillEvery {
    /// At the start of every hour (UTC).
    Hour,
    /// At midnight UTC.
    Day,
    /// On Monday at midnight UTC.
    Week,
    /// On the first of the month at midnight UTC.
    Month,
}

impl RefillEvery {
    /// The name stored and sent in JSON: `hour`, `day`, `week`, `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The period named by [`RefillEvery::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Hour, Self::Day, Self::Week, Self::Month]
            .into_iter()
            .find(|e| e.as_str() == s)
    }

    /// The start of the period holding `now`, in UTC.
    ///
    /// ```
    /// use auth_core::policy::RefillEvery;
    /// use time::macros::datetime;
    /// let now = datetime!(2026-03-05 14:37:12 UTC); // a Thursday
    /// assert_eq!(RefillEvery::Hour.period_start(now), datetime!(2026-03-05 14:00 UTC));
    /// assert_eq!(RefillEvery::Day.period_start(now), datetime!(2026-03-05 0:00 UTC));
    /// assert_eq!(RefillEvery::Week.period_start(now), datetime!(2026-03-02 0:00 UTC));
    /// assert_eq!(RefillEvery::Month.period_start(now), datetime!(2026-03-01 0:00 UTC));
    /// ```
    pub fn period_start(self, now: OffsetDateTime) -> OffsetDateTime {
        let now = now.to_offset(UtcOffset::UTC);
        let midnight = now.replace_time(Time::MIDNIGHT);
        match self {
            Self::Hour => {
                now.replace_time(Time::from_hms(now.hour(), 0, 0).unwrap_or(Time::MIDNIGHT))
            }
            Self::Day => midnight,
            Self::Week => {
                midnight - Duration::days(i64::from(now.weekday().number_days_from_monday()))
            }
            Self::Month => midnight - Duration::days(i64::from(now.day()) - 1),
        }
    }
}

/// Credits given back at the start of every period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Refill {
    /// What `remaining` becomes (not what is added) at each refill.
    pub amount: u64,
    /// The period.
    pub every: RefillEvery,
}

impl Refill {
    /// `remaining` becomes `amount` at the start of every period.
    pub const fn new(amount: u64, every: RefillEvery) -> Self {
        Self { amount, every }
    }
}

/// A usage-limited key's credits: each successful use spends one.
///
/// JSON: `{"remaining": 100, "refill": {"amount": 100, "every": "day"}, "refilled_at": "…"}`
/// (`refill` is `null` for credits that are never refilled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Credits {
    /// Uses left.
    pub remaining: u64,
    /// How the credits come back, if they do.
    pub refill: Option<Refill>,
    /// The last refill (or when the credits were set): the next refill is
    /// due at the start of the first period after it.
    #[serde(with = "time::serde::rfc3339")]
    pub refilled_at: OffsetDateTime,
}

impl Credits {
    /// `remaining` uses, never refilled; `at` is when they were set.
    pub fn new(remaining: u64, at: OffsetDateTime) -> Self {
        Self {
            remaining,
            refill: None,
            refilled_at: at,
        }
    }

    /// The same credits, refilled by `refill` at the start of every period.
    pub fn with_refill(mut self, refill: Refill) -> Self {
        self.refill = Some(refill);
        self
    }

    /// The credits as they stand at `now`: refilled if a period began since
    /// the last refill (then `refilled_at` is that period's start).
    pub fn at(self, now: OffsetDateTime) -> Self {
        match self.refill {
            Some(r) if r.every.period_start(now) > self.refilled_at => Self {
                remaining: r.amount,
                refill: self.refill,
                refilled_at: r.every.period_start(now),
            },
            _ => self,
        }
    }

    /// Spends one credit at `now` (refilling first if due); what the memory
    /// store does under its lock, and the SQL stores in one statement.
    pub fn spend(&mut self, now: OffsetDateTime) -> CreditSpend {
        self.take(1, now)
    }

    /// Takes `amount` credits at `now` if that many are left (refilling
    /// first if due), else nothing ([`CreditSpend::Exhausted`]).
    pub fn take(&mut self, amount: u64, now: OffsetDateTime) -> CreditSpend {
        let current = self.at(now);
        let amount = amount.max(1);
        if current.remaining < amount {
            return CreditSpend::Exhausted;
        }
        *self = Self {
            remaining: current.remaining - amount,
            ..current
        };
        CreditSpend::Spent {
            remaining: self.remaining,
        }
    }

    /// Gives back `amount` credits taken at `taken_at` and not spent, unless
    /// the credits were set or refilled after `taken_at`. `true` when added.
    pub fn give_back(&mut self, amount: u64, taken_at: OffsetDateTime) -> bool {
        if self.refilled_at > taken_at {
            return false;
        }
        self.remaining = self.remaining.saturating_add(amount).min(MAX_CREDITS);
        true
    }

    /// These credits as carried over to a replacement key when the key
    /// holding `current` is rotated: never more than `current` has left.
    pub fn carried_from(self, current: &Credits) -> Self {
        Self {
            remaining: self.remaining.min(current.remaining),
            refill: self.refill,
            refilled_at: current.refilled_at,
        }
    }
}

/// What [`KeyStore::spend_credit`](crate::KeyStore::spend_credit) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CreditSpend {
    /// The key has no credits: it is not usage-limited.
    Unlimited,
    /// One credit was spent; this many are left.
    Spent {
        /// Uses left after this one.
        remaining: u64,
    },
    /// No credit left (and no refill due): refuse the request.
    Exhausted,
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn spends_down_then_refills_at_the_next_period() {
        let t0 = datetime!(2026-03-05 10:30 UTC);
        let mut c = Credits::new(2, t0).with_refill(Refill {
            amount: 5,
            every: RefillEvery::Day,
        });
        assert_eq!(c.spend(t0), CreditSpend::Spent { remaining: 1 });
        assert_eq!(c.spend(t0), CreditSpend::Spent { remaining: 0 });
        assert_eq!(
            c.spend(datetime!(2026-03-05 23:59:59 UTC)),
            CreditSpend::Exhausted
        );
        let next_day = datetime!(2026-03-06 0:00:01 UTC);
        assert_eq!(c.spend(next_day), CreditSpend::Spent { remaining: 4 });
        assert_eq!(c.refilled_at, datetime!(2026-03-06 0:00 UTC));
        // Once per period: the same day does not refill again.
        assert_eq!(c.spend(next_day), CreditSpend::Spent { remaining: 3 });
    }

    #[test]
    fn takes_all_or_nothing_and_gives_back_only_within_the_period() {
        let t0 = datetime!(2026-03-05 10:30 UTC);
        let mut c = Credits::new(5, t0).with_refill(Refill::new(5, RefillEvery::Day));
        assert_eq!(c.take(3, t0), CreditSpend::Spent { remaining: 2 });
        assert_eq!(c.take(3, t0), CreditSpend::Exhausted);
        assert_eq!(c.remaining, 2, "a refused take takes nothing");
        assert!(c.give_back(1, t0));
        assert_eq!(c.remaining, 3);
        // Refilled the next day: what was taken the day before stays spent.
        let next_day = datetime!(2026-03-06 0:00:01 UTC);
        assert_eq!(c.take(1, next_day), CreditSpend::Spent { remaining: 4 });
        assert!(!c.give_back(2, t0));
        assert_eq!(c.remaining, 4);
    }

    #[test]
    fn never_refilled_credits_stay_exhausted() {
        let t0 = datetime!(2026-03-05 10:30 UTC);
        let mut c = Credits::new(0, t0);
        assert_eq!(c.spend(t0 + Duration::days(400)), CreditSpend::Exhausted);
    }

    #[test]
    fn period_starts_are_in_utc() {
        let t = datetime!(2026-03-01 0:30 +02:00); // 2026-02-28 22:30 UTC
        assert_eq!(
            RefillEvery::Month.period_start(t),
            datetime!(2026-02-01 0:00 UTC)
        );
        assert_eq!(
            RefillEvery::Hour.period_start(t),
            datetime!(2026-02-28 22:00 UTC)
        );
        for e in [
            RefillEvery::Hour,
            RefillEvery::Day,
            RefillEvery::Week,
            RefillEvery::Month,
        ] {
            assert_eq!(RefillEvery::from_name(e.as_str()), Some(e));
        }
    }
}
