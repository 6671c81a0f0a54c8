//! Per-user JWT signing secrets in the SQLite file, next to the keys.
//!
//! Rows hold only what [`MasterKey::seal`](crate::jwt::MasterKey::seal)
//! made. A new secret is written in the same transaction as a
//! `user-secret:<user>` row of `key_changes`, the log other processes on the
//! file already poll for revocations: their caches drop that user's tokens
//! within a poll interval, and this process's at once.

use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::SqliteKeyStore;
use crate::jwt::{SealedSecret, UserSecretStore};
use crate::store::{
    change_payload,
    sql::{micros, store_error},
    ChangeFeed, KeyChange, KeyStore, StoreError,
};

/// Change-log rows older than this are pruned, as revocations do.
const CHANGE_LOG_RETENTION: time::Duration = time::Duration::days(1);

/// The secrets live in the key store's file; [`UserSecretStore::secret_changes`]
/// is the key store's own [`KeyStore::changes`] feed.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_core::{jwt::{JwtAuthority, MasterKey}, store::SqliteKeyStore};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Arc::new(SqliteKeyStore::open(dir.path().join("keys.db")).await.unwrap());
/// let jwt = JwtAuthority::new(store, MasterKey::generate(), "tools");
/// let token = jwt.token_for("user-1").await.unwrap();
/// assert_eq!(jwt.verify(&token).await.unwrap().effective_user(), "user-1");
/// # });
/// ```
impl SqliteKeyStore {
    /// Writes the user's secret (replacing one only with `replace`, at the
    /// next generation, counted by the statement itself) and logs the
    /// change for other processes, in one transaction. The generation
    /// written, or `None` when a secret existed and was kept.
    async fn write_secret(
        &self,
        user_id: &str,
        sealed: &[u8],
        replace: bool,
    ) -> Result<Option<i64>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let conflict = if replace {
            "DO UPDATE SET sealed = excluded.sealed, generation = user_secrets.generation + 1, \
             updated_at = excluded.updated_at"
        } else {
            "DO NOTHING"
        };
        // The first statement writes, so the transaction takes the write
        // lock up front (waiting up to the busy timeout).
        let mut tx = self.pool().begin().await.map_err(store_error)?;
        let written = sqlx::query(&format!(
            "INSERT INTO user_secrets (user_id, sealed, generation, updated_at) VALUES (?1, ?2, 1, ?3) \
             ON CONFLICT (user_id) {conflict} RETURNING generation"
        ))
        .bind(user_id)
        .bind(sealed)
        .bind(micros(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let Some(row) = written else {
            return Ok(None);
        };
        let generation: i64 = row.try_get("generation").map_err(store_error)?;
        sqlx::query("DELETE FROM key_changes WHERE at < ?")
            .bind(micros(now - CHANGE_LOG_RETENTION))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query("INSERT INTO key_changes (key_id, at) VALUES (?, ?)")
            .bind(change_payload::user_secret(user_id))
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        self.changes()
            .publish(&KeyChange::UserSecret(user_id.to_owned()));
        Ok(Some(generation))
    }
}

#[async_trait]
impl UserSecretStore for SqliteKeyStore {
    async fn get_secret(&self, user_id: &str) -> Result<Option<SealedSecret>, StoreError> {
        let row = sqlx::query("SELECT sealed, generation FROM user_secrets WHERE user_id = ?")
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
