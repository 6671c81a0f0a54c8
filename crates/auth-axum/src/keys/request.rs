//! Request bodies and query strings of the key-management routes, parsed
//! strictly.

use auth_core::policy::KeyPolicy;
use axum::extract::{rejection::QueryRejection, Query};
use serde::{
    de::{DeserializeOwned, IgnoredAny},
    Deserialize, Deserializer,
};
use serde_json::{Map, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    error::KeyApiError,
    policy_input::{self, RateLimitInput, RefillInput},
};

/// `POST /`: only `name` is required. `null` is refused for every field
/// but `expires_at` (where it means "never"); `external_id` is refused
/// whatever its value.
// (`Default` only for `parse_json`'s bound: an empty body is refused.)
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    pub(crate) name: String,
    /// Absent: the service's default scopes; `[]`: none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub(crate) scopes: Field<Vec<String>>,
    /// RFC 3339, or `null` for a key that does not expire.
    // Parsed by `CreateKey::expiry`, to name the field in errors.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub(crate) expires_at: Option<String>,
    /// A JSON object of at most 4 KiB.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub(crate) meta: Field<Map<String, Value>>,
    // Only so that it is refused by name: see `refuse_application_fields`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub(crate) external_id: Field<IgnoredAny>,
    /// CIDR blocks or addresses, at most 64.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub(crate) ip_allowlist: Field<Vec<String>>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = RateLimitInput))]
    pub(crate) rate_limit: Field<RateLimitInput>,
    /// Uses the key starts with (absent: unlimited).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub(crate) remaining: Field<u64>,
    /// Needs `remaining`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = RefillInput))]
    pub(crate) refill: Field<RefillInput>,
}

/// A field of a JSON body: absent, `null`, or a value. `null` is kept apart
/// from absence so that it can be refused by name: read as "absent", a
/// `"scopes": null` would quietly take the default scopes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) enum Field<T> {
    /// Not in the body.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// Any other value.
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Self::Null,
            Some(v) => Self::Value(v),
        })
    }
}

impl<T> Field<T> {
    /// The value, if one was given; 422 `null_not_allowed` naming `name`
    /// for `null`.
    pub(crate) fn given(self, name: &str) -> Result<Option<T>, KeyApiError> {
        match self {
            Self::Absent => Ok(None),
            Self::Null => Err(KeyApiError::field(
                "null_not_allowed",
                format!("{name} may not be null: leave it out, or give a value"),
            )),
            Self::Value(v) => Ok(Some(v)),
        }
    }

    /// Whether the body names the field at all (`null` included).
    pub(crate) fn is_given(&self) -> bool {
        !matches!(self, Self::Absent)
    }
}

/// 422 `field_not_settable` when a body sets `external_id`, whatever its
/// value (`null` too): handlers receive it in `AuthContext::external_id` as
/// the application's own id for the key (a customer, a tenant), so only the
/// application sets it, through `KeyIssuer` or the store, never a key holder
/// through this router.
pub(crate) fn refuse_application_fields(
    external_id: &Field<IgnoredAny>,
) -> Result<(), KeyApiError> {
    if external_id.is_given() {
        return Err(KeyApiError::field(
            "field_not_settable",
            "external_id is set by the application, not through this API: it is the \
             application's own id for the key, which request handlers trust",
        ));
    }
    Ok(())
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
    /// The scopes asked for; `None` when absent (the default applies).
    pub(crate) fn scopes(&mut self) -> Result<Option<Vec<String>>, KeyApiError> {
        std::mem::take(&mut self.scopes).given("scopes")
    }

    /// The new key's policy, every field checked; credits are set at `now`.
    pub(crate) fn policy(&mut self, now: OffsetDateTime) -> Result<KeyPolicy, KeyApiError> {
        refuse_application_fields(&self.external_id)?;
        let mut policy = KeyPolicy::default();
        let meta = std::mem::take(&mut self.meta).given("meta")?;
        policy.meta = checked(meta, policy_input::meta)?.unwrap_or_default();
        let list = std::mem::take(&mut self.ip_allowlist).given("ip_allowlist")?;
        policy.ip_allowlist = checked(list, policy_input::ip_allowlist)?.unwrap_or_default();
        let rate_limit = std::mem::take(&mut self.rate_limit).given("rate_limit")?;
        policy.rate_limit = checked(rate_limit, RateLimitInput::checked)?;
        let remaining = std::mem::take(&mut self.remaining).given("remaining")?;
        let refill = std::mem::take(&mut self.refill).given("refill")?;
        policy.credits = policy_input::credits(remaining, refill, now)?;
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateKey {
    /// How long the old key keeps working (default 0).
    #[serde(default)]
    pub(crate) grace_seconds: u64,
}

/// `GET /{id}/activity?limit=&before=`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityQuery {
    /// 1-200 (default 50).
    pub(crate) limit: Option<usize>,
    /// A `next_cursor` from the previous page.
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
        assert_eq!(ok.scopes, Field::Value(vec!["read".to_owned()]));
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

        let mut omitted: CreateKey = parse_json(br#"{"name":"ci"}"#, false).unwrap();
        assert_eq!(omitted.scopes().unwrap(), None);
        let mut none: CreateKey = parse_json(br#"{"name":"ci","scopes":[]}"#, false).unwrap();
        assert_eq!(none.scopes().unwrap(), Some(vec![]));
        // `null` is not "omitted": refused, naming the field.
        let mut null: CreateKey = parse_json(br#"{"name":"ci","scopes":null}"#, false).unwrap();
        let err = null.scopes().unwrap_err();
        assert!(
            matches!(err, KeyApiError::Auth(ref e) if e.status() == 422 && e.message().contains("scopes"))
        );

        let rotate: RotateKey = parse_json(b"  ", true).unwrap();
        assert_eq!(rotate.grace_seconds, 0);
        let rotate: RotateKey = parse_json(br#"{"grace_seconds":60}"#, true).unwrap();
        assert_eq!(rotate.grace_seconds, 60);
        assert!(parse_json::<RotateKey>(br#"{"grace_seconds":-1}"#, true).is_err());
    }
}
