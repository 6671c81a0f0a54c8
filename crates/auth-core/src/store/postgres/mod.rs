//! PostgreSQL: one database shared by several instances of a service.

pub(super) mod audit;
mod listener;
#[cfg(feature = "jwt")]
mod secrets;

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow},
    Row,
};
use time::OffsetDateTime;

use self::{
    audit::PostgresAuditLog,
    listener::{ListenerHandle, CHANNEL},
};
use super::{
    change_payload,
    sql::{self, store_error},
    AuditBatching, ChangeFeed, KeyChange, KeyPage, KeyQuery, KeyRecord, KeyStore, KeyUpdate,
    KeyUse, StateFilter, StoreError,
};
use crate::{policy::CreditSpend, token::SecretCheck, KeyId, Principal};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const COLUMNS: &str = "id, owner_id, org_id, name, scopes, hint, hash, \
    created_at, expires_at, revoked_at, last_used_at, replaced_by, secret_check, created_by, \
    meta, external_id, disabled_at, ip_allowlist, last_used_ip, rate_limit, rate_limit_period_seconds, \
    credits_remaining, credits_refill_amount, credits_refill_every, credits_refilled_at";

/// Settings for [`PostgresKeyStore::connect_with`].
///
/// ```
/// use std::time::Duration;
/// use auth_core::store::PostgresOptions;
/// let opts = PostgresOptions::new().schema("tenant_a").max_connections(20).acquire_timeout(Duration::from_secs(1));
/// assert!(PostgresOptions::new().schema("Robert'); DROP TABLE").validate().is_err());
/// # let _ = opts;
/// ```
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    heartbeat: Duration,
    ca_file: Option<PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
            ca_file: None,
        }
    }
}

impl PostgresOptions {
    /// Defaults: the connection's default schema, 10 connections, a 2 s
    /// acquire timeout, a 1 s notification heartbeat.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the tables in this schema (created if missing; `search_path` is
    /// set on every connection). Lower-case letters, digits and `_`, at most
    /// 63, not starting with a digit. Tests use one schema each.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Largest pool size (one connection is kept for `LISTEN`). Default 10.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(2);
        self
    }

    /// How long an operation waits for a connection before the store
    /// answers [`StoreError::Unavailable`] (so an outage answers 503
    /// quickly). Default 2 s.
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    /// How often the notification connection is checked; it is deemed dead
    /// when three heartbeats in a row go unanswered (each may take up to
    /// the longer of this period and 1 s). Default 1 s.
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d;
        self
    }

    /// Trusts only the CA certificates in this PEM file for the server's
    /// certificate (a managed PostgreSQL's CA bundle). Unless the URL has
    /// its own `sslmode`, this also sets `sslmode=verify-full`: TLS is
    /// required and the host name must match. The URL's `sslrootcert` does
    /// the same without this option. Needs the `tls` feature.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Checks the schema name.
    pub fn validate(&self) -> Result<(), StoreError> {
        if let Some(s) = &self.schema {
            let ok = !s.is_empty()
                && s.len() <= 63
                && !s.as_bytes()[0].is_ascii_digit()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(StoreError::unavailable(
                    "invalid schema name: use 1-63 lower-case letters, digits or '_'",
                ));
            }
        }
        Ok(())
    }
}

/// Keys in PostgreSQL (sqlx), shared by every instance of a service.
///
/// A key is durable when [`KeyStore::insert`] returns. A revocation or
/// rotation made by any instance reaches every other instance's
/// [`ChangeFeed`] through `LISTEN/NOTIFY`, typically within milliseconds and
/// without a query per request; while the notification connection is down,
/// the feed is out of sync and verifiers confirm every cached key against
/// the database. A database outage makes every operation fail with
/// [`StoreError::Unavailable`] after the acquire timeout (verifiers answer
/// 503), and service resumes by itself when it is back.
///
/// ```no_run
/// # async fn demo() -> Result<(), auth_core::store::StoreError> {
/// use std::sync::Arc;
/// use auth_core::{store::PostgresKeyStore, SecretHasher, Verifier};
/// let store = Arc::new(PostgresKeyStore::connect("postgres://app@db/keys").await?);
/// let audit = Arc::new(store.audit_log());
/// let verifier = Verifier::builder(store).hasher(SecretHasher::default()).build();
/// # let _ = (audit, verifier); Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresKeyStore {
    pool: PgPool,
    changes: Arc<ChangeFeed>,
    // Dropping the store stops the listener and frees its connection.
    _listener: ListenerHandle,
}

impl PostgresKeyStore {
    /// Connects with default [`PostgresOptions`], runs migrations and starts
    /// listening for other instances' changes.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PostgresOptions::default()).await
    }

    /// [`PostgresKeyStore::connect`] with the tables in `schema` (created if missing).
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PostgresOptions::default().schema(schema)).await
    }

    /// Connects with `options`, runs migrations and starts listening.
    pub async fn connect_with(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        options.validate()?;
        // The driver's message could quote the URL, password included.
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::unavailable("invalid PostgreSQL URL"))?;
        if let Some(schema) = &options.schema {
            connect = connect.options([("search_path", schema)]);
        }
        if let Some(ca) = &options.ca_file {
            connect = connect.ssl_root_cert(ca);
            if !url.contains("sslmode=") {
                connect = connect.ssl_mode(sqlx::postgres::PgSslMode::VerifyFull);
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        if let Some(schema) = &options.schema {
            create_schema(&pool, schema).await?;
        }
        Self::start(pool, options.heartbeat).await
    }

    /// Uses an existing pool (at least 2 connections: one is kept for
    /// `LISTEN`), runs migrations and starts listening.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        Self::start(pool, PostgresOptions::default().heartbeat).await
    }

    /// Uses a pool whose database is already migrated (see
    /// [`PostgresKeyStore::migrate`]), without touching it: no I/O happens
    /// here, so this works while the database is down. The feed starts out
    /// of sync until the listener is connected. The pool needs at least 2
    /// connections (one is kept for `LISTEN`).
    ///
    /// Must be called from within a Tokio runtime.
    pub fn from_migrated_pool(pool: PgPool) -> Self {
        let changes = Arc::new(ChangeFeed::new());
        let listener = listener::start_detached(
            pool.clone(),
            changes.clone(),
            PostgresOptions::default().heartbeat,
        );
        Self {
            pool,
            changes,
            _listener: listener,
        }
    }

    /// Brings the schema up to date (the constructors above do it for you).
    pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        MIGRATOR.run(pool).await.map_err(StoreError::unavailable)
    }

    async fn start(pool: PgPool, heartbeat: Duration) -> Result<Self, StoreError> {
        if pool.options().get_max_connections() < 2 {
            // The listener would hold the only connection.
            return Err(StoreError::unavailable(
                "the pool needs at least 2 connections (one is kept for LISTEN)",
            ));
        }
        Self::migrate(&pool).await?;
        let changes = Arc::new(ChangeFeed::new());
        let listener = listener::start(pool.clone(), changes.clone(), heartbeat).await?;
        Ok(Self {
            pool,
            changes,
            _listener: listener,
        })
    }

    /// The connection pool (for the application's own tables, or inspection).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The audit log in the same database, with default batching.
    ///
    /// Must be called from within a Tokio runtime (it starts the writer task).
    pub fn audit_log(&self) -> PostgresAuditLog {
        self.audit_log_with(&AuditBatching::default())
    }

    /// The audit log in the same database.
    pub fn audit_log_with(&self, batching: &AuditBatching) -> PostgresAuditLog {
        PostgresAuditLog::new(self.pool.clone(), batching)
    }
}

async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    // `schema` is validated: lower-case letters, digits and '_' only.
    let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    if sqlx::query(&sql).execute(pool).await.is_err() {
        // Two instances creating it at once: the loser fails, then sees it.
        sqlx::query(&sql).execute(pool).await.map_err(store_error)?;
    }
    Ok(())
}

fn decode(row: &PgRow) -> Result<KeyRecord, StoreError> {
    let get = |e| store_error(e);
    let owner_id: String = row.try_get("owner_id").map_err(get)?;
    let org_id: Option<String> = row.try_get("org_id").map_err(get)?;
    let scopes: Vec<String> = row.try_get("scopes").map_err(get)?;
    let id: String = row.try_get("id").map_err(get)?;
    Ok(KeyRecord {
        id: sql::key_id(&id)?,
        owner: match org_id {
            Some(org) => Principal::in_org(owner_id, org),
            None => Principal::user(owner_id),
        },
        name: row.try_get("name").map_err(get)?,
        scopes: sql::scopes(scopes)?,
        created_at: row.try_get("created_at").map_err(get)?,
        expires_at: row.try_get("expires_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
        last_used_at: row.try_get("last_used_at").map_err(get)?,
        hint: row.try_get("hint").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        replaced_by: sql::opt_key_id(row.try_get("replaced_by").map_err(get)?)?,
        check: sql::check(row.try_get("secret_check").map_err(get)?)?,
        created_by: sql::opt_key_id(row.try_get("created_by").map_err(get)?)?,
        meta: sql::meta(row.try_get("meta").map_err(get)?)?,
        external_id: row.try_get("external_id").map_err(get)?,
        disabled_at: row.try_get("disabled_at").map_err(get)?,
        ip_allowlist: sql::ip_allowlist(
            row.try_get::<Vec<String>, _>("ip_allowlist").map_err(get)?,
        )?,
        last_used_ip: sql::last_used_ip(row.try_get("last_used_ip").map_err(get)?)?,
        rate_limit: sql::rate_limit(
            row.try_get("rate_limit").map_err(get)?,
            row.try_get("rate_limit_period_seconds").map_err(get)?,
        )?,
        credits: sql::credits(
            row.try_get("credits_remaining").map_err(get)?,
            row.try_get("credits_refill_amount").map_err(get)?,
            row.try_get("credits_refill_every").map_err(get)?,
            row.try_get("credits_refilled_at").map_err(get)?,
        )?,
    })
}

async fn insert_record(conn: &mut PgConnection, r: &KeyRecord) -> Result<(), StoreError> {
    let (rate_limit, rate_limit_period) = sql::rate_limit_columns(r.rate_limit);
    let credits = sql::credit_columns(r.credits);
    sqlx::query(&format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)"
    ))
    .bind(r.id.to_string())
    .bind(r.owner.user_id())
    .bind(r.owner.org_id())
    .bind(&r.name)
    .bind(r.scopes.iter().collect::<Vec<_>>())
    .bind(&r.hint)
    .bind(&r.hash)
    .bind(r.created_at)
    .bind(r.expires_at)
    .bind(r.revoked_at)
    .bind(r.last_used_at)
    .bind(r.replaced_by.map(|k| k.to_string()))
    .bind(r.check.map(|c| i64::from(c.as_u32())))
    .bind(r.created_by.map(|k| k.to_string()))
    .bind(sql::meta_text(&r.meta))
    .bind(&r.external_id)
    .bind(r.disabled_at)
    .bind(sql::ip_allowlist_text(&r.ip_allowlist))
    .bind(r.last_used_ip.map(|ip| ip.to_string()))
    .bind(rate_limit)
    .bind(rate_limit_period)
    .bind(credits.remaining)
    .bind(credits.refill_amount)
    .bind(credits.refill_every)
    .bind(credits.refilled_at)
    .execute(conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

#[async_trait]
impl KeyStore for PostgresKeyStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        insert_record(&mut conn, record).await?;
        self.changes.publish(&KeyChange::Updated(record.id));
        Ok(())
    }

    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .as_ref()
            .map(decode)
            .transpose()
    }

    async fn list_by_owner(&self, user_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE owner_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(decode)
        .collect()
    }

    async fn revoke(&self, id: KeyId, at: OffsetDateTime) -> Result<bool, StoreError> {
        // One statement, one transaction: the notification goes out at commit.
        let revoked = sqlx::query(
            "WITH r AS (UPDATE api_keys SET revoked_at = LEAST(revoked_at, $1) WHERE id = $2 RETURNING id) \
             SELECT pg_notify($3, id) FROM r",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(CHANNEL)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .is_some();
        if revoked {
            self.changes.publish(&KeyChange::Revoked(id));
        }
        Ok(revoked)
    }

    async fn rotate(
        &self,
        old: KeyId,
        old_ends_at: OffsetDateTime,
        now: OffsetDateTime,
        new: &KeyRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Conditional update: a concurrent rotation waits for our row lock,
        // then re-checks the condition and matches nothing.
        let updated = sqlx::query(
            "UPDATE api_keys SET revoked_at = LEAST(revoked_at, $1), replaced_by = $2 \
             WHERE id = $3 AND replaced_by IS NULL AND disabled_at IS NULL \
             AND (revoked_at IS NULL OR revoked_at > $4) AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(old_ends_at)
        .bind(new.id.to_string())
        .bind(old.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            let exists = sqlx::query("SELECT 1 FROM api_keys WHERE id = $1")
                .bind(old.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?
                .is_some();
            return Err(if exists {
                StoreError::Conflict("key is revoked, expired, disabled or already rotated".into())
            } else {
                StoreError::NotFound
            });
        }
        insert_record(&mut tx, new).await?;
        // Credits carry over as they stand now (the old row is locked by the
        // update above): none spent since `new` was built is given back.
        sqlx::query(
            "UPDATE api_keys n SET \
             credits_remaining = LEAST(n.credits_remaining, o.credits_remaining), \
             credits_refilled_at = o.credits_refilled_at \
             FROM api_keys o WHERE o.id = $1 AND n.id = $2 \
             AND n.credits_remaining IS NOT NULL AND o.credits_remaining IS NOT NULL",
        )
        .bind(old.to_string())
        .bind(new.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(old.to_string())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        self.changes.publish(&KeyChange::Revoked(old));
        self.changes.publish(&KeyChange::Updated(new.id));
        Ok(())
    }

    async fn update(&self, id: KeyId, update: &KeyUpdate) -> Result<KeyRecord, StoreError> {
        let (rate_limit, rate_limit_period) = sql::rate_limit_columns(update.rate_limit.flatten());
        let credits = sql::credit_columns(update.credits.flatten());
        // In the edit's transaction: the notification goes out exactly when
        // the edit commits.
        let statement = format!(
            "WITH u AS ({}) SELECT {COLUMNS}, pg_notify($24, $25) FROM u",
            sql::update_statement('$', COLUMNS)
        );
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        if update.expected.is_some() {
            // Compare-and-set: the row lock holds off concurrent rotations,
            // revocations and edits until this transaction ends.
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"
            ))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
            if !update.still_as_read(&decode(&row)?) {
                return Err(super::key_update::changed_since_read());
            }
        }
        let row = sqlx::query(&statement)
            .bind(update.name.is_some())
            .bind(&update.name)
            .bind(update.scopes.is_some())
            .bind(update.scopes.as_ref().map(|s| s.iter().collect::<Vec<_>>()))
            .bind(update.expires_at.is_some())
            .bind(update.expires_at.flatten())
            .bind(update.meta.is_some())
            .bind(update.meta.as_ref().map(sql::meta_text))
            .bind(update.external_id.is_some())
            .bind(update.external_id.clone().flatten())
            .bind(update.disabled_at.is_some())
            .bind(update.disabled_at.flatten())
            .bind(update.ip_allowlist.is_some())
            .bind(update.ip_allowlist.as_deref().map(sql::ip_allowlist_text))
            .bind(update.rate_limit.is_some())
            .bind(rate_limit)
            .bind(rate_limit_period)
            .bind(update.credits.is_some())
            .bind(credits.remaining)
            .bind(credits.refill_amount)
            .bind(credits.refill_every)
            .bind(credits.refilled_at)
            .bind(id.to_string())
            .bind(CHANNEL)
            .bind(change_payload::updated(id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        let record = decode(&row)?;
        tx.commit().await.map_err(store_error)?;
        self.changes.publish(&KeyChange::Updated(id));
        Ok(record)
    }

    async fn spend_credit(
        &self,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        self.take_credits(id, 1, now).await
    }

    async fn take_credits(
        &self,
        id: KeyId,
        amount: u64,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        let [hour, day, week, month] = sql::period_starts(now);
        // More than can be stored is more than is left.
        let Ok(amount) = i64::try_from(amount.max(1)) else {
            return Ok(CreditSpend::Exhausted);
        };
        // One statement: the row lock serialises concurrent takes.
        let left: Option<i64> = sqlx::query_scalar(&sql::take_credits_statement('$'))
            .bind(id.to_string())
            .bind(hour)
            .bind(day)
            .bind(week)
            .bind(month)
            .bind(amount)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        if let Some(remaining) = left {
            let remaining =
                u64::try_from(remaining).map_err(|_| sql::corrupt("negative credits"))?;
            return Ok(CreditSpend::Spent { remaining });
        }
        let unlimited: Option<bool> =
            sqlx::query_scalar("SELECT credits_remaining IS NULL FROM api_keys WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        match unlimited {
            None => Err(StoreError::NotFound),
            Some(true) => Ok(CreditSpend::Unlimited),
            Some(false) => Ok(CreditSpend::Exhausted),
        }
    }

    async fn return_credits(
        &self,
        id: KeyId,
        amount: u64,
        taken_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        let updated = sqlx::query(sql::return_credits_statement('$'))
            .bind(amount)
            .bind(id.to_string())
            .bind(taken_at)
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn lower_credits(&self, id: KeyId, remaining: u64) -> Result<(), StoreError> {
        // Counts above i64::MAX cannot be stored, so they lower nothing.
        let remaining = i64::try_from(remaining).unwrap_or(i64::MAX);
        let updated = sqlx::query(
            "UPDATE api_keys SET credits_remaining = \
             CASE WHEN credits_remaining > $1 THEN $1 ELSE credits_remaining END \
             WHERE id = $2",
        )
        .bind(remaining)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn update_hash(&self, id: KeyId, hash: &str) -> Result<(), StoreError> {
        let updated = sqlx::query("UPDATE api_keys SET hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn update_hash_and_check(
        &self,
        id: KeyId,
        hash: &str,
        check: SecretCheck,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query("UPDATE api_keys SET hash = $1, secret_check = $2 WHERE id = $3")
            .bind(hash)
            .bind(i64::from(check.as_u32()))
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn record_use(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let latest = sql::latest_uses(uses);
        let ids: Vec<String> = latest.iter().map(|u| u.id.to_string()).collect();
        let times: Vec<OffsetDateTime> = latest.iter().map(|u| u.at).collect();
        let ips: Vec<Option<String>> = latest
            .iter()
            .map(|u| u.ip.map(|ip| ip.to_string()))
            .collect();
        // The whole batch in one statement.
        sqlx::query(
            "UPDATE api_keys AS k SET last_used_at = u.at, last_used_ip = coalesce(u.ip, k.last_used_ip) \
             FROM UNNEST($1::text[], $2::timestamptz[], $3::text[]) AS u(id, at, ip) \
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .bind(ips)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn list_keys(
        &self,
        query: &KeyQuery,
        now: OffsetDateTime,
    ) -> Result<KeyPage, StoreError> {
        let limit = query.effective_limit();
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE TRUE"
        ));
        if let Some(owner) = &query.owner {
            q.push(" AND owner_id = ").push_bind(owner.clone());
        }
        if let Some(org) = &query.org {
            q.push(" AND org_id = ").push_bind(org.clone());
        }
        if let Some(state) = query.state {
            // Mirrors `StateFilter::matches`.
            if matches!(state, StateFilter::Disabled | StateFilter::Active) {
                q.push(" AND (revoked_at IS NULL OR revoked_at > ")
                    .push_bind(now)
                    .push(") AND (expires_at IS NULL OR expires_at > ")
                    .push_bind(now)
                    .push(")");
            }
            match state {
                StateFilter::Revoked => {
                    q.push(" AND revoked_at <= ").push_bind(now);
                }
                StateFilter::Expired => {
                    q.push(" AND (revoked_at IS NULL OR revoked_at > ")
                        .push_bind(now)
                        .push(") AND expires_at <= ")
                        .push_bind(now);
                }
                StateFilter::Disabled => {
                    q.push(" AND disabled_at IS NOT NULL");
                }
                StateFilter::Active => {
                    q.push(" AND disabled_at IS NULL");
                }
            }
        }
        if let Some(t) = query.last_used_before {
            q.push(" AND (last_used_at IS NULL OR last_used_at < ")
                .push_bind(t)
                .push(")");
        }
        if let Some(k) = query.created_by {
            q.push(" AND created_by = ").push_bind(k.to_string());
        }
        if let Some(c) = query.after {
            q.push(" AND (created_at < ")
                .push_bind(c.created_at)
                .push(" OR (created_at = ")
                .push_bind(c.created_at)
                .push(" AND id < ")
                .push_bind(c.id.to_string())
                .push("))");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        let rows = q.build().fetch_all(&self.pool).await.map_err(store_error)?;
        let keys = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        Ok(KeyPage::from_overfetch(keys, limit))
    }

    async fn expiring_unnoticed(
        &self,
        after: OffsetDateTime,
        after_id: Option<KeyId>,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys \
             WHERE (expires_at > $1 OR (expires_at = $1 AND $4::text IS NOT NULL AND id > $4::text)) \
             AND expires_at <= $2 \
             AND (revoked_at IS NULL OR revoked_at > expires_at) \
             AND expiry_notified_for IS DISTINCT FROM expires_at \
             ORDER BY expires_at, id LIMIT $3"
        ))
        .bind(after)
        .bind(until)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(after_id.map(|id| id.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(decode)
        .collect()
    }

    async fn mark_expiry_noticed(
        &self,
        id: KeyId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE api_keys SET expiry_notified_for = $1 WHERE id = $2")
            .bind(expires_at)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
        Ok(updated > 0)
    }

    fn changes(&self) -> &ChangeFeed {
        &self.changes
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn record_issuing_prefix(
        &self,
        prefix: &crate::TokenPrefix,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        super::issuing_prefix::postgres::record(&self.pool, prefix.as_str(), at).await
    }

    async fn issuing_prefixes(&self) -> Result<Vec<super::IssuingPrefix>, StoreError> {
        super::issuing_prefix::postgres::list(&self.pool).await
    }
}
