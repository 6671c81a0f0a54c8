//! A key's state as shown in listings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a key stands at a given moment, as listings show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Works.
    Active,
    /// Works, but stops within the "expiring soon" window (its expiry, or
    /// the end of a revocation set in the future).
    Expiring,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
    /// Disabled by its owner; can be enabled again.
    Disabled,
    /// Replaced by rotation (during the grace period it still works).
    Replaced,
}

impl KeyState {
    /// The name listings show: `active`, `expiring`, `expired`, `revoked`,
    /// `disabled` or `replaced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
            Self::Replaced => "replaced",
        }
    }

    /// The state named by [`KeyState::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Self::Active,
            Self::Expiring,
            Self::Expired,
            Self::Revoked,
            Self::Disabled,
            Self::Replaced,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
