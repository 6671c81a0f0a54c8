//! What a store keeps about a key: metadata and an argon2 hash, never the plaintext.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use super::KeyState;
use crate::{
    policy::Credits, policy::KeyRateLimit, token::SecretCheck, KeyId, Principal, RejectReason,
    ScopeSet,
};

/// How long before its end a key counts as "expiring" in
/// [`KeyRecord::metadata`]: 7 days.
pub const DEFAULT_EXPIRING_WITHIN: Duration = Duration::days(7);

/// A stored key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// Public id, also embedded in the token.
    pub id: KeyId,
    /// The user (and organisation) that owns the key.
    pub owner: Principal,
    /// A label chosen by the owner, e.g. "n8n automation".
    pub name: String,
    /// The scopes granted to the key.
    pub scopes: ScopeSet,
    /// When the key was issued.
    pub created_at: OffsetDateTime,
    /// When the key stops working on its own, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When the key was (or, during a rotation grace period, will be) revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Last successful use, updated at a bounded rate.
    pub last_used_at: Option<OffsetDateTime>,
    /// Prefix and last four characters, to recognise the key in a list.
    pub hint: String,
    /// Argon2id hash of the secret, as a PHC string.
    pub hash: String,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<KeyId>,
    /// 32 bits of a fast hash of id, prefix and secret: refuses almost every
    /// wrong secret without argon2. `None` for records made before it
    /// existed; filled on their next successful verification.
    pub check: Option<SecretCheck>,
    /// The key that created this one (through the key-management API or by
    /// rotation); `None` for keys made from the command line or by a
    /// session-backed owner.
    pub created_by: Option<KeyId>,
    /// The application's metadata, a JSON object (empty: none; at most
    /// [`MAX_META_BYTES`](crate::policy::MAX_META_BYTES) serialised).
    pub meta: Map<String, Value>,
    /// The application's own id for the key (at most
    /// [`MAX_EXTERNAL_ID_LEN`](crate::policy::MAX_EXTERNAL_ID_LEN) bytes).
    pub external_id: Option<String>,
    /// When the owner disabled the key; `None` while it is enabled. A
    /// disabled key is refused like an unknown one until enabled again.
    pub disabled_at: Option<OffsetDateTime>,
    /// Client networks the key may be used from (empty: any address).
    pub ip_allowlist: Vec<IpNet>,
    /// The client address of the last recorded use.
    pub last_used_ip: Option<IpAddr>,
    /// The key's own quota, if it has one.
    pub rate_limit: Option<KeyRateLimit>,
    /// Uses left, for a usage-limited key; `None`: unlimited.
    pub credits: Option<Credits>,
}

impl KeyRecord {
    /// An active key with only what every key has: no expiry, no use yet,
    /// no policy. Set the other fields on the result (what a store does
    /// when it reads a row back).
    pub fn new(
        id: KeyId,
        owner: Principal,
        name: impl Into<String>,
        scopes: ScopeSet,
        created_at: OffsetDateTime,
        hint: impl Into<String>,
        hash: impl Into<String>,
    ) -> Self {
        Self {
            id,
            owner,
            name: name.into(),
            scopes,
            created_at,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            hint: hint.into(),
            hash: hash.into(),
            replaced_by: None,
            check: None,
            created_by: None,
            meta: Map::new(),
            external_id: None,
            disabled_at: None,
            ip_allowlist: Vec::new(),
            last_used_ip: None,
            rate_limit: None,
            credits: None,
        }
    }

    /// `Ok` if the key may be used at `now`, else why not.
    pub fn check_active(&self, now: OffsetDateTime) -> Result<(), RejectReason> {
        if self.revoked_at.is_some_and(|t| t <= now) {
            return Err(RejectReason::Revoked);
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            return Err(RejectReason::Expired);
        }
        if self.disabled_at.is_some() {
            return Err(RejectReason::Disabled);
        }
        Ok(())
    }

    /// The key's state at `now`; `expiring_within` is the "expiring soon"
    /// window.
    pub fn state(&self, now: OffsetDateTime, expiring_within: Duration) -> KeyState {
        if self.revoked_at.is_some_and(|t| t <= now) {
            return if self.replaced_by.is_some() {
                KeyState::Replaced
            } else {
                KeyState::Revoked
            };
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            return KeyState::Expired;
        }
        if self.disabled_at.is_some() {
            return KeyState::Disabled;
        }
        if self.replaced_by.is_some() {
            return KeyState::Replaced;
        }
        match self.ends() {
            Some((t, _)) if t - now <= expiring_within => KeyState::Expiring,
            _ => KeyState::Active,
        }
    }

    /// The first moment the key stops working, and why.
    pub fn ends(&self) -> Option<(OffsetDateTime, RejectReason)> {
        match (self.revoked_at, self.expires_at) {
            (Some(r), Some(e)) if e < r => Some((e, RejectReason::Expired)),
            (Some(r), _) => Some((r, RejectReason::Revoked)),
            (None, Some(e)) => Some((e, RejectReason::Expired)),
            (None, None) => None,
        }
    }

    /// The prefix the key was minted with, read from its hint
    /// (`<prefix>…<last 4>`); `None` if the hint has another shape.
    pub fn token_prefix(&self) -> Option<&str> {
        self.hint.split_once('…').map(|(p, _)| p)
    }

    /// The public view: everything but the hash, with the state at the
    /// system clock's now and [`DEFAULT_EXPIRING_WITHIN`].
    pub fn metadata(&self) -> KeyMetadata {
        self.metadata_at(OffsetDateTime::now_utc(), DEFAULT_EXPIRING_WITHIN)
    }

    /// The public view, with the state at `now`.
    pub fn metadata_at(&self, now: OffsetDateTime, expiring_within: Duration) -> KeyMetadata {
        KeyMetadata {
            state: self.state(now, expiring_within),
            id: self.id,
            name: self.name.clone(),
            owner: self.owner.user_id().to_owned(),
            org: self.owner.org_id().map(str::to_owned),
            scopes: self.scopes.clone(),
            hint: self.hint.clone(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            replaced_by: self.replaced_by,
            created_by: self.created_by,
            meta: self.meta.clone(),
            external_id: self.external_id.clone(),
            disabled_at: self.disabled_at,
            ip_allowlist: self.ip_allowlist.clone(),
            last_used_ip: self.last_used_ip,
            rate_limit: self.rate_limit,
            credits: self.credits,
        }
    }
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("last_used_at", &self.last_used_at)
            .field("hint", &self.hint)
            .field("hash", &"[argon2id]")
            .field("replaced_by", &self.replaced_by)
            .field("check", &self.check.map(|_| "[set]"))
            .field("created_by", &self.created_by)
            .field("meta", &self.meta)
            .field("external_id", &self.external_id)
            .field("disabled_at", &self.disabled_at)
            .field("ip_allowlist", &self.ip_allowlist)
            .field("last_used_ip", &self.last_used_ip)
            .field("rate_limit", &self.rate_limit)
            .field("credits", &self.credits)
            .finish()
    }
}

/// A key's public metadata, as listed to its owner. Holds no secret or hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct KeyMetadata {
    /// Public id.
    pub id: KeyId,
    /// Where the key stands: `active`, `expiring`, `expired`, `revoked`,
    /// `disabled` or `replaced`.
    pub state: KeyState,
    /// Label.
    pub name: String,
    /// Owner's user id.
    pub owner: String,
    /// Owner's organisation, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Granted scopes.
    #[cfg_attr(feature = "utoipa", schema(value_type = Vec<String>))]
    pub scopes: ScopeSet,
    /// Prefix and last four characters.
    pub hint: String,
    /// Issued at.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last used at.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Expires at.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Revoked at.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Replacement key after a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<KeyId>,
    /// The key that created this one; `null` for keys made from the command
    /// line or by a session-backed owner.
    pub created_by: Option<KeyId>,
    /// The application's metadata (`{}`: none).
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub meta: Map<String, Value>,
    /// The application's own id for the key.
    pub external_id: Option<String>,
    /// When the key was disabled; `null` while enabled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// Client networks the key may be used from (`[]`: any).
    #[cfg_attr(feature = "utoipa", schema(value_type = Vec<String>))]
    pub ip_allowlist: Vec<IpNet>,
    /// The client address of the last recorded use.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub last_used_ip: Option<IpAddr>,
    /// The key's own quota.
    pub rate_limit: Option<KeyRateLimit>,
    /// Uses left, for a usage-limited key (`null`: unlimited).
    pub credits: Option<Credits>,
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn key() -> KeyRecord {
        KeyRecord::new(
            KeyId::random(),
            Principal::user("alice"),
            "ci",
            ScopeSet::empty(),
            NOW - Duration::days(30),
            "st_…abcd",
            "$argon2id$",
        )
    }

    #[test]
    fn states() {
        let week = DEFAULT_EXPIRING_WITHIN;
        let state = |r: KeyRecord| r.state(NOW, week);
        assert_eq!(state(key()), KeyState::Active);
        let expiring = KeyRecord {
            expires_at: Some(NOW + Duration::days(7)),
            ..key()
        };
        assert_eq!(state(expiring.clone()), KeyState::Expiring);
        assert_eq!(expiring.state(NOW, Duration::days(6)), KeyState::Active);
        assert_eq!(
            state(KeyRecord {
                expires_at: Some(NOW + Duration::days(8)),
                ..key()
            }),
            KeyState::Active
        );
        assert_eq!(
            state(KeyRecord {
                expires_at: Some(NOW),
                ..key()
            }),
            KeyState::Expired
        );
        assert_eq!(
            state(KeyRecord {
                revoked_at: Some(NOW - Duration::seconds(1)),
                disabled_at: Some(NOW - Duration::days(1)),
                ..key()
            }),
            KeyState::Revoked
        );
        let disabled = KeyRecord {
            disabled_at: Some(NOW - Duration::days(1)),
            ..key()
        };
        assert_eq!(state(disabled.clone()), KeyState::Disabled);
        assert_eq!(disabled.check_active(NOW), Err(RejectReason::Disabled));
        assert_eq!(disabled.metadata_at(NOW, week).state, KeyState::Disabled);
        // Rotated: replaced during the grace period and after it.
        let rotated = KeyRecord {
            revoked_at: Some(NOW + Duration::hours(1)),
            replaced_by: Some(KeyId::random()),
            ..key()
        };
        assert_eq!(state(rotated.clone()), KeyState::Replaced);
        assert_eq!(
            rotated.state(NOW + Duration::hours(2), week),
            KeyState::Replaced
        );
        // A revocation set in the future without a rotation is an end too.
        assert_eq!(
            state(KeyRecord {
                revoked_at: Some(NOW + Duration::days(1)),
                ..key()
            }),
            KeyState::Expiring
        );
        for s in [
            KeyState::Active,
            KeyState::Expiring,
            KeyState::Expired,
            KeyState::Revoked,
            KeyState::Disabled,
            KeyState::Replaced,
        ] {
            assert_eq!(KeyState::from_name(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
