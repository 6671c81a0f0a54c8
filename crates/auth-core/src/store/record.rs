//! What a store keeps about a key: metadata and an argon2 hash, never the plaintext.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use crate::{KeyId, Principal, RejectReason, ScopeSet, SecretCheck};

/// A stored key.
#[derive(Clone, PartialEq, Eq)]
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
}

impl KeyRecord {
    /// `Ok` if the key may be used at `now`, else why not.
    pub fn check_active(&self, now: OffsetDateTime) -> Result<(), RejectReason> {
        if self.revoked_at.is_some_and(|t| t <= now) {
            return Err(RejectReason::Revoked);
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            return Err(RejectReason::Expired);
        }
        Ok(())
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

    /// The public view: everything but the hash.
    pub fn metadata(&self) -> KeyMetadata {
        KeyMetadata {
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
            .finish()
    }
}

/// A key's public metadata, as listed to its owner. Holds no secret or hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyMetadata {
    /// Public id.
    pub id: KeyId,
    /// Label.
    pub name: String,
    /// Owner's user id.
    pub owner: String,
    /// Owner's organisation, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Granted scopes.
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
}
