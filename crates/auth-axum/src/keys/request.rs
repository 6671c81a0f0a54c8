//! Request bodies and query strings of the key-management routes, parsed
//! strictly.

use auth_core::KeyPolicy;
use axum::extract::{rejection::QueryRejection, Query};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{Map, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    error::KeyApiError,
    policy_input::{self, RateLimitInput, RefillInput},
};

/// `POST /`: `{"name": "...", "scopes": [...], "expires_at": null}` and
/// optionally `meta`, `external_id`, `ip_allowlist`, `rate_limit`,
/// `remaining` and `refill`.
/// (`Default` only for `parse_json`'s bound: an empty body is refused.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    pub(crate) name: String,
    /// Absent: the manager's [`DefaultScopes`](super::DefaultScopes).
    #[serde(default)]
    pub(crate) scopes: Option<Vec<String>>,
    /// RFC 3339, checked by [`CreateKey::expiry`] to name the field in errors.
    #[serde(default)]
    pub(crate) expires_at: Option<String>,
    #[serde(default)]
    pub(crate) meta: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) external_id: Option<String>,
    #[serde(default)]
    pub(crate) ip_allowlist: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) rate_limit: Option<RateLimitInput>,
    /// Uses the key starts with (absent: unlimited).
    #[serde(default)]
    pub(crate) remaining: Option<u64>,
    #[serde(default)]
    pub(crate) refill: Option<RefillInput>,
}

impl CreateKey {
    /// The parsed `expires_at`.
    pub(crate) fn expiry(&self) -> Result<Option<OffsetDateTime>, KeyApiError> {
        self.expires_at
            .as_deref()
            .map(|t| {
                OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
                    KeyApiError::invalid(
                        "expires_at must be an RFC 3339 date-time such as 2030-01-01T00:00:00Z, or null",
                    )
                })
            })
            .transpose()
    }
}

impl CreateKey {
    /// The new key's policy, every field checked; credits are set at `now`.
    pub(crate) fn policy(&mut self, now: OffsetDateTime) -> Result<KeyPolicy, KeyApiError> {
        let mut policy = KeyPolicy::default();
        policy.meta = checked(self.meta.take(), policy_input::meta)?.unwrap_or_default();
        policy.external_id = checked(self.external_id.take(), policy_input::external_id)?;
        policy.ip_allowlist =
            checked(self.ip_allowlist.take(), policy_input::ip_allowlist)?.unwrap_or_default();
        policy.rate_limit = checked(self.rate_limit.take(), RateLimitInput::checked)?;
        policy.credits = policy_input::credits(self.remaining.take(), self.refill.take(), now)?;
        Ok(policy)
    }
}

/// A field given in the body, checked by `check`; an absent one stays absent.
fn checked<T, U>(
    field: Option<T>,
    check: impl FnOnce(T) -> Result<U, KeyApiError>,
) -> Result<Option<U>, KeyApiError> {
    field.map(check).transpose()
}

/// `POST /{id}/rotate`: `{"grace_seconds": N}`, or no body at all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateKey {
    #[serde(default)]
    pub(crate) grace_seconds: u64,
}

/// `GET /{id}/activity?limit=&before=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityQuery {
    pub(crate) limit: Option<usize>,
    pub(crate) before: Option<i64>,
}

/// Parses a JSON body: 400 when it is not JSON, 422 when it is JSON of the
/// wrong shape (serde's message says which field and why). An empty body is
/// `T::default()` when `empty_ok`.
pub(crate) fn parse_json<T: DeserializeOwned + Default>(
    body: &[u8],
    empty_ok: bool,
) -> Result<T, KeyApiError> {
    if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            KeyApiError::invalid(format!("Invalid request body: {e}"))
        }
        _ => KeyApiError::bad_request("The request body must be a JSON object"),
    })
}

/// The parsed query string, or 400 with `usage`, which says what it takes.
pub(crate) fn query_or<T>(
    query: Result<Query<T>, QueryRejection>,
    usage: &'static str,
) -> Result<T, KeyApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| KeyApiError::bad_request(usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_strictly() {
        let ok: CreateKey = parse_json(
            br#"{"name":"ci","scopes":["read"],"expires_at":"2999-01-01T00:00:00Z"}"#,
            false,
        )
        .unwrap();
        assert_eq!(ok.name, "ci");
        assert_eq!(ok.scopes.as_deref(), Some(&["read".to_owned()][..]));
        assert_eq!(ok.expiry().unwrap().unwrap().year(), 2999);

        let typo = parse_json::<CreateKey>(br#"{"nmae":"ci"}"#, false).unwrap_err();
        assert!(
            matches!(typo, KeyApiError::Auth(ref e) if e.status() == 422 && e.message().contains("nmae"))
        );
        let not_json = parse_json::<CreateKey>(b"name=ci", false).unwrap_err();
        assert!(matches!(not_json, KeyApiError::Auth(ref e) if e.status() == 400));
        let empty = parse_json::<CreateKey>(b"", false).unwrap_err();
        assert!(matches!(empty, KeyApiError::Auth(ref e) if e.status() == 400));
        let bad_time =
            parse_json::<CreateKey>(br#"{"name":"ci","expires_at":"tomorrow"}"#, false).unwrap();
        let err = bad_time.expiry().unwrap_err();
        assert!(
            matches!(err, KeyApiError::Auth(ref e) if e.status() == 422 && e.message().contains("expires_at"))
        );

        let omitted: CreateKey = parse_json(br#"{"name":"ci"}"#, false).unwrap();
        assert_eq!(omitted.scopes, None);
        let none: CreateKey = parse_json(br#"{"name":"ci","scopes":[]}"#, false).unwrap();
        assert_eq!(none.scopes, Some(vec![]));

        let rotate: RotateKey = parse_json(b"  ", true).unwrap();
        assert_eq!(rotate.grace_seconds, 0);
        let rotate: RotateKey = parse_json(br#"{"grace_seconds":60}"#, true).unwrap();
        assert_eq!(rotate.grace_seconds, 60);
        assert!(parse_json::<RotateKey>(br#"{"grace_seconds":-1}"#, true).is_err());
    }
}
