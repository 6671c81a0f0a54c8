//! Opening `--db` with the users' sealed signing secrets in the same
//! database as the keys and the audit log.

use std::sync::Arc;

use auth_core::{
    jwt::{MemoryUserSecrets, UserSecretStore},
    SecretHasher,
};

use crate::support::{backend::describe, Backend};

/// The backend of the examples, and where the secrets are.
#[derive(Debug)]
pub struct Opened {
    /// Keys (unused by this JWT-only service, but the verifier needs a
    /// store) and the audit log.
    pub backend: Backend,
    /// The sealed per-user secrets.
    pub secrets: Arc<dyn UserSecretStore>,
}

/// Whether `db` names a PostgreSQL database (shared by instances).
pub fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Opens `db`: a SQLite file path (created with its directory on first use),
/// a `postgres://` URL, or `memory:`.
pub async fn open(db: &str, hasher: SecretHasher) -> Result<Opened, String> {
    if is_postgres(db) {
        return open_postgres(db, hasher).await;
    }
    if db == "memory:" {
        return Ok(Opened {
            backend: Backend::memory(hasher),
            secrets: Arc::new(MemoryUserSecrets::new()),
        });
    }
    open_sqlite(db, hasher).await
}

#[cfg(feature = "postgres")]
async fn open_postgres(db: &str, hasher: SecretHasher) -> Result<Opened, String> {
    let store = Arc::new(
        auth_core::store::PostgresKeyStore::connect(db)
            .await
            .map_err(|e| failed(db, e))?,
    );
    let audit = Arc::new(store.audit_log());
    Ok(opened(store, audit, hasher, db, "PostgreSQL"))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_db: &str, _hasher: SecretHasher) -> Result<Opened, String> {
    Err(not_compiled("PostgreSQL", "postgres"))
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(db: &str, hasher: SecretHasher) -> Result<Opened, String> {
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    let store = Arc::new(
        auth_core::store::SqliteKeyStore::open(path)
            .await
            .map_err(|e| failed(db, e))?,
    );
    let audit = Arc::new(store.audit_log());
    Ok(opened(store, audit, hasher, db, "SQLite"))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_db: &str, _hasher: SecretHasher) -> Result<Opened, String> {
    Err(not_compiled("SQLite", "sqlite"))
}

/// Keys and secrets in `store`, events in `audit`: the `kind` database `db`.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn opened<S>(
    store: Arc<S>,
    audit: Arc<dyn auth_core::audit::AuditLog>,
    hasher: SecretHasher,
    db: &str,
    kind: &str,
) -> Opened
where
    S: auth_core::KeyStore + UserSecretStore + 'static,
{
    Opened {
        backend: Backend {
            keys: store.clone(),
            audit,
            hasher,
            location: format!("{} ({kind})", describe(db)),
        },
        secrets: store,
    }
}

/// The refusal for a database whose cargo feature is off.
#[cfg(not(all(feature = "postgres", feature = "sqlite")))]
fn not_compiled(kind: &str, feature: &str) -> String {
    format!("{kind} support is not compiled in (cargo feature `{feature}`)")
}

fn failed(db: &str, e: auth_core::store::StoreError) -> String {
    format!("cannot open {}: {e}", describe(db))
}
