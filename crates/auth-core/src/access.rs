//! Per-resource access levels: Owner, Admin, Editor, Viewer.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A principal's level on one resource. A lower value means more power.
///
/// Serialized as its number (0-3); deserialized from the number or the name.
///
/// ```
/// use auth_core::AccessLevel;
/// assert!(AccessLevel::Admin.allows(AccessLevel::Editor));
/// assert!(!AccessLevel::Viewer.allows(AccessLevel::Editor));
/// assert_eq!(serde_json::to_string(&AccessLevel::Editor).unwrap(), "2");
/// assert_eq!(serde_json::from_str::<AccessLevel>("\"viewer\"").unwrap(), AccessLevel::Viewer);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum AccessLevel {
    /// Full control; the owner's grant cannot be revoked.
    Owner = 0,
    /// Manage grants; edit and delete.
    Admin = 1,
    /// Edit content; no grant management.
    Editor = 2,
    /// Read only.
    Viewer = 3,
}

impl AccessLevel {
    /// Whether holding `self` is enough for an action that needs `required`.
    pub fn allows(self, required: AccessLevel) -> bool {
        (self as u8) <= (required as u8)
    }

    /// The level's number.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// The level of a number, if it is 0-3.
    pub fn from_value(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::Owner),
            1 => Some(Self::Admin),
            2 => Some(Self::Editor),
            3 => Some(Self::Viewer),
            _ => None,
        }
    }

    /// The level's lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Editor => "editor",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Not an access level name or number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown access level: expected 0-3 or owner, admin, editor, viewer")]
pub struct InvalidAccessLevel;

impl FromStr for AccessLevel {
    type Err = InvalidAccessLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<u64>() {
            return Self::from_value(n).ok_or(InvalidAccessLevel);
        }
        [Self::Owner, Self::Admin, Self::Editor, Self::Viewer]
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
            .ok_or(InvalidAccessLevel)
    }
}

impl Serialize for AccessLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.value())
    }
}

impl<'de> Deserialize<'de> for AccessLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AccessLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an access level: 0-3 or owner, admin, editor, viewer")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AccessLevel, E> {
                AccessLevel::from_value(v).ok_or_else(|| E::custom(InvalidAccessLevel))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AccessLevel, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(AccessLevel::from_value)
                    .ok_or_else(|| E::custom(InvalidAccessLevel))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AccessLevel, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_matches_the_seed() {
        use AccessLevel::*;
        assert!(Owner.allows(Viewer) && Owner.allows(Owner));
        assert!(Editor.allows(Editor) && Editor.allows(Viewer) && !Editor.allows(Admin));
        assert!(!Viewer.allows(Editor));
        assert_eq!(
            [Owner, Admin, Editor, Viewer].map(AccessLevel::value),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn serde_accepts_numbers_and_names() {
        assert_eq!(
            serde_json::from_str::<AccessLevel>("1").unwrap(),
            AccessLevel::Admin
        );
        assert_eq!(
            serde_json::from_str::<AccessLevel>("\"Owner\"").unwrap(),
            AccessLevel::Owner
        );
        assert!(serde_json::from_str::<AccessLevel>("4").is_err());
        assert!(serde_json::from_str::<AccessLevel>("-1").is_err());
        assert!(serde_json::from_str::<AccessLevel>("\"root\"").is_err());
    }
}
