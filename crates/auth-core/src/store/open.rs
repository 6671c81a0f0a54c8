//! Picking a backend from one `--db` string.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use super::{KeyStore, MemoryKeyStore, StoreError};
use crate::{audit::AuditLog, audit::MemoryAuditLog};

/// A key store and the audit log that goes with it.
pub struct OpenedStore {
    /// The keys.
    pub keys: Arc<dyn KeyStore>,
    /// The audit log, in the same database.
    pub audit: Arc<dyn AuditLog>,
    backend: &'static str,
    dropped: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl OpenedStore {
    /// `memory`, `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Audit events dropped so far (queue full or write failed); always 0
    /// for the in-memory log, which never drops on overload.
    pub fn dropped_audit_events(&self) -> u64 {
        self.dropped
            .as_ref()
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }
}

/// Opens the store named by `location`:
///
/// - `postgres://…` or `postgresql://…`: [`PostgresKeyStore`](crate::store::PostgresKeyStore)
///   (feature `postgres`);
/// - `memory:`: [`MemoryKeyStore`] and [`MemoryAuditLog`], lost on exit;
/// - anything else, optionally prefixed `sqlite:`: a SQLite file path
///   (feature `sqlite`), created on first use.
///
/// Must be called from within a Tokio runtime.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = auth_core::store::open_store("memory:").await.unwrap();
/// assert_eq!(store.backend(), "memory");
/// # });
/// ```
pub async fn open_store(location: &str) -> Result<OpenedStore, StoreError> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return open_postgres(location).await;
    }
    if location == "memory:" {
        return Ok(OpenedStore {
            keys: Arc::new(MemoryKeyStore::new()),
            audit: Arc::new(MemoryAuditLog::default()),
            backend: "memory",
            dropped: None,
        });
    }
    let path = location
        .strip_prefix("sqlite://")
        .or_else(|| location.strip_prefix("sqlite:"))
        .unwrap_or(location);
    open_sqlite(path).await
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<OpenedStore, StoreError> {
    let store = Arc::new(super::PostgresKeyStore::connect(url).await?);
    let audit = store.audit_log();
    Ok(OpenedStore {
        dropped: Some(audit.writer().dropped_counter()),
        audit: Arc::new(audit),
        keys: store,
        backend: "postgres",
    })
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<OpenedStore, StoreError> {
    Err(not_compiled("PostgreSQL", "postgres"))
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(path: &str) -> Result<OpenedStore, StoreError> {
    let store = Arc::new(super::SqliteKeyStore::open(path).await?);
    let audit = store.audit_log();
    Ok(OpenedStore {
        dropped: Some(audit.writer().dropped_counter()),
        audit: Arc::new(audit),
        keys: store,
        backend: "sqlite",
    })
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_path: &str) -> Result<OpenedStore, StoreError> {
    Err(not_compiled("SQLite", "sqlite"))
}

/// The refusal for a backend whose cargo feature is off.
#[cfg(not(all(feature = "postgres", feature = "sqlite")))]
fn not_compiled(backend: &str, feature: &str) -> StoreError {
    StoreError::unavailable(format!(
        "{backend} support is not compiled in (cargo feature `{feature}`)"
    ))
}
