//! Row encoding and error mapping shared by the SQLite and PostgreSQL backends.
//!
//! Key ids are stored as their 11-character base62 text (what URLs, logs and
//! operators see), scopes as a list of strings, times with microsecond
//! precision.

use std::net::IpAddr;

use time::OffsetDateTime;

use crate::{AuditOutcome, KeyId, RejectReason, ScopeSet, SecretCheck, StoreError};

/// Longest request path kept in an audit row; longer ones are cut.
pub(crate) const MAX_AUDIT_PATH: usize = 1024;
/// Longest method kept in an audit row.
pub(crate) const MAX_AUDIT_METHOD: usize = 16;

/// Maps a driver error: unique violations are conflicts, undecodable rows
/// are corrupt, everything else means the database cannot serve us now.
pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(ref db) if db.is_unique_violation() => {
            StoreError::Conflict("duplicate key id".into())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub(crate) fn key_id(text: &str) -> Result<KeyId, StoreError> {
    text.parse().map_err(|_| corrupt("invalid key id"))
}

pub(crate) fn opt_key_id(text: Option<String>) -> Result<Option<KeyId>, StoreError> {
    text.as_deref().map(key_id).transpose()
}

pub(crate) fn scopes<S: AsRef<str>>(
    list: impl IntoIterator<Item = S>,
) -> Result<ScopeSet, StoreError> {
    ScopeSet::parse(list).map_err(|_| corrupt("invalid scope"))
}

/// A stored secret check (kept as a 64-bit integer holding a `u32`).
pub(crate) fn check(v: Option<i64>) -> Result<Option<SecretCheck>, StoreError> {
    v.map(|v| {
        u32::try_from(v)
            .map(SecretCheck::from_u32)
            .map_err(|_| corrupt("invalid secret check"))
    })
    .transpose()
}

pub(crate) fn outcome(text: &str) -> Result<AuditOutcome, StoreError> {
    match text {
        "success" => Ok(AuditOutcome::Success),
        "failure" => Ok(AuditOutcome::Failure),
        _ => Err(corrupt("invalid audit outcome")),
    }
}

pub(crate) fn reason(text: Option<String>) -> Result<Option<RejectReason>, StoreError> {
    text.map(|r| RejectReason::from_name(&r).ok_or_else(|| corrupt("invalid audit reason")))
        .transpose()
}

pub(crate) fn client_ip(text: Option<String>) -> Result<Option<IpAddr>, StoreError> {
    text.map(|ip| ip.parse().map_err(|_| corrupt("invalid audit client ip")))
        .transpose()
}

pub(crate) fn status(code: Option<i64>) -> Result<Option<u16>, StoreError> {
    code.map(|c| u16::try_from(c).map_err(|_| corrupt("invalid audit status")))
        .transpose()
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Unix microseconds (SQLite keeps times as integers).
#[cfg(feature = "sqlite")]
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    // Every OffsetDateTime fits: ±9999 years is about ±3.2e17 µs.
    t.unix_timestamp_nanos().div_euclid(1000) as i64
}

#[cfg(feature = "sqlite")]
pub(crate) fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .map_err(|_| corrupt("time out of range"))
}

#[cfg(feature = "sqlite")]
pub(crate) fn opt_from_micros(us: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    us.map(from_micros).transpose()
}

/// Dedupes a batch of uses, keeping the latest time per key: one UPDATE per key.
pub(crate) fn latest_uses(uses: &[(KeyId, OffsetDateTime)]) -> Vec<(KeyId, OffsetDateTime)> {
    let mut latest = std::collections::HashMap::with_capacity(uses.len());
    for &(id, at) in uses {
        let t = latest.entry(id).or_insert(at);
        if at > *t {
            *t = at;
        }
    }
    latest.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn latest_use_wins() {
        let id = KeyId::random();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let t1 = t0 + time::Duration::seconds(5);
        assert_eq!(latest_uses(&[(id, t1), (id, t0)]), vec![(id, t1)]);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn micros_round_trip_truncates_nanos() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(-1_500).unwrap();
        assert_eq!(micros(t), -2);
        let t = time::macros::datetime!(2026-03-01 12:00:00.123456789 UTC);
        assert_eq!(
            from_micros(micros(t)).unwrap(),
            time::macros::datetime!(2026-03-01 12:00:00.123456 UTC)
        );
    }
}
