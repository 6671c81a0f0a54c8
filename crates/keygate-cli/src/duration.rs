//! Durations on the command line: `90s`, `15m`, `1h`, `30d`, `2w`.

use std::{fmt, str::FromStr};

/// A non-negative span of time given as a number and a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span(pub time::Duration);

impl Span {
    /// As a std duration (never negative).
    pub(crate) fn std(self) -> std::time::Duration {
        std::time::Duration::try_from(self.0).unwrap_or_default()
    }

    /// `now - self`, clamped to the epoch.
    pub(crate) fn ago(self, now: time::OffsetDateTime) -> time::OffsetDateTime {
        now.checked_sub(self.0)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

/// Why a duration was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidSpan(String);

impl fmt::Display for InvalidSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration '{}': use a number and one of s, m, h, d, w (e.g. 30d)",
            self.0
        )
    }
}

impl std::error::Error for InvalidSpan {}

impl FromStr for Span {
    type Err = InvalidSpan;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidSpan(s.chars().take(32).collect());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = t.split_at(split);
        if n.is_empty() || n.len() > 9 {
            return Err(bad());
        }
        let n: i64 = n.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        Ok(Span(time::Duration::seconds(n * seconds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("90s".parse(), Ok(Span(time::Duration::seconds(90))));
        assert_eq!("15m".parse(), Ok(Span(time::Duration::minutes(15))));
        assert_eq!("1h".parse(), Ok(Span(time::Duration::hours(1))));
        assert_eq!("30d".parse(), Ok(Span(time::Duration::days(30))));
        assert_eq!("2w".parse(), Ok(Span(time::Duration::weeks(2))));
        assert_eq!("0s".parse(), Ok(Span(time::Duration::ZERO)));
    }

    #[test]
    fn refuses_the_rest() {
        for bad in ["", "d", "30", "-1d", "1.5h", "30 days", "1y", "9999999999d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
    }
}
