//! How a change is written where other instances read it: a PostgreSQL
//! `NOTIFY` payload or a row of SQLite's `key_changes` log.
//!
//! A key id (11 base62 characters) stands for [`KeyChange::Revoked`];
//! `updated:<key id>` for [`KeyChange::Updated`] (an edit, e.g. a disabled
//! key); a user's new signing secret is `user-secret:<user id>` (a key id
//! never contains `:`). Anything else drops every cached entry rather than risk
//! keeping a stale one.

use super::KeyChange;
use crate::KeyId;

const USER_SECRET: &str = "user-secret:";
const UPDATED: &str = "updated:";

/// The payload announcing that key `id` was edited.
pub(crate) fn updated(id: KeyId) -> String {
    format!("{UPDATED}{id}")
}

/// The payload announcing that `user_id`'s signing secret changed.
#[cfg(feature = "jwt")]
pub(crate) fn user_secret(user_id: &str) -> String {
    format!("{USER_SECRET}{user_id}")
}

/// The change a payload announces.
pub(crate) fn decode(payload: &str) -> KeyChange {
    if let Some(user) = payload.strip_prefix(USER_SECRET) {
        return KeyChange::UserSecret(user.to_owned());
    }
    if let Some(id) = payload.strip_prefix(UPDATED) {
        return id.parse().map_or(KeyChange::All, KeyChange::Updated);
    }
    match payload.parse() {
        Ok(id) => KeyChange::Revoked(id),
        Err(_) => KeyChange::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_falls_back_to_all() {
        let id = KeyId::random();
        assert_eq!(decode(&id.to_string()), KeyChange::Revoked(id));
        assert_eq!(decode(&updated(id)), KeyChange::Updated(id));
        assert_eq!(decode("updated:not-a-key"), KeyChange::All);
        assert_eq!(
            decode("user-secret:u:1"),
            KeyChange::UserSecret("u:1".into())
        );
        #[cfg(feature = "jwt")]
        assert_eq!(
            decode(&user_secret("alice")),
            KeyChange::UserSecret("alice".into())
        );
        assert_eq!(decode(""), KeyChange::All);
        assert_eq!(decode("something else"), KeyChange::All);
    }
}
