//! `PATCH /{id}`: renaming, narrowing, shortening, disabling and enabling
//! a key, and editing its metadata and address allowlist.
//! (`external_id` is the application's: this route refuses it.)

use auth_core::{store::KeyRecord, store::KeyUpdate, AuthError, ErrorCode, RejectReason, ScopeSet};
use serde::{de::IgnoredAny, Deserialize, Deserializer};
use serde_json::{Map, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    caller::{exceeds, widening},
    error::KeyApiError,
    manager::KeyManager,
    owner::KeyOwner,
    policy_input,
    request::{refuse_application_fields, Field},
};

/// `PATCH /{id}`: any of these; absent fields are left as they are. `null`
/// is refused (422 `null_not_allowed`) except where it says what it does
/// below; `external_id` is refused whatever its value.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct EditKey {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    name: Field<String>,
    /// Only narrows.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    scopes: Field<Vec<String>>,
    /// RFC 3339; only moves earlier, and stays in the future. `null` asks
    /// for no expiry (refused when the key has one).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    expires_at: Option<Option<String>>,
    /// `{}` or `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    meta: Option<Option<Map<String, Value>>>,
    // Only so that it is refused by name: the application's to set.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    external_id: Field<IgnoredAny>,
    /// `false` disables; `true` enables again (not by a key-backed caller).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = bool))]
    enabled: Field<bool>,
    /// `[]` allows any address again.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    ip_allowlist: Field<Vec<String>>,
}

/// Tells `"field": null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl EditKey {
    /// 422 for a field this router does not let a caller set
    /// (`external_id`) and for `null` where it means nothing: run first, so
    /// that nothing given is silently ignored.
    pub(crate) fn check_fields(&self) -> Result<(), KeyApiError> {
        refuse_application_fields(&self.external_id)?;
        for (name, null) in [
            ("name", self.name == Field::Null),
            ("scopes", self.scopes == Field::Null),
            ("enabled", self.enabled == Field::Null),
            ("ip_allowlist", self.ip_allowlist == Field::Null),
        ] {
            if null {
                Field::<()>::Null.given(name)?;
            }
        }
        Ok(())
    }

    /// The store update for `record`, with every rule checked: scopes only
    /// narrowed (never beyond the key's nor the caller's), expiry only
    /// earlier and in the future, metadata and allowlist bounded.
    pub(crate) fn checked<O: KeyOwner>(
        self,
        m: &KeyManager,
        owner: &O,
        record: &KeyRecord,
        now: OffsetDateTime,
    ) -> Result<KeyUpdate, KeyApiError> {
        self.check_fields()?;
        let mut update = KeyUpdate::default();
        if let Some(name) = self.name.given("name")? {
            auth_core::policy::validate_name(&name)?;
            update.name = Some(name);
        }
        if let Some(asked) = self.scopes.given("scopes")? {
            let scopes = m.checked_scopes(owner, &asked)?;
            if let Some(wider) = scopes.iter().find(|s| !record.scopes.has(s)) {
                return Err(KeyApiError::field(
                    "scopes_not_narrowed",
                    format!(
                        "An edit can only remove scopes: the key does not hold '{wider}' \
                         (create a new key instead)"
                    ),
                ));
            }
            update.scopes = Some(scopes);
        }
        if let Some(expiry) = self.expires_at {
            update.expires_at = Some(Some(earlier_expiry(expiry, record, now)?));
        }
        if let Some(meta) = self.meta {
            update.meta = Some(policy_input::meta(meta.unwrap_or_default())?);
        }
        if let Some(list) = self.ip_allowlist.given("ip_allowlist")? {
            update.ip_allowlist = Some(policy_input::ip_allowlist(list)?);
        }
        match self.enabled.given("enabled")? {
            Some(true) if record.disabled_at.is_some() => update.disabled_at = Some(None),
            Some(false) if record.disabled_at.is_none() => update.disabled_at = Some(Some(now)),
            _ => {}
        }
        Ok(update)
    }

    /// For a key-backed caller: 403 `policy_exceeds_caller` unless a new
    /// `ip_allowlist` only narrows the key's (every net inside one it has;
    /// never emptied when it has one), and 403 `forbidden` for re-enabling
    /// a disabled key. A session may do both.
    pub(crate) fn check_tightening(&self, record: &KeyRecord) -> Result<(), KeyApiError> {
        // Parsed here only when it matters; `checked` refuses a bad list.
        let limited = !record.ip_allowlist.is_empty();
        if let (Field::Value(list), true) = (&self.ip_allowlist, limited) {
            let nets = policy_input::ip_allowlist(list.clone())?;
            if let Some(wider) = widening(&record.ip_allowlist, &nets) {
                let what = match wider {
                    Some(net) => format!("{net} is outside the key's current list"),
                    None => "an empty list would allow any address".to_owned(),
                };
                return Err(exceeds(
                    "ip_allowlist",
                    format!(
                        "An API key may only narrow a key's ip_allowlist ({what}); widen it \
                         from a signed-in session"
                    ),
                ));
            }
        }
        if self.enabled == Field::Value(true) && record.disabled_at.is_some() {
            return Err(KeyApiError::Auth(
                AuthError::new(ErrorCode::Forbidden, RejectReason::InsufficientAccess).with_message(
                    "An API key cannot re-enable a disabled key: enable it from a signed-in session",
                ),
            ));
        }
        Ok(())
    }

    /// Whether the body names no field at all.
    pub(crate) fn is_empty(&self) -> bool {
        !self.name.is_given()
            && !self.scopes.is_given()
            && self.expires_at.is_none()
            && self.meta.is_none()
            && !self.external_id.is_given()
            && !self.enabled.is_given()
            && !self.ip_allowlist.is_given()
    }
}

/// A new expiry: in the future, and no later than the key's current one.
fn earlier_expiry(
    asked: Option<String>,
    record: &KeyRecord,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, KeyApiError> {
    let not_later = |current: OffsetDateTime| {
        let current = current.format(&Rfc3339).unwrap_or_default();
        KeyApiError::field(
            "expiry_not_shortened",
            format!("An edit can only bring the expiry forward: the key expires at {current}"),
        )
    };
    let Some(asked) = asked else {
        return Err(match record.expires_at {
            Some(current) => not_later(current),
            None => KeyApiError::field(
                "expiry_not_shortened",
                "The key never expires; give expires_at a date-time to make it expire",
            ),
        });
    };
    let at = OffsetDateTime::parse(&asked, &Rfc3339).map_err(|_| {
        KeyApiError::invalid(
            "expires_at must be an RFC 3339 date-time such as 2030-01-01T00:00:00Z",
        )
    })?;
    // Stores keep microseconds: compare what will be stored.
    let at = at
        .replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at);
    if at <= now {
        return Err(KeyApiError::invalid("expires_at must be in the future"));
    }
    match record.expires_at {
        Some(current) if at > current => Err(not_later(current)),
        _ => Ok(at),
    }
}

/// 409 unless the key may still be edited: not revoked, expired or replaced.
/// (A disabled key may: enabling it is an edit.)
pub(crate) fn editable(record: &KeyRecord, now: OffsetDateTime) -> Result<(), KeyApiError> {
    let ended =
        record.revoked_at.is_some_and(|t| t <= now) || record.expires_at.is_some_and(|t| t <= now);
    if ended || record.replaced_by.is_some() {
        return Err(KeyApiError::Conflict(
            "A revoked, expired or replaced key cannot be edited".into(),
        ));
    }
    Ok(())
}

/// 403 when a key-backed caller edits a key holding a scope it may not
/// grant itself (as for rotation): a narrow key cannot re-enable, rename or
/// otherwise steer a broader one.
pub(crate) fn within_ceiling(record: &KeyRecord, ceiling: &ScopeSet) -> Result<(), KeyApiError> {
    match record.scopes.iter().find(|s| !ceiling.has(s)) {
        Some(beyond) => Err(KeyApiError::Auth(
            AuthError::new(ErrorCode::Forbidden, RejectReason::InsufficientAccess).with_message(
                format!(
                    "You may not edit a key holding the scope '{beyond}', which you may not grant"
                ),
            ),
        )),
        None => Ok(()),
    }
}

/// What `new`, the replacement of `old` by a rotation that just committed,
/// lacks of `old` as it stands now: the edits that reached `old` after the
/// rotation read it. Only fields an edit changes and a replacement copies
/// (an edit disabling the key makes the rotation itself fail). `latest` is
/// the rotation's bound on the replacement's expiry.
pub(crate) fn edits_during_rotation(
    old: &KeyRecord,
    new: &KeyRecord,
    latest: Option<OffsetDateTime>,
) -> KeyUpdate {
    let mut missed = KeyUpdate::default();
    if old.name != new.name {
        missed.name = Some(old.name.clone());
    }
    if old.scopes != new.scopes {
        missed.scopes = Some(old.scopes.clone());
    }
    let expires_at = match (old.expires_at, latest) {
        (Some(e), Some(l)) => Some(e.min(l)),
        (e, l) => e.or(l),
    };
    if expires_at != new.expires_at {
        missed.expires_at = Some(expires_at);
    }
    if old.meta != new.meta {
        missed.meta = Some(old.meta.clone());
    }
    if old.external_id != new.external_id {
        missed.external_id = Some(old.external_id.clone());
    }
    if old.ip_allowlist != new.ip_allowlist {
        missed.ip_allowlist = Some(old.ip_allowlist.clone());
    }
    missed
}
