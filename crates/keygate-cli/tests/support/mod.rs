//! Running the `keygate` binary, and the two databases it is tested on: a
//! SQLite file and a schema of its own in the real PostgreSQL
//! (`DATABASE_URL`; skipped with a message when unset, failed when unset
//! under `CI=true`).

#![allow(dead_code, unreachable_pub)]

use std::{
    process::{Command, Output},
    sync::Arc,
};

use auth_core::{store::PostgresKeyStore, store::SqliteKeyStore, KeyStore};
use keygate_test_support::services::database_url;
use serde_json::Value;

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }
}

/// A command for the binary with no configuration from the environment
/// (`--db` when `db` is not empty).
pub fn command(db: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("KEYGATE_PG_SCHEMA")
        .env_remove("KEYGATE_PREFIX")
        .env_remove("KEYGATE_OPERATOR");
    if !db.is_empty() {
        cmd.args(["--db", db]);
    }
    cmd
}

/// Runs the binary on `db` with `args`.
pub fn keygate(db: &str, args: &[&str]) -> Run {
    keygate_env(db, args, &[])
}

/// Runs the binary on `db` with `args` and environment variables.
pub fn keygate_env(db: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = command(db);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.args(args).output().expect("run keygate");
    Run {
        code: status.code().expect("exit code"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// A database for one test: what to pass the binary, and a store on it
/// (a "running server").
pub struct Database {
    /// `--db`.
    pub db: String,
    /// More arguments every run needs (`--schema`).
    pub extra: Vec<String>,
    /// The PostgreSQL schema, dropped by [`Database::drop_schema`].
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    /// A new SQLite file.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keys.db").to_str().unwrap().to_owned();
        Self {
            db,
            extra: Vec::new(),
            schema: None,
            _dir: Some(dir),
        }
    }

    /// A new schema in `DATABASE_URL`, or `None` (skipped) without one.
    pub fn postgres(test: &str) -> Option<Self> {
        let url = database_url(test)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let schema = format!("keygate_cli_{}_{nanos}", std::process::id());
        Some(Self {
            db: url,
            extra: vec!["--schema".into(), schema.clone()],
            schema: Some(schema),
            _dir: None,
        })
    }

    /// Opens a store on it, as a service does (migrating it).
    pub async fn open(&self) -> Arc<dyn KeyStore> {
        match &self.schema {
            Some(schema) => Arc::new(
                PostgresKeyStore::connect_with_schema(&self.db, schema)
                    .await
                    .expect("DATABASE_URL is set but PostgreSQL is unreachable"),
            ),
            None => Arc::new(SqliteKeyStore::open(&self.db).await.unwrap()),
        }
    }

    /// Runs the binary with `args` (and the extra arguments).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs the binary with `args` and environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(self.extra.iter().map(String::as_str))
            .collect();
        keygate_env(&self.db, &args, env)
    }

    /// Drops the PostgreSQL schema (nothing for SQLite).
    pub async fn drop_schema(&self) {
        if let Some(schema) = &self.schema {
            let pool = sqlx::PgPool::connect(&self.db).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}
