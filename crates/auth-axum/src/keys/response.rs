//! Response bodies of the key-management routes. None holds a hash; only a
//! freshly issued key's body holds its token.

use auth_core::{IssuedKey, KeyId, KeyMetadata};
use serde::Serialize;
use time::OffsetDateTime;

/// A new key: its metadata and the token, shown this once.
#[derive(Serialize)]
pub(crate) struct CreatedKey<'a> {
    #[serde(flatten)]
    pub(crate) key: KeyMetadata,
    pub(crate) token: &'a str,
    /// For a rotation: the key it replaces, and when that one stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rotated_from: Option<KeyId>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub(crate) previous_key_ends_at: Option<OffsetDateTime>,
}

impl<'a> CreatedKey<'a> {
    pub(crate) fn new(issued: &'a IssuedKey) -> Self {
        Self {
            key: issued.record.metadata(),
            token: issued.token.expose_secret(),
            rotated_from: None,
            previous_key_ends_at: None,
        }
    }
}

/// `GET /`: the owner's keys, newest first.
#[derive(Serialize)]
pub(crate) struct KeyList {
    pub(crate) keys: Vec<KeyMetadata>,
}
