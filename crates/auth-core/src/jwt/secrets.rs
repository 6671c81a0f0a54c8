//! Where per-user signing secrets live: sealed by the master key, never plain.

use async_trait::async_trait;
use dashmap::DashMap;

use crate::{store::ChangeFeed, store::KeyChange, store::StoreError};

/// A user's sealed signing secret and its generation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealedSecret {
    /// Nonce, ciphertext and tag from [`MasterKey::seal`](super::MasterKey::seal).
    pub sealed: Vec<u8>,
    /// Bumped on every regeneration.
    pub generation: i64,
}

impl SealedSecret {
    /// A sealed secret of the given generation (what a store reads back).
    pub fn new(sealed: Vec<u8>, generation: i64) -> Self {
        Self { sealed, generation }
    }
}

/// Stores per-user JWT signing secrets. Implemented by [`MemoryUserSecrets`]
/// and, with their features, by `SqliteKeyStore` and `PostgresKeyStore`
/// (same database and change feed as the keys).
///
/// A write publishes [`KeyChange::UserSecret`] on [`UserSecretStore::secret_changes`]
/// before returning (and, for shared stores, to other instances), so
/// verifiers drop cached tokens of that user at once.
///
/// The store numbers generations itself, in the write: a connection holds
/// the generation its token was verified with and ends when the stored one
/// differs, so two replacements must never share a number (two concurrent
/// regenerations that both read `n` and both wrote `n + 1` would leave open
/// a connection whose secret is gone).
#[async_trait]
pub trait UserSecretStore: std::fmt::Debug + Send + Sync + 'static {
    /// The user's sealed secret, if one was made.
    async fn get_secret(&self, user_id: &str) -> Result<Option<SealedSecret>, StoreError>;
    /// Replaces the user's secret with `sealed` (or stores their first),
    /// giving it the next generation in the same atomic write: one more
    /// than the stored one, 1 if none. Returns that generation.
    async fn replace_secret(&self, user_id: &str, sealed: &[u8]) -> Result<i64, StoreError>;
    /// Stores the user's first secret (generation 1) unless one exists,
    /// atomically: `Ok(false)` (and nothing written) if another caller got
    /// there first. Publishes [`KeyChange::UserSecret`] like
    /// `replace_secret` when it writes, so verifiers that remembered the
    /// user as unknown forget it.
    async fn insert_secret_if_absent(
        &self,
        user_id: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError>;
    /// The change feed shared with key revocations.
    fn secret_changes(&self) -> &ChangeFeed;
}

/// Sealed secrets in memory. Lost on restart.
#[derive(Debug, Default)]
pub struct MemoryUserSecrets {
    secrets: DashMap<String, SealedSecret>,
    changes: ChangeFeed,
}

impl MemoryUserSecrets {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl UserSecretStore for MemoryUserSecrets {
    async fn get_secret(&self, user_id: &str) -> Result<Option<SealedSecret>, StoreError> {
        Ok(self.secrets.get(user_id).map(|s| s.clone()))
    }

    async fn replace_secret(&self, user_id: &str, sealed: &[u8]) -> Result<i64, StoreError> {
        // The entry's lock makes read and write one step.
        let generation = {
            let mut entry = self
                .secrets
                .entry(user_id.to_owned())
                .or_insert_with(|| SealedSecret::new(Vec::new(), 0));
            entry.sealed = sealed.to_vec();
            entry.generation += 1;
            entry.generation
        };
        self.changes
            .publish(&KeyChange::UserSecret(user_id.to_owned()));
        Ok(generation)
    }

    async fn insert_secret_if_absent(
        &self,
        user_id: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        use dashmap::mapref::entry::Entry;
        match self.secrets.entry(user_id.to_owned()) {
            Entry::Occupied(_) => return Ok(false),
            Entry::Vacant(v) => {
                v.insert(SealedSecret::new(sealed.to_vec(), 1));
            }
        }
        self.changes
            .publish(&KeyChange::UserSecret(user_id.to_owned()));
        Ok(true)
    }

    fn secret_changes(&self) -> &ChangeFeed {
        &self.changes
    }
}
