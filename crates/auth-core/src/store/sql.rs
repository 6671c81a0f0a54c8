//! Row encoding and error mapping shared by the SQLite and PostgreSQL backends.
//!
//! Key ids are stored as their 11-character base62 text (what URLs, logs and
//! operators see), scopes as a list of strings, times with microsecond
//! precision.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::KeyUse;
use crate::{
    audit::AuditOutcome, policy::Credits, policy::KeyRateLimit, policy::Refill,
    policy::RefillEvery, store::StoreError, token::SecretCheck, KeyId, RejectReason, ScopeSet,
};

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
        | sqlx::Error::ColumnNotFound(_) => StoreError::corrupt(e),
        e => StoreError::unavailable(e),
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::corrupt(what)
}

/// A stored event's method: a request's, or a label such as `CLI`.
pub(crate) fn method(label: &str) -> Result<http::Method, StoreError> {
    http::Method::from_bytes(label.as_bytes()).map_err(|_| corrupt("invalid method"))
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

/// Dedupes a batch of uses, keeping the latest per key (with an address,
/// if any use had one): one UPDATE per key.
pub(crate) fn latest_uses(uses: &[KeyUse]) -> Vec<KeyUse> {
    let mut latest = std::collections::HashMap::with_capacity(uses.len());
    for &u in uses {
        let l = latest.entry(u.id).or_insert(u);
        *l = super::later_use(*l, u);
    }
    latest.into_values().collect()
}

/// `meta` as stored: a JSON object.
pub(crate) fn meta_text(meta: &Map<String, Value>) -> String {
    Value::Object(meta.clone()).to_string()
}

pub(crate) fn meta(text: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt("invalid meta"))
}

/// An allowlist as stored: CIDR strings (`203.0.113.0/24`, `2001:db8::/32`).
pub(crate) fn ip_allowlist_text(list: &[IpNet]) -> Vec<String> {
    list.iter().map(IpNet::to_string).collect()
}

pub(crate) fn ip_allowlist<S: AsRef<str>>(
    list: impl IntoIterator<Item = S>,
) -> Result<Vec<IpNet>, StoreError> {
    list.into_iter()
        .map(|s| {
            s.as_ref()
                .parse()
                .map_err(|_| corrupt("invalid ip_allowlist entry"))
        })
        .collect()
}

pub(crate) fn last_used_ip(text: Option<String>) -> Result<Option<IpAddr>, StoreError> {
    text.map(|ip| ip.parse().map_err(|_| corrupt("invalid last_used_ip")))
        .transpose()
}

/// A key's own quota as stored: `rate_limit` and `rate_limit_period_seconds`.
pub(crate) fn rate_limit_columns(r: Option<KeyRateLimit>) -> (Option<i64>, Option<i64>) {
    (
        r.map(|r| i64::from(r.limit.get())),
        r.map(|r| i64::from(r.period_seconds.get())),
    )
}

pub(crate) fn rate_limit(
    limit: Option<i64>,
    period: Option<i64>,
) -> Result<Option<KeyRateLimit>, StoreError> {
    let positive = |v: i64| {
        u32::try_from(v)
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .ok_or_else(|| corrupt("invalid rate limit"))
    };
    match (limit, period) {
        (None, None) => Ok(None),
        (Some(l), Some(p)) => Ok(Some(KeyRateLimit {
            limit: positive(l)?,
            period_seconds: positive(p)?,
        })),
        _ => Err(corrupt("incomplete rate limit")),
    }
}

/// Credits as stored: four nullable columns, all `NULL` for an unlimited key.
pub(crate) struct CreditColumns {
    pub remaining: Option<i64>,
    pub refill_amount: Option<i64>,
    pub refill_every: Option<&'static str>,
    pub refilled_at: Option<OffsetDateTime>,
}

/// Counts above [`MAX_CREDITS`](crate::policy::MAX_CREDITS) are kept as it.
fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn credit_columns(c: Option<Credits>) -> CreditColumns {
    CreditColumns {
        remaining: c.map(|c| count(c.remaining)),
        refill_amount: c.and_then(|c| c.refill).map(|r| count(r.amount)),
        refill_every: c.and_then(|c| c.refill).map(|r| r.every.as_str()),
        refilled_at: c.map(|c| c.refilled_at),
    }
}

pub(crate) fn credits(
    remaining: Option<i64>,
    refill_amount: Option<i64>,
    refill_every: Option<String>,
    refilled_at: Option<OffsetDateTime>,
) -> Result<Option<Credits>, StoreError> {
    let count = |v: i64| u64::try_from(v).map_err(|_| corrupt("negative credits"));
    let (Some(remaining), Some(refilled_at)) = (remaining, refilled_at) else {
        return match (remaining, refill_amount, refill_every, refilled_at) {
            (None, None, None, None) => Ok(None),
            _ => Err(corrupt("incomplete credits")),
        };
    };
    let refill = match (refill_amount, refill_every) {
        (None, None) => None,
        (Some(amount), Some(every)) => Some(Refill {
            amount: count(amount)?,
            every: RefillEvery::from_name(&every)
                .ok_or_else(|| corrupt("invalid refill period"))?,
        }),
        _ => return Err(corrupt("incomplete refill")),
    };
    Ok(Some(Credits {
        remaining: count(remaining)?,
        refill,
        refilled_at,
    }))
}

/// The start of the current hour, day, week and month: the refill times
/// [`KeyStore::spend_credit`](super::KeyStore::spend_credit) binds, so one
/// statement refills any key.
pub(crate) fn period_starts(now: OffsetDateTime) -> [OffsetDateTime; 4] {
    [
        RefillEvery::Hour,
        RefillEvery::Day,
        RefillEvery::Week,
        RefillEvery::Month,
    ]
    .map(|e| e.period_start(now))
}

/// The columns [`KeyStore::update`](super::KeyStore::update) may change,
/// each with the parameter numbers of its "change it" flag and its value.
/// Both backends bind in this order, then the key id (parameter 23).
const UPDATABLE: [(&str, usize, usize); 13] = [
    ("name", 1, 2),
    ("scopes", 3, 4),
    ("expires_at", 5, 6),
    ("meta", 7, 8),
    ("external_id", 9, 10),
    ("disabled_at", 11, 12),
    ("ip_allowlist", 13, 14),
    ("rate_limit", 15, 16),
    ("rate_limit_period_seconds", 15, 17),
    ("credits_remaining", 18, 19),
    ("credits_refill_amount", 18, 20),
    ("credits_refill_every", 18, 21),
    ("credits_refilled_at", 18, 22),
];

/// One `UPDATE … RETURNING` applying a [`KeyUpdate`](super::KeyUpdate):
/// `col = CASE WHEN <flag> THEN <value> ELSE col END` for every column,
/// `mark` being the backend's parameter sigil (`?` or `$`).
pub(crate) fn update_statement(mark: char, returning: &str) -> String {
    let set: Vec<String> = UPDATABLE
        .iter()
        .map(|(col, flag, value)| {
            format!("{col} = CASE WHEN {mark}{flag} THEN {mark}{value} ELSE {col} END")
        })
        .collect();
    format!(
        "UPDATE api_keys SET {} WHERE id = {mark}23 RETURNING {returning}",
        set.join(", ")
    )
}

/// One statement taking credits: refill first if the period (bound as
/// parameters 2-5: hour, day, week, month starts) began after the last
/// refill, then take the amount (parameter 6) if that many are left. Key id
/// is parameter 1. Returns the credits left; no row when the key is
/// unknown, unlimited or has fewer left than the amount.
pub(crate) fn take_credits_statement(mark: char) -> String {
    let start = format!(
        "(CASE credits_refill_every WHEN 'hour' THEN {mark}2 WHEN 'day' THEN {mark}3 \
         WHEN 'week' THEN {mark}4 WHEN 'month' THEN {mark}5 END)"
    );
    let due = format!("({start} > credits_refilled_at)");
    let current =
        format!("(CASE WHEN {due} THEN credits_refill_amount ELSE credits_remaining END)");
    format!(
        "UPDATE api_keys SET credits_remaining = {current} - {mark}6, \
         credits_refilled_at = CASE WHEN {due} THEN {start} ELSE credits_refilled_at END \
         WHERE id = {mark}1 AND credits_remaining IS NOT NULL AND {current} >= {mark}6 \
         RETURNING credits_remaining"
    )
}

/// One statement giving back `amount` (parameter 1) credits to key
/// parameter 2, unless they were set or refilled after the credits were
/// taken (parameter 3): those credits belonged to a period that is over, or
/// to a count an administrator replaced.
pub(crate) fn return_credits_statement(mark: char) -> &'static str {
    if mark == '$' {
        "UPDATE api_keys SET credits_remaining = credits_remaining + $1 \
         WHERE id = $2 AND credits_remaining IS NOT NULL AND credits_refilled_at <= $3"
    } else {
        "UPDATE api_keys SET credits_remaining = credits_remaining + ?1 \
         WHERE id = ?2 AND credits_remaining IS NOT NULL AND credits_refilled_at <= ?3"
    }
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
    fn latest_use_wins_and_keeps_an_address() {
        let id = KeyId::random();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let t1 = t0 + time::Duration::seconds(5);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            latest_uses(&[KeyUse::new(id, t1), KeyUse::new(id, t0).from_ip(ip)]),
            vec![KeyUse::new(id, t1).from_ip(ip)]
        );
    }

    #[test]
    fn credits_round_trip_and_refuse_half_rows() {
        let t = time::macros::datetime!(2026-03-01 12:00 UTC);
        let c = Credits::new(7, t).with_refill(Refill {
            amount: 10,
            every: RefillEvery::Week,
        });
        let cols = credit_columns(Some(c));
        assert_eq!(
            credits(
                cols.remaining,
                cols.refill_amount,
                cols.refill_every.map(str::to_owned),
                cols.refilled_at
            )
            .unwrap(),
            Some(c)
        );
        assert_eq!(credits(None, None, None, None).unwrap(), None);
        assert!(credits(Some(1), None, None, None).is_err());
        assert!(credits(Some(-1), None, None, Some(t)).is_err());
        assert!(rate_limit(Some(5), None).is_err());
        assert!(rate_limit(Some(0), Some(5)).is_err());
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
