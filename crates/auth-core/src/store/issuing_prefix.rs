//! The token prefixes a store's services issue with, recorded in the store
//! so that other tools on the same database (the admin command line) issue
//! keys those services accept, instead of guessing a prefix.

use time::OffsetDateTime;

/// A token prefix a service issues with, as recorded in its store by
/// [`KeyStore::record_issuing_prefix`](super::KeyStore::record_issuing_prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuingPrefix {
    /// The prefix (`st_`, `sk_live_`), as [`TokenPrefix`](crate::TokenPrefix) accepts it.
    pub prefix: String,
    /// The latest time a service recorded it.
    pub recorded_at: OffsetDateTime,
}

impl IssuingPrefix {
    /// `prefix`, recorded at `recorded_at`.
    pub fn new(prefix: impl Into<String>, recorded_at: OffsetDateTime) -> Self {
        Self {
            prefix: prefix.into(),
            recorded_at,
        }
    }
}

/// SQLite: one row per prefix, the time in unix microseconds.
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    use sqlx::{Row, SqlitePool};
    use time::OffsetDateTime;

    use super::IssuingPrefix;
    use crate::store::{
        sql::{from_micros, micros, store_error},
        StoreError,
    };

    pub(crate) async fn record(
        pool: &SqlitePool,
        prefix: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO issuing_prefixes (prefix, recorded_at) VALUES (?, ?) \
             ON CONFLICT (prefix) DO UPDATE SET recorded_at = MAX(recorded_at, excluded.recorded_at)",
        )
        .bind(prefix)
        .bind(micros(at))
        .execute(pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn list(pool: &SqlitePool) -> Result<Vec<IssuingPrefix>, StoreError> {
        sqlx::query(
            "SELECT prefix, recorded_at FROM issuing_prefixes ORDER BY recorded_at DESC, prefix",
        )
        .fetch_all(pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(IssuingPrefix::new(
                row.try_get::<String, _>("prefix").map_err(store_error)?,
                from_micros(row.try_get("recorded_at").map_err(store_error)?)?,
            ))
        })
        .collect()
    }
}

/// PostgreSQL: one row per prefix.
#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use sqlx::{PgPool, Row};
    use time::OffsetDateTime;

    use super::IssuingPrefix;
    use crate::store::{sql::store_error, StoreError};

    pub(crate) async fn record(
        pool: &PgPool,
        prefix: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO issuing_prefixes (prefix, recorded_at) VALUES ($1, $2) \
             ON CONFLICT (prefix) DO UPDATE \
             SET recorded_at = GREATEST(issuing_prefixes.recorded_at, excluded.recorded_at)",
        )
        .bind(prefix)
        .bind(at)
        .execute(pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn list(pool: &PgPool) -> Result<Vec<IssuingPrefix>, StoreError> {
        sqlx::query(
            "SELECT prefix, recorded_at FROM issuing_prefixes ORDER BY recorded_at DESC, prefix",
        )
        .fetch_all(pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(IssuingPrefix::new(
                row.try_get::<String, _>("prefix").map_err(store_error)?,
                row.try_get::<OffsetDateTime, _>("recorded_at")
                    .map_err(store_error)?,
            ))
        })
        .collect()
    }
}
