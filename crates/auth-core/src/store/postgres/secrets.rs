//! Per-user JWT signing secrets in PostgreSQL, next to the keys.
//!
//! Rows hold only what [`MasterKey::seal`](crate::jwt::MasterKey::seal)
//! made. A new secret is written by one statement that also sends
//! `user-secret:<user>` on the key-change channel, so the notification goes
//! out exactly when it commits: every instance listening on the database
//! drops that user's cached tokens, typically within milliseconds, and this
//! one at once.

use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::listener::CHANNEL;
use super::PostgresKeyStore;
use crate::jwt::{SealedSecret, UserSecretStore};
use crate::store::{sql::store_error, ChangeFeed, KeyChange, KeyStore, StoreError};

/// The secrets live in the key store's database; [`UserSecretStore::secret_changes`]
/// is the key store's own [`KeyStore::changes`] feed, fed by `LISTEN`.
///
/// ```no_run
/// # async fn demo() -> Result<(), auth_core::store::StoreError> {
/// use std::sync::Arc;
/// use auth_core::{jwt::{JwtAuthority, MasterKey}, store::PostgresKeyStore};
/// let store = Arc::new(PostgresKeyStore::connect("postgres://app@db/keys").await?);
/// let master = MasterKey::from_base64(&std::env::var("KEYGATE_MASTER_KEY").unwrap()).unwrap();
/// let jwt = JwtAuthority::new(store, master, "tools");
/// # let _ = jwt; Ok(()) }
/// ```
impl PostgresKeyStore {
    /// Writes the user's secret (replacing one only with `replace`, at the
    /// next generation, counted by the statement itself) and notifies, in
    /// one statement: the notification goes out at commit. The generation
    /// written, or `None` when a secret existed and was kept.
    async fn write_secret(
        &self,
        user_id: &str,
        sealed: &[u8],
        replace: bool,
    ) -> Result<Option<i64>, StoreError> {
        let conflict = if replace {
            "DO UPDATE SET sealed = EXCLUDED.sealed, generation = user_secrets.generation + 1, \
             updated_at = EXCLUDED.updated_at"
        } else {
            "DO NOTHING"
        };
        let written = sqlx::query(&format!(
            "WITH u AS ( \
                INSERT INTO user_secrets (user_id, sealed, generation, updated_at) \
                VALUES ($1, $2, 1, $3) \
                ON CONFLICT (user_id) {conflict} \
                RETURNING generation) \
             SELECT u.generation, pg_notify($4, $5)::text AS notified FROM u"
        ))
        .bind(user_id)
        .bind(sealed)
        .bind(OffsetDateTime::now_utc())
        .bind(CHANNEL)
        .bind(crate::store::change_payload::user_secret(user_id))
        .fetch_optional(self.pool())
        .await
        .map_err(store_error)?;
        let Some(row) = written else {
            return Ok(None);
        };
        let generation: i64 = row.try_get("generation").map_err(store_error)?;
        self.changes()
            .publish(&KeyChange::UserSecret(user_id.to_owned()));
        Ok(Some(generation))
    }
}

#[async_trait]
impl UserSecretStore for PostgresKeyStore {
    async fn get_secret(&self, user_id: &str) -> Result<Option<SealedSecret>, StoreError> {
        let row = sqlx::query("SELECT sealed, generation FROM user_secrets WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await
            .map_err(store_error)?;
        row.map(|r| {
            Ok(SealedSecret {
                sealed: r.try_get("sealed").map_err(store_error)?,
                generation: r.try_get("generation").map_err(store_error)?,
            })
        })
        .transpose()
    }

    async fn replace_secret(&self, user_id: &str, sealed: &[u8]) -> Result<i64, StoreError> {
        let written = self.write_secret(user_id, sealed, true).await?;
        written.ok_or_else(|| StoreError::Conflict("user secret not replaced".into()))
    }

    async fn insert_secret_if_absent(
        &self,
        user_id: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.write_secret(user_id, sealed, false).await?.is_some())
    }

    fn secret_changes(&self) -> &ChangeFeed {
        self.changes()
    }
}
