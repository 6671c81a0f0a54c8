//! The key store and audit log of an example, and the issuer and verifier over them.

use std::{io, path::Path, sync::Arc};

use auth_core::{
    audit::AuditLog, audit::MemoryAuditLog, store::open_store, AuditSink, KeyIssuer, KeyStore,
    Keys, MemoryKeyStore, SecretHasher, TokenPrefix, Verifier,
};

/// Where an example keeps its keys and audit events.
#[derive(Debug)]
pub struct Backend {
    /// The keys (hashes and metadata only).
    pub keys: Arc<dyn KeyStore>,
    /// The audit log: one event per authenticated request.
    pub audit: Arc<dyn AuditLog>,
    /// The argon2 hasher: default parameters in the examples, cheap ones in tests.
    pub hasher: SecretHasher,
    /// Where the data is, for humans (a PostgreSQL password is hidden).
    pub location: String,
}

impl Backend {
    /// Opens `--db`: a SQLite file path (created with its directory on first
    /// use: the directory with mode 0700, the file with mode 0600, so that
    /// other local users cannot read the hashes or the audit log) or a
    /// `postgres://` URL.
    pub async fn open(db: &str, hasher: SecretHasher) -> Result<Self, String> {
        if let Some(path) = sqlite_path(db) {
            private_sqlite_file(Path::new(path))
                .map_err(|e| format!("cannot create the key store {}: {e}", describe(db)))?;
        }
        let opened = open_store(db)
            .await
            .map_err(|e| format!("cannot open the key store {}: {e}", describe(db)))?;
        Ok(Self {
            keys: opened.keys,
            audit: opened.audit,
            hasher,
            location: format!("{} ({})", describe(db), opened_backend(db)),
        })
    }

    /// Everything in memory, lost on exit (tests).
    pub fn memory(hasher: SecretHasher) -> Self {
        Self {
            keys: Arc::new(MemoryKeyStore::new()),
            audit: Arc::new(MemoryAuditLog::default()),
            hasher,
            location: "memory".into(),
        }
    }

    /// An issuer of `prefix` tokens.
    pub fn issuer(&self, prefix: &str) -> KeyIssuer {
        KeyIssuer::new(self.keys.clone(), self.hasher.clone(), token_prefix(prefix))
    }

    /// An issuer of `prefix` tokens and a verifier accepting only those.
    pub fn keys(&self, prefix: &str) -> Keys {
        Keys::builder(self.keys.clone(), token_prefix(prefix))
            .hasher(self.hasher.clone())
            .build()
    }

    /// The audit log as the sink the `AuthLayer` writes to.
    pub fn audit_sink(&self) -> Arc<dyn AuditSink> {
        self.audit.clone()
    }

    /// Writes out what is still queued: last-used times and audit events.
    pub async fn flush(&self, verifier: &Verifier) {
        verifier.flush_usage().await;
        if let Err(e) = self.audit.flush().await {
            tracing::warn!(error = %e, "audit log not fully written");
        }
    }
}

fn token_prefix(prefix: &str) -> TokenPrefix {
    // The examples' prefixes are constants known to be valid.
    TokenPrefix::new(prefix).expect("example token prefixes are valid")
}

fn opened_backend(db: &str) -> &'static str {
    if is_postgres(db) {
        "PostgreSQL"
    } else if db == "memory:" {
        "in memory"
    } else {
        "SQLite"
    }
}

/// The file of a SQLite `--db`, `None` for PostgreSQL and memory.
fn sqlite_path(db: &str) -> Option<&str> {
    if is_postgres(db) || db == "memory:" {
        return None;
    }
    Some(
        db.strip_prefix("sqlite://")
            .or_else(|| db.strip_prefix("sqlite:"))
            .unwrap_or(db),
    )
}

/// Creates the SQLite file's folder (mode 0700, only if missing: an existing
/// folder is the user's) and the file itself (mode 0600) before the store
/// opens it, and tightens an existing file to 0600. SQLite gives its `-wal`
/// and `-shm` files the mode of the database file.
#[cfg(unix)]
pub fn private_sqlite_file(path: &Path) -> io::Result<()> {
    use std::{
        fs::{DirBuilder, OpenOptions, Permissions},
        os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            // The umask may only have taken bits away; make it exact.
            std::fs::set_permissions(dir, Permissions::from_mode(0o700))?;
        }
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(path, Permissions::from_mode(0o600))
}

/// Elsewhere the store creates the file with the platform's defaults.
#[cfg(not(unix))]
pub fn private_sqlite_file(_path: &Path) -> io::Result<()> {
    Ok(())
}

fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `db` for humans: a SQLite path made absolute, a URL without its password.
pub fn describe(db: &str) -> String {
    if is_postgres(db) {
        return hide_password(db);
    }
    if db == "memory:" {
        return db.to_owned();
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    std::path::absolute(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_owned())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[tokio::test]
    async fn the_data_folder_is_0700_and_the_database_0600() {
        use std::os::unix::fs::PermissionsExt;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let db = dir.join("server.db");
        let backend =
            super::Backend::open(db.to_str().unwrap(), auth_core::SecretHasher::for_tests())
                .await
                .unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        // The store really uses that file (a key written shows up in it).
        let key = backend
            .issuer("st_")
            .issue(auth_core::NewKey::new(
                auth_core::Principal::user("alice"),
                "ci",
                auth_core::ScopeSet::empty(),
            ))
            .await
            .unwrap();
        assert!(backend.keys.get(key.record.id).await.unwrap().is_some());
        assert!(std::fs::metadata(&db).unwrap().len() > 0);
        for side in ["server.db-wal", "server.db-shm"] {
            let p = dir.join(side);
            if p.exists() {
                assert_eq!(mode(&p), 0o600, "{side}");
            }
        }

        // A file left readable by an older version is tightened on open.
        drop(backend);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::Backend::open(
            &format!("sqlite:{}", db.display()),
            auth_core::SecretHasher::for_tests(),
        )
        .await
        .unwrap();
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::describe("postgres://app:hunter2@db:5432/keys"),
            "postgres://app:***@db:5432/keys"
        );
        assert_eq!(
            super::describe("postgres://app@db/keys"),
            "postgres://app@db/keys"
        );
    }
}
