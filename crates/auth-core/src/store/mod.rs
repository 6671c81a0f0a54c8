//! Key stores: where key records live.
//!
//! [`KeyStore`] is implemented by [`MemoryKeyStore`], and behind cargo
//! features by `SqliteKeyStore` (`sqlite`: one file, the default for demos)
//! and `PostgresKeyStore` (`postgres`: several instances, one database).
//! [`open_store`] picks one from a `--db` string. Every operation is
//! fallible and may do I/O. The durable schema is in `docs/SCHEMA.md`.
//! With the `jwt` feature, the SQLite and PostgreSQL stores also keep sealed
//! per-user signing secrets ([`UserSecretStore`](crate::jwt::UserSecretStore)),
//! announced on the same change feed as revocations.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod audit_policy;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod audit_writer;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod change_payload;
mod changes;
mod issuing_prefix;
mod key_query;
mod key_state;
// Re-exported at the crate root.
pub(crate) mod key_store;
mod key_update;
pub(crate) mod memory;
mod open;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
mod retention;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use audit_writer::AuditBatching;
pub use changes::{ChangeFeed, ChangeListener, KeyChange};
pub use issuing_prefix::IssuingPrefix;
pub use key_query::{InvalidCursor, KeyCursor, KeyPage, KeyQuery, StateFilter, MAX_KEY_PAGE};
pub use key_state::KeyState;
use key_store::KeyStore;
pub(crate) use key_update::later_use;
pub use key_update::{KeyUpdate, KeyUse};
use memory::MemoryKeyStore;
pub use open::{open_store, OpenedStore};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::audit::PostgresAuditLog;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresKeyStore, PostgresOptions};
pub use record::{KeyMetadata, KeyRecord, DEFAULT_EXPIRING_WITHIN};
pub use retention::spawn_audit_retention;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::audit::SqliteAuditLog;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteKeyStore;

/// A store operation failed.
///
/// [`Unavailable`](StoreError::Unavailable) and [`Corrupt`](StoreError::Corrupt)
/// hold the backend's error: [`std::error::Error::source`] returns it (a
/// `sqlx::Error`, an `std::io::Error`), and the message repeats its text so a
/// log line with the error alone still says what went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or failed; callers fail closed (503).
    #[error("key store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No such key.
    #[error("key not found")]
    NotFound,
    /// The operation lost a race or the key is no longer in a state that allows it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored row cannot be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// [`StoreError::Unavailable`] from a backend error, or from a message
    /// (`StoreError::unavailable("connection refused")`).
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(source.into())
    }

    /// [`StoreError::Corrupt`] from a decoding error, or from a message.
    pub fn corrupt(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Corrupt(source.into())
    }
}
