//! The policy fields of a create or edit body, checked: metadata, address
//! allowlist, rate limit and credits. Every refusal is a 422
//! with a code of its own naming the field.

use std::num::NonZeroU32;

use auth_core::{
    policy::Credits, policy::KeyRateLimit, policy::Refill, policy::RefillEvery,
    policy::MAX_CREDITS, policy::MAX_META_BYTES,
};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::error::KeyApiError;

/// Most entries one key's `ip_allowlist` may hold.
pub(crate) const MAX_ALLOWLIST_ENTRIES: usize = 64;

/// `meta`: any JSON object of at most 4 KiB serialised.
pub(crate) fn meta(meta: Map<String, Value>) -> Result<Map<String, Value>, KeyApiError> {
    let size = Value::Object(meta).to_string();
    if size.len() > MAX_META_BYTES {
        return Err(KeyApiError::field(
            "meta_too_large",
            format!(
                "meta may be at most {MAX_META_BYTES} bytes of JSON ({} given)",
                size.len()
            ),
        ));
    }
    match serde_json::from_str(&size) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(KeyApiError::field(
            "invalid_meta",
            "meta must be a JSON object",
        )),
    }
}

/// `ip_allowlist`: CIDR blocks (`203.0.113.0/24`, `2001:db8::/32`) or
/// single addresses, at most [`MAX_ALLOWLIST_ENTRIES`]. Host bits are
/// cleared (`203.0.113.7/24` is kept as `203.0.113.0/24`).
pub(crate) fn ip_allowlist(list: Vec<String>) -> Result<Vec<IpNet>, KeyApiError> {
    if list.len() > MAX_ALLOWLIST_ENTRIES {
        return Err(KeyApiError::field(
            "invalid_ip_allowlist",
            format!("ip_allowlist may hold at most {MAX_ALLOWLIST_ENTRIES} entries"),
        ));
    }
    let mut nets: Vec<IpNet> = Vec::with_capacity(list.len());
    for entry in &list {
        let net = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                let shown: String = entry.chars().take(64).collect();
                KeyApiError::field(
                    "invalid_ip_allowlist",
                    format!(
                        "ip_allowlist entry {shown:?} is not an IP address or CIDR block such as \
                         203.0.113.0/24 or 2001:db8::/32"
                    ),
                )
            })?
            .trunc();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

/// `rate_limit`: `{"limit": N, "period_seconds": S}`, both positive.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitInput {
    /// Requests allowed per period.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    limit: u32,
    /// The period, in seconds.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    period_seconds: u32,
}

impl RateLimitInput {
    pub(crate) fn checked(self) -> Result<KeyRateLimit, KeyApiError> {
        match (
            NonZeroU32::new(self.limit),
            NonZeroU32::new(self.period_seconds),
        ) {
            (Some(limit), Some(period_seconds)) => Ok(KeyRateLimit::new(limit, period_seconds)),
            _ => Err(KeyApiError::field(
                "invalid_rate_limit",
                "rate_limit needs a positive limit and period_seconds",
            )),
        }
    }
}

/// `refill`: `{"amount": N, "every": "hour" | "day" | "week" | "month"}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RefillInput {
    /// What `remaining` becomes at each refill.
    amount: u64,
    every: RefillEvery,
}

/// `remaining` (and optionally `refill`): the key's credits, set at `now`.
pub(crate) fn credits(
    remaining: Option<u64>,
    refill: Option<RefillInput>,
    now: OffsetDateTime,
) -> Result<Option<Credits>, KeyApiError> {
    let invalid = |m: String| KeyApiError::field("invalid_credits", m);
    let Some(remaining) = remaining else {
        return match refill {
            Some(_) => Err(invalid(
                "refill needs remaining: the credits the key starts with".into(),
            )),
            None => Ok(None),
        };
    };
    let too_many = |n: u64| n > MAX_CREDITS;
    if too_many(remaining) || refill.as_ref().is_some_and(|r| too_many(r.amount)) {
        return Err(invalid(format!(
            "remaining and refill.amount may be at most {MAX_CREDITS}"
        )));
    }
    let credits = Credits::new(remaining, now);
    Ok(Some(match refill {
        Some(r) => credits.with_refill(Refill::new(r.amount, r.every)),
        None => credits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: KeyApiError) -> (u16, String, String) {
        match e {
            KeyApiError::Auth(e) => (
                e.status().as_u16(),
                e.code().as_str().to_owned(),
                e.message().to_owned(),
            ),
            KeyApiError::Conflict(m) => (409, "conflict".into(), m),
        }
    }

    #[test]
    fn allowlists_parse_normalise_and_name_the_bad_entry() {
        let ok = ip_allowlist(vec![
            "203.0.113.7/24".into(),
            "2001:db8::/32".into(),
            "198.51.100.7".into(),
            "203.0.113.0/24".into(),
        ])
        .unwrap();
        let shown: Vec<String> = ok.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]
        );

        let (status, c, message) =
            code(ip_allowlist(vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()]).unwrap_err());
        assert_eq!((status, c.as_str()), (422, "invalid_ip_allowlist"));
        assert!(message.contains("10.0.0.0/33"), "{message}");
        let many = vec!["10.0.0.1".to_owned(); MAX_ALLOWLIST_ENTRIES + 1];
        assert_eq!(
            code(ip_allowlist(many).unwrap_err()).1,
            "invalid_ip_allowlist"
        );
    }

    #[test]
    fn meta_and_credits_are_bounded() {
        let mut big = Map::new();
        big.insert("x".into(), Value::String("y".repeat(MAX_META_BYTES)));
        assert_eq!(code(meta(big).unwrap_err()).1, "meta_too_large");
        let mut fits = Map::new();
        fits.insert("plan".into(), Value::String("pro".into()));
        assert_eq!(meta(fits.clone()).unwrap(), fits);

        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(credits(None, None, now).unwrap(), None);
        let refill = || RefillInput {
            amount: 5,
            every: RefillEvery::Day,
        };
        assert_eq!(
            code(credits(None, Some(refill()), now).unwrap_err()).1,
            "invalid_credits"
        );
        assert_eq!(
            code(credits(Some(u64::MAX), None, now).unwrap_err()).1,
            "invalid_credits"
        );
        let c = credits(Some(3), Some(refill()), now).unwrap().unwrap();
        assert_eq!((c.remaining, c.refill.unwrap().amount), (3, 5));
        let zero = RateLimitInput {
            limit: 0,
            period_seconds: 60,
        };
        assert_eq!(code(zero.checked().unwrap_err()).1, "invalid_rate_limit");
    }
}
