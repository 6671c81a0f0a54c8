//! Listing every key with filters, a page at a time: the administrators' view.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{store::KeyRecord, KeyId};

/// Most keys one page holds.
pub const MAX_KEY_PAGE: usize = 500;

/// A key's state for filtering, decided at the query's `now`.
///
/// Exactly one applies, in this order: `revoked` (revocation time reached),
/// `expired`, `disabled`, else `active` (a key replaced by rotation counts as
/// active until its grace period ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    /// Works now.
    Active,
    /// Disabled, not revoked or expired.
    Disabled,
    /// Revoked (or rotated and past its grace period).
    Revoked,
    /// Expired, not revoked.
    Expired,
}

impl StateFilter {
    /// Whether `r` is in this state at `now`.
    pub fn matches(self, r: &KeyRecord, now: OffsetDateTime) -> bool {
        let revoked = r.revoked_at.is_some_and(|t| t <= now);
        let expired = !revoked && r.expires_at.is_some_and(|t| t <= now);
        let disabled = !revoked && !expired && r.disabled_at.is_some();
        match self {
            Self::Revoked => revoked,
            Self::Expired => expired,
            Self::Disabled => disabled,
            Self::Active => !revoked && !expired && !disabled,
        }
    }
}

/// Where a page starts: after the key created at `created_at` with `id`
/// (pages run newest first). Its text form is `<unix µs>.<key id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyCursor {
    /// The last listed key's creation time.
    pub created_at: OffsetDateTime,
    /// The last listed key.
    pub id: KeyId,
}

impl KeyCursor {
    /// The cursor after `r`.
    pub fn after(r: &KeyRecord) -> Self {
        Self {
            created_at: r.created_at,
            id: r.id,
        }
    }

    /// Whether `r` comes after this cursor in newest-first order.
    pub fn precedes(&self, r: &KeyRecord) -> bool {
        (r.created_at, r.id) < (self.created_at, self.id)
    }
}

impl fmt::Display for KeyCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.created_at.unix_timestamp_nanos() / 1_000;
        write!(f, "{micros}.{}", self.id)
    }
}

/// Not a cursor this API made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

impl FromStr for KeyCursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (micros, id) = s.split_once('.').ok_or(InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| InvalidCursor)?;
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .map_err(|_| InvalidCursor)?;
        Ok(Self {
            created_at,
            id: id.parse().map_err(|_| InvalidCursor)?,
        })
    }
}

/// Which keys to list, every filter optional (all keys by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyQuery {
    /// Only this user's keys.
    pub owner: Option<String>,
    /// Only keys of this organisation.
    pub org: Option<String>,
    /// Only keys in this state at `now`.
    pub state: Option<StateFilter>,
    /// Only keys not used since this time (never used ones included): the
    /// stale keys an administrator looks for.
    pub last_used_before: Option<OffsetDateTime>,
    /// Only keys made by this key.
    pub created_by: Option<KeyId>,
    /// Only keys after this cursor ([`KeyPage::next`]).
    pub after: Option<KeyCursor>,
    /// Page size, clamped to `1..=`[`MAX_KEY_PAGE`].
    pub limit: usize,
}

impl KeyQuery {
    /// Only this user's keys.
    pub fn owner(mut self, user_id: impl Into<String>) -> Self {
        self.owner = Some(user_id.into());
        self
    }

    /// Only keys of this organisation.
    pub fn org(mut self, org_id: impl Into<String>) -> Self {
        self.org = Some(org_id.into());
        self
    }

    /// Only keys in this state.
    pub fn state(mut self, state: StateFilter) -> Self {
        self.state = Some(state);
        self
    }

    /// Only keys not used since `at`.
    pub fn last_used_before(mut self, at: OffsetDateTime) -> Self {
        self.last_used_before = Some(at);
        self
    }

    /// Only keys made by this key.
    pub fn created_by(mut self, key: KeyId) -> Self {
        self.created_by = Some(key);
        self
    }

    /// Only keys after this cursor ([`KeyPage::next`]).
    pub fn after(mut self, cursor: Option<KeyCursor>) -> Self {
        self.after = cursor;
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The page size actually used.
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, MAX_KEY_PAGE)
    }

    /// Whether `r` passes every filter at `now` (the memory store's answer;
    /// the SQL stores say the same in `WHERE`).
    pub fn matches(&self, r: &KeyRecord, now: OffsetDateTime) -> bool {
        self.owner.as_deref().is_none_or(|o| r.owner.user_id() == o)
            && self
                .org
                .as_deref()
                .is_none_or(|o| r.owner.org_id() == Some(o))
            && self.state.is_none_or(|s| s.matches(r, now))
            && self
                .last_used_before
                .is_none_or(|t| r.last_used_at.is_none_or(|u| u < t))
            && self.created_by.is_none_or(|k| r.created_by == Some(k))
            && self.after.is_none_or(|c| c.precedes(r))
    }
}

/// One page of keys, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<KeyRecord>,
    /// Pass as [`KeyQuery::after`] for the next page; `None` at the end.
    pub next: Option<KeyCursor>,
}

impl KeyPage {
    /// A page from up to `limit + 1` keys read: the extra one only says
    /// that there is a next page.
    pub(crate) fn from_overfetch(mut keys: Vec<KeyRecord>, limit: usize) -> Self {
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(KeyCursor::after)
        } else {
            None
        };
        Self { keys, next }
    }
}
