//! The key store and audit log of an example, and the issuer and verifier over them.

use std::sync::Arc;

use auth_core::{
    store::open_store, AuditLog, AuditSink, KeyIssuer, KeyStore, MemoryAuditLog, MemoryKeyStore,
    SecretHasher, TokenPrefix, Verifier,
};

/// Where an example keeps its keys and audit events.
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
    /// use) or a `postgres://` URL.
    pub async fn open(db: &str, hasher: SecretHasher) -> Result<Self, String> {
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

    /// A verifier accepting only `prefix` tokens.
    pub fn verifier(&self, prefix: &str) -> Verifier {
        Verifier::builder(self.keys.clone())
            .hasher(self.hasher.clone())
            .prefix(token_prefix(prefix))
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
