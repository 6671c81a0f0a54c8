//! Partial edits of a key, and the uses recorded against it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{policy::Credits, policy::KeyRateLimit, store::KeyRecord, KeyId, ScopeSet};

/// What [`KeyStore::update`](crate::KeyStore::update) changes: every `None`
/// field is left as it is. For the optional fields, `Some(None)` clears.
///
/// The store applies what it is given; who may change what (scopes only
/// narrowed, expiry only earlier) is decided by the caller, e.g. the key
/// router. A caller that decided on a record it read sets
/// [`KeyUpdate::if_unchanged`]: the store then applies the update only if
/// the key is still as read (compare-and-set), else answers
/// [`StoreError::Conflict`](crate::store::StoreError::Conflict), so a decision
/// never lands on a key that a concurrent edit, rotation or revocation has
/// changed.
///
/// ```
/// use auth_core::store::KeyUpdate;
/// let disable = KeyUpdate::default().disabled_at(Some(time::OffsetDateTime::now_utc()));
/// let rename = KeyUpdate::default().name("deploy bot");
/// assert!(!disable.is_empty() && !rename.is_empty());
/// assert!(KeyUpdate::default().is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUpdate {
    /// A new label.
    pub name: Option<String>,
    /// New scopes.
    pub scopes: Option<ScopeSet>,
    /// A new expiry, or none.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// New metadata (an empty object clears it).
    pub meta: Option<Map<String, Value>>,
    /// A new external id, or none.
    pub external_id: Option<Option<String>>,
    /// `Some(Some(t))` disables the key as of `t`; `Some(None)` enables it.
    pub disabled_at: Option<Option<OffsetDateTime>>,
    /// A new allowlist (empty: any address).
    pub ip_allowlist: Option<Vec<IpNet>>,
    /// A new quota of the key's own, or none.
    pub rate_limit: Option<Option<KeyRateLimit>>,
    /// New credits, or none (unlimited).
    pub credits: Option<Option<Credits>>,
    /// The key as the caller read it: when set, the update applies only if
    /// the stored key is [`KeyUpdate::still_as_read`] (every store of this
    /// crate checks it atomically with the write; other stores must too).
    pub expected: Option<Box<KeyRecord>>,
}

impl KeyUpdate {
    /// Renames the key.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Replaces the scopes.
    pub fn scopes(mut self, scopes: ScopeSet) -> Self {
        self.scopes = Some(scopes);
        self
    }

    /// Sets the expiry (`None`: never).
    pub fn expires_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Replaces the metadata.
    pub fn meta(mut self, meta: Map<String, Value>) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Sets the external id (`None`: clears it).
    pub fn external_id(mut self, id: Option<String>) -> Self {
        self.external_id = Some(id);
        self
    }

    /// Disables the key as of `Some(t)`, or enables it with `None`.
    pub fn disabled_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.disabled_at = Some(at);
        self
    }

    /// Replaces the allowlist.
    pub fn ip_allowlist(mut self, nets: Vec<IpNet>) -> Self {
        self.ip_allowlist = Some(nets);
        self
    }

    /// Sets the key's own quota (`None`: removes it).
    pub fn rate_limit(mut self, limit: Option<KeyRateLimit>) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Sets the credits (`None`: unlimited).
    pub fn credits(mut self, credits: Option<Credits>) -> Self {
        self.credits = Some(credits);
        self
    }

    /// Applies only if the key is still as `read` (see
    /// [`KeyUpdate::still_as_read`]); otherwise the store answers
    /// [`StoreError::Conflict`](crate::store::StoreError::Conflict).
    pub fn if_unchanged(mut self, read: &KeyRecord) -> Self {
        self.expected = Some(Box::new(read.clone()));
        self
    }

    /// Whether `current`, the key as stored now, meets the update's
    /// precondition: none set, or every field an edit, a rotation or a
    /// revocation changes is as the caller read it (name, scopes, expiry,
    /// revocation, replacement, disabling, metadata, external id,
    /// allowlist, rate limit, credits' refill). What use changes (last
    /// use, credits spent) does not count.
    pub fn still_as_read(&self, current: &KeyRecord) -> bool {
        let Some(read) = self.expected.as_deref() else {
            return true;
        };
        let refill = |r: &KeyRecord| r.credits.map(|c| c.refill);
        read.name == current.name
            && read.scopes == current.scopes
            && read.expires_at == current.expires_at
            && read.revoked_at == current.revoked_at
            && read.replaced_by == current.replaced_by
            && read.disabled_at == current.disabled_at
            && read.meta == current.meta
            && read.external_id == current.external_id
            && read.ip_allowlist == current.ip_allowlist
            && read.rate_limit == current.rate_limit
            && read.credits.is_some() == current.credits.is_some()
            && refill(read) == refill(current)
    }

    /// Whether it changes nothing (a precondition alone changes nothing).
    pub fn is_empty(&self) -> bool {
        Self {
            expected: None,
            ..self.clone()
        } == Self::default()
    }

    /// `record` with the update applied (what every store stores).
    pub fn apply_to(&self, record: &mut KeyRecord) {
        if let Some(v) = &self.name {
            record.name.clone_from(v);
        }
        if let Some(v) = &self.scopes {
            record.scopes = v.clone();
        }
        if let Some(v) = self.expires_at {
            record.expires_at = v;
        }
        if let Some(v) = &self.meta {
            record.meta.clone_from(v);
        }
        if let Some(v) = &self.external_id {
            record.external_id.clone_from(v);
        }
        if let Some(v) = self.disabled_at {
            record.disabled_at = v;
        }
        if let Some(v) = &self.ip_allowlist {
            record.ip_allowlist.clone_from(v);
        }
        if let Some(v) = self.rate_limit {
            record.rate_limit = v;
        }
        if let Some(v) = self.credits {
            record.credits = v;
        }
    }
}

/// One successful use of a key, for [`KeyStore::record_use`](crate::KeyStore::record_use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct KeyUse {
    /// The key.
    pub id: KeyId,
    /// When.
    pub at: OffsetDateTime,
    /// The client's address, if known.
    pub ip: Option<IpAddr>,
}

impl KeyUse {
    /// A use of `id` at `at` from an unknown address.
    pub fn new(id: KeyId, at: OffsetDateTime) -> Self {
        Self { id, at, ip: None }
    }

    /// The same use, from `ip`.
    pub fn from_ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }
}

/// The later of two uses of one key; the address is kept from the earlier
/// one when the later has none.
pub(crate) fn later_use(a: KeyUse, b: KeyUse) -> KeyUse {
    let (earlier, later) = if b.at >= a.at { (a, b) } else { (b, a) };
    KeyUse {
        ip: later.ip.or(earlier.ip),
        ..later
    }
}

/// The conflict a store answers when [`KeyUpdate::still_as_read`] fails.
pub(crate) fn changed_since_read() -> crate::store::StoreError {
    crate::store::StoreError::Conflict(
        "the key was changed (edited, rotated or revoked) since it was read".into(),
    )
}
