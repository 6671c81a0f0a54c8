//! Opening `--db`: the services' own key store and audit log, plus the pool
//! for the few read-only aggregates the library has no call for.

use std::{collections::BTreeSet, path::Path, process::ExitCode, str::FromStr, sync::Arc};

use auth_core::{
    audit::AuditLog, store::PostgresKeyStore, store::PostgresOptions, store::SqliteKeyStore,
    KeyStore,
};
use serde::Serialize;
use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions},
    Row,
};

use crate::{cli::DbArgs, error::CliError, output};

/// The connection pool under the store.
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open database.
pub(crate) struct Db {
    pub keys: Arc<dyn KeyStore>,
    pub audit: Arc<dyn AuditLog>,
    pub pool: Pool,
}

enum Location<'a> {
    Sqlite(&'a str),
    Postgres(&'a str),
}

fn locate(args: &DbArgs) -> Result<Location<'_>, CliError> {
    let db = args
        .db
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| CliError::usage("no database: pass --db PATH|URL or set DATABASE_URL"))?;
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return Ok(Location::Postgres(db));
    }
    if args.schema.is_some() || args.ca_file.is_some() {
        return Err(CliError::usage(
            "--schema and --ca-file apply to a postgres:// database only",
        ));
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    Ok(Location::Sqlite(path))
}

fn pg_options(args: &DbArgs) -> PostgresOptions {
    let mut options = PostgresOptions::new().max_connections(4);
    if let Some(schema) = &args.schema {
        options = options.schema(schema.clone());
    }
    if let Some(ca) = &args.ca_file {
        options = options.ca_file(ca.clone());
    }
    options
}

impl Db {
    /// Opens the store (bringing its schema up to date, as the services do).
    pub(crate) async fn open(args: &DbArgs) -> Result<Self, CliError> {
        match locate(args)? {
            Location::Sqlite(path) => {
                let store = Arc::new(SqliteKeyStore::open(path).await.map_err(|e| {
                    CliError::unavailable(format!("cannot open the SQLite file {path}: {e}"))
                })?);
                Ok(Self {
                    pool: Pool::Sqlite(store.pool().clone()),
                    audit: Arc::new(store.audit_log()),
                    keys: store,
                })
            }
            Location::Postgres(url) => {
                let store = Arc::new(
                    PostgresKeyStore::connect_with(url, &pg_options(args))
                        .await
                        .map_err(|e| {
                            CliError::unavailable(format!(
                                "cannot open the PostgreSQL database {}: {e}",
                                output::hide_password(url)
                            ))
                        })?,
                );
                Ok(Self {
                    pool: Pool::Postgres(store.pool().clone()),
                    audit: Arc::new(store.audit_log()),
                    keys: store,
                })
            }
        }
    }

    /// Lets go of the connections (a SQLite file is checkpointed).
    pub(crate) async fn close(self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

#[derive(Serialize)]
struct Migration {
    version: i64,
    description: String,
    applied_now: bool,
}

/// `migrate`: applies what is missing and lists every migration.
pub(crate) async fn migrate(args: &DbArgs, json: bool) -> Result<ExitCode, CliError> {
    let before = applied_before(args).await?;
    let db = Db::open(args).await?;
    let rows = match &db.pool {
        Pool::Sqlite(p) => sqlx::query(
            "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(p)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(i64, String)>, sqlx::Error>>()?,
        Pool::Postgres(p) => sqlx::query(
            "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(p)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(i64, String)>, sqlx::Error>>()?,
    };
    db.close().await;
    let list: Vec<Migration> = rows
        .into_iter()
        .map(|(version, description)| Migration {
            applied_now: !before.contains(&version),
            version,
            description,
        })
        .collect();
    if json {
        output::print_json(&serde_json::json!({ "migrations": list }))?;
    } else {
        let fresh = list.iter().filter(|m| m.applied_now).count();
        let mut table = output::Table::new(["version", "description", "status"]);
        for m in &list {
            table.row([
                m.version.to_string(),
                m.description.clone(),
                if m.applied_now {
                    "applied now".into()
                } else {
                    "already applied".into()
                },
            ]);
        }
        output::print(&table.render())?;
        output::note(&format!(
            "{fresh} migration(s) applied, {} already in place",
            list.len() - fresh
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The versions applied before this run (none for a new database).
async fn applied_before(args: &DbArgs) -> Result<BTreeSet<i64>, CliError> {
    let versions: Vec<i64> = match locate(args)? {
        Location::Sqlite(path) => {
            if !Path::new(path).exists() {
                return Ok(BTreeSet::new());
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(SqliteConnectOptions::new().filename(path))
                .await?;
            let exists: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(&pool)
            .await?;
            let v = if exists == 0 {
                Vec::new()
            } else {
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&pool)
                    .await?
            };
            pool.close().await;
            v
        }
        Location::Postgres(url) => {
            let mut connect = PgConnectOptions::from_str(url)
                .map_err(|_| CliError::usage("invalid PostgreSQL URL"))?;
            if let Some(schema) = &args.schema {
                connect = connect.options([("search_path", schema.as_str())]);
            }
            if let Some(ca) = &args.ca_file {
                connect = connect.ssl_root_cert(ca);
                if !url.contains("sslmode=") {
                    connect = connect.ssl_mode(sqlx::postgres::PgSslMode::VerifyFull);
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(connect)
                .await
                .map_err(|e| {
                    CliError::unavailable(format!(
                        "cannot open the PostgreSQL database {}: {e}",
                        output::hide_password(url)
                    ))
                })?;
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(&pool)
                    .await?;
            let v = if exists {
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&pool)
                    .await?
            } else {
                Vec::new()
            };
            pool.close().await;
            v
        }
    };
    Ok(versions.into_iter().collect())
}
