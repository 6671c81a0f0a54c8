//! SQLite: the embedded default. One file, created on first use, zero set-up.

pub(super) mod audit;
#[cfg(feature = "jwt")]
mod secrets;
mod watch;

use std::{path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    migrate::Migrator,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
    Row, Sqlite, SqliteConnection,
};
use time::OffsetDateTime;

use self::{audit::SqliteAuditLog, watch::Watcher};
use super::{
    change_payload,
    sql::{self, corrupt, micros, opt_from_micros, store_error},
    AuditBatching, ChangeFeed, KeyChange, KeyPage, KeyQuery, KeyRecord, KeyStore, KeyUpdate,
    KeyUse, StateFilter, StoreError,
};
use crate::{policy::CreditSpend, token::SecretCheck, KeyId, Principal};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows of `key_changes` older than this are pruned by later revocations.
const CHANGE_LOG_RETENTION: time::Duration = time::Duration::days(1);

const COLUMNS: &str = "id, owner_id, org_id, name, scopes, hint, hash, \
    created_at, expires_at, revoked_at, last_used_at, replaced_by, secret_check, created_by, \
    meta, external_id, disabled_at, ip_allowlist, last_used_ip, rate_limit, rate_limit_period_seconds, \
    credits_remaining, credits_refill_amount, credits_refill_every, credits_refilled_at";

/// Keys in a SQLite file (sqlx, WAL mode): survives restarts, and several
/// processes may share the file.
///
/// A key is durable when [`KeyStore::insert`] returns (`synchronous=FULL`).
/// Revocations made by another process on the same file (e.g. a `revoke`
/// command while the server runs) reach this store's [`ChangeFeed`] within
/// about 200 ms: a background task polls the `key_changes` table, off the
/// request path.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_core::{Keys, NewKey, Principal, ScopeSet, SecretHasher, store::SqliteKeyStore, TokenPrefix};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Arc::new(SqliteKeyStore::open(dir.path().join("keys.db")).await.unwrap());
/// let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
///     .hasher(SecretHasher::for_tests())
///     .build();
/// let key = issuer.issue(NewKey::new(Principal::user("alice"), "ci", ScopeSet::empty())).await.unwrap();
/// assert_eq!(verifier.verify(key.token.expose_secret()).await.unwrap().effective_user(), "alice");
/// # });
/// ```
#[derive(Debug)]
pub struct SqliteKeyStore {
    pool: SqlitePool,
    changes: Arc<ChangeFeed>,
    // Dropping the store stops the cross-process watcher.
    _watcher: Watcher,
}

impl SqliteKeyStore {
    /// Opens (creating the file and its directory if needed) the store at
    /// `path`, and brings its schema up to date.
    ///
    /// Must be called from within a Tokio runtime.
    /// A new file is readable by its owner only (0600, and the folders
    /// created for it 0700): it holds key hashes and the audit log. SQLite
    /// gives its `-wal` and `-shm` files the same mode.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        if let Err(first) = MIGRATOR.run(&pool).await {
            // Two processes creating the same file at once: the loser's
            // migration fails, and succeeds on a retry once the winner is done.
            tokio::time::sleep(Duration::from_millis(200)).await;
            tracing::debug!(error = %first, "migration failed, retrying once");
            MIGRATOR.run(&pool).await.map_err(StoreError::unavailable)?;
        }
        let changes = Arc::new(ChangeFeed::new());
        let last_seq = watch::latest_seq(&pool).await?;
        let watcher = watch::spawn(pool.clone(), changes.clone(), last_seq);
        Ok(Self {
            pool,
            changes,
            _watcher: watcher,
        })
    }

    /// The connection pool (for the application's own tables, or inspection).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The audit log in the same file, with default batching.
    ///
    /// Must be called from within a Tokio runtime (it starts the writer task).
    pub fn audit_log(&self) -> SqliteAuditLog {
        self.audit_log_with(&AuditBatching::default())
    }

    /// The audit log in the same file.
    pub fn audit_log_with(&self, batching: &AuditBatching) -> SqliteAuditLog {
        SqliteAuditLog::new(self.pool.clone(), batching)
    }
}

/// Creates `path`'s missing folders (0700 on Unix) and the file itself
/// (0600) when it does not exist yet; existing ones keep their modes.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let cannot = |what: &Path, e: std::io::Error| {
        // The io error, kind kept, naming the path it concerns.
        let e = std::io::Error::new(e.kind(), format!("cannot create {}: {e}", what.display()));
        StoreError::unavailable(e)
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut folders = std::fs::DirBuilder::new();
        folders.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut folders, 0o700);
        folders.create(dir).map_err(|e| cannot(dir, e))?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        // An empty file is an empty database to SQLite.
        Ok(_) => Ok(()),
        // Someone's file (or a folder: SQLite's error says so).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(cannot(path, e)),
    }
}

fn decode(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let owner_id: String = row.try_get("owner_id").map_err(store_error)?;
    let org_id: Option<String> = row.try_get("org_id").map_err(store_error)?;
    let scopes: String = row.try_get("scopes").map_err(store_error)?;
    let scopes: Vec<String> =
        serde_json::from_str(&scopes).map_err(|_| corrupt("invalid scopes"))?;
    let created_at: i64 = row.try_get("created_at").map_err(store_error)?;
    let meta: String = row.try_get("meta").map_err(store_error)?;
    let ip_allowlist: String = row.try_get("ip_allowlist").map_err(store_error)?;
    let ip_allowlist: Vec<String> =
        serde_json::from_str(&ip_allowlist).map_err(|_| corrupt("invalid ip_allowlist"))?;
    Ok(KeyRecord {
        id: sql::key_id(row.try_get("id").map_err(store_error)?)?,
        owner: match org_id {
            Some(org) => Principal::in_org(owner_id, org),
            None => Principal::user(owner_id),
        },
        name: row.try_get("name").map_err(store_error)?,
        scopes: sql::scopes(scopes)?,
        created_at: sql::from_micros(created_at)?,
        expires_at: opt_from_micros(row.try_get("expires_at").map_err(store_error)?)?,
        revoked_at: opt_from_micros(row.try_get("revoked_at").map_err(store_error)?)?,
        last_used_at: opt_from_micros(row.try_get("last_used_at").map_err(store_error)?)?,
        hint: row.try_get("hint").map_err(store_error)?,
        hash: row.try_get("hash").map_err(store_error)?,
        replaced_by: sql::opt_key_id(row.try_get("replaced_by").map_err(store_error)?)?,
        check: sql::check(row.try_get("secret_check").map_err(store_error)?)?,
        created_by: sql::opt_key_id(row.try_get("created_by").map_err(store_error)?)?,
        meta: sql::meta(&meta)?,
        external_id: row.try_get("external_id").map_err(store_error)?,
        disabled_at: opt_from_micros(row.try_get("disabled_at").map_err(store_error)?)?,
        ip_allowlist: sql::ip_allowlist(ip_allowlist)?,
        last_used_ip: sql::last_used_ip(row.try_get("last_used_ip").map_err(store_error)?)?,
        rate_limit: sql::rate_limit(
            row.try_get("rate_limit").map_err(store_error)?,
            row.try_get("rate_limit_period_seconds")
                .map_err(store_error)?,
        )?,
        credits: sql::credits(
            row.try_get("credits_remaining").map_err(store_error)?,
            row.try_get("credits_refill_amount").map_err(store_error)?,
            row.try_get("credits_refill_every").map_err(store_error)?,
            opt_from_micros(row.try_get("credits_refilled_at").map_err(store_error)?)?,
        )?,
    })
}

/// A JSON array of strings, as SQLite keeps scopes and allowlists.
fn json_list<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> String {
    serde_json::Value::Array(
        items
            .into_iter()
            .map(|s| serde_json::Value::String(s.as_ref().to_owned()))
            .collect(),
    )
    .to_string()
}

async fn insert_record(conn: &mut SqliteConnection, r: &KeyRecord) -> Result<(), StoreError> {
    let (rate_limit, rate_limit_period) = sql::rate_limit_columns(r.rate_limit);
    let credits = sql::credit_columns(r.credits);
    sqlx::query::<Sqlite>(&format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(r.id.to_string())
    .bind(r.owner.user_id())
    .bind(r.owner.org_id())
    .bind(&r.name)
    .bind(json_list(r.scopes.iter()))
    .bind(&r.hint)
    .bind(&r.hash)
    .bind(micros(r.created_at))
    .bind(r.expires_at.map(micros))
    .bind(r.revoked_at.map(micros))
    .bind(r.last_used_at.map(micros))
    .bind(r.replaced_by.map(|k| k.to_string()))
    .bind(r.check.map(|c| i64::from(c.as_u32())))
    .bind(r.created_by.map(|k| k.to_string()))
    .bind(sql::meta_text(&r.meta))
    .bind(&r.external_id)
    .bind(r.disabled_at.map(micros))
    .bind(json_list(sql::ip_allowlist_text(&r.ip_allowlist)))
    .bind(r.last_used_ip.map(|ip| ip.to_string()))
    .bind(rate_limit)
    .bind(rate_limit_period)
    .bind(credits.remaining)
    .bind(credits.refill_amount)
    .bind(credits.refill_every)
    .bind(credits.refilled_at.map(micros))
    .execute(conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Logs a change (a key id for a revocation, see `change_payload`) for
/// other processes, and prunes old log rows.
async fn log_change(conn: &mut SqliteConnection, payload: &str) -> Result<(), StoreError> {
    let now = OffsetDateTime::now_utc();
    sqlx::query("DELETE FROM key_changes WHERE at < ?")
        .bind(micros(now - CHANGE_LOG_RETENTION))
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    sqlx::query("INSERT INTO key_changes (key_id, at) VALUES (?, ?)")
        .bind(payload)
        .bind(micros(now))
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        insert_record(&mut conn, record).await?;
        self.changes.publish(&KeyChange::Updated(record.id));
        Ok(())
    }

    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?"))
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
            "SELECT {COLUMNS} FROM api_keys WHERE owner_id = ? ORDER BY created_at DESC, id DESC"
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
        // The first statement writes, so the transaction takes the write lock
        // up front (waiting up to the busy timeout) and cannot deadlock.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let updated = sqlx::query(
            "UPDATE api_keys SET revoked_at = min(coalesce(revoked_at, ?1), ?1) WHERE id = ?2",
        )
        .bind(micros(at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        log_change(&mut tx, &id.to_string()).await?;
        tx.commit().await.map_err(store_error)?;
        self.changes.publish(&KeyChange::Revoked(id));
        Ok(true)
    }

    async fn rotate(
        &self,
        old: KeyId,
        old_ends_at: OffsetDateTime,
        now: OffsetDateTime,
        new: &KeyRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Conditional update: of two concurrent rotations only one matches.
        let updated = sqlx::query(
            "UPDATE api_keys SET revoked_at = min(coalesce(revoked_at, ?1), ?1), replaced_by = ?2 \
             WHERE id = ?3 AND replaced_by IS NULL AND disabled_at IS NULL \
             AND (revoked_at IS NULL OR revoked_at > ?4) AND (expires_at IS NULL OR expires_at > ?4)",
        )
        .bind(micros(old_ends_at))
        .bind(new.id.to_string())
        .bind(old.to_string())
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            let exists = sqlx::query("SELECT 1 FROM api_keys WHERE id = ?")
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
        // Credits carry over as they stand now, under the same lock as
        // spends: none spent since `new` was built is given back.
        sqlx::query(
            "UPDATE api_keys SET \
             credits_remaining = min(credits_remaining, \
               (SELECT o.credits_remaining FROM api_keys o WHERE o.id = ?1)), \
             credits_refilled_at = \
               (SELECT o.credits_refilled_at FROM api_keys o WHERE o.id = ?1) \
             WHERE id = ?2 AND credits_remaining IS NOT NULL \
             AND (SELECT o.credits_remaining FROM api_keys o WHERE o.id = ?1) IS NOT NULL",
        )
        .bind(old.to_string())
        .bind(new.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        log_change(&mut tx, &old.to_string()).await?;
        tx.commit().await.map_err(store_error)?;
        self.changes.publish(&KeyChange::Revoked(old));
        self.changes.publish(&KeyChange::Updated(new.id));
        Ok(())
    }

    async fn update(&self, id: KeyId, update: &KeyUpdate) -> Result<KeyRecord, StoreError> {
        let (rate_limit, rate_limit_period) = sql::rate_limit_columns(update.rate_limit.flatten());
        let credits = sql::credit_columns(update.credits.flatten());
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        if update.expected.is_some() {
            // Compare-and-set: a write first takes the database's write
            // lock (waiting for other writers), so the row read next stays
            // as read until this transaction ends.
            let found = sqlx::query("UPDATE api_keys SET name = name WHERE id = ?")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            if found == 0 {
                return Err(StoreError::NotFound);
            }
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?"))
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
            if !update.still_as_read(&decode(&row)?) {
                return Err(super::key_update::changed_since_read());
            }
        }
        let row = sqlx::query(&sql::update_statement('?', COLUMNS))
            .bind(update.name.is_some())
            .bind(&update.name)
            .bind(update.scopes.is_some())
            .bind(update.scopes.as_ref().map(|s| json_list(s.iter())))
            .bind(update.expires_at.is_some())
            .bind(update.expires_at.flatten().map(micros))
            .bind(update.meta.is_some())
            .bind(update.meta.as_ref().map(sql::meta_text))
            .bind(update.external_id.is_some())
            .bind(update.external_id.clone().flatten())
            .bind(update.disabled_at.is_some())
            .bind(update.disabled_at.flatten().map(micros))
            .bind(update.ip_allowlist.is_some())
            .bind(
                update
                    .ip_allowlist
                    .as_deref()
                    .map(|l| json_list(sql::ip_allowlist_text(l))),
            )
            .bind(update.rate_limit.is_some())
            .bind(rate_limit)
            .bind(rate_limit_period)
            .bind(update.credits.is_some())
            .bind(credits.remaining)
            .bind(credits.refill_amount)
            .bind(credits.refill_every)
            .bind(credits.refilled_at.map(micros))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        let record = decode(&row)?;
        log_change(&mut tx, &change_payload::updated(id)).await?;
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
        let [hour, day, week, month] = sql::period_starts(now).map(micros);
        // More than can be stored is more than is left.
        let Ok(amount) = i64::try_from(amount.max(1)) else {
            return Ok(CreditSpend::Exhausted);
        };
        // One statement: the row lock serialises concurrent takes.
        let left: Option<i64> = sqlx::query_scalar(&sql::take_credits_statement('?'))
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
            let remaining = u64::try_from(remaining).map_err(|_| corrupt("negative credits"))?;
            return Ok(CreditSpend::Spent { remaining });
        }
        let unlimited: Option<bool> =
            sqlx::query_scalar("SELECT credits_remaining IS NULL FROM api_keys WHERE id = ?")
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
        let updated = sqlx::query(sql::return_credits_statement('?'))
            .bind(amount)
            .bind(id.to_string())
            .bind(micros(taken_at))
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
             CASE WHEN credits_remaining > ?1 THEN ?1 ELSE credits_remaining END \
             WHERE id = ?2",
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
        let updated = sqlx::query("UPDATE api_keys SET hash = ? WHERE id = ?")
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
        let updated = sqlx::query("UPDATE api_keys SET hash = ?, secret_check = ? WHERE id = ?")
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
        // One transaction (one fsync) for the whole batch.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for u in sql::latest_uses(uses) {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = ?1, last_used_ip = coalesce(?2, last_used_ip) \
                 WHERE id = ?3 AND (last_used_at IS NULL OR last_used_at < ?1)",
            )
            .bind(micros(u.at))
            .bind(u.ip.map(|ip| ip.to_string()))
            .bind(u.id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn list_keys(
        &self,
        query: &KeyQuery,
        now: OffsetDateTime,
    ) -> Result<KeyPage, StoreError> {
        let limit = query.effective_limit();
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
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
                    .push_bind(micros(now))
                    .push(") AND (expires_at IS NULL OR expires_at > ")
                    .push_bind(micros(now))
                    .push(")");
            }
            match state {
                StateFilter::Revoked => {
                    q.push(" AND revoked_at <= ").push_bind(micros(now));
                }
                StateFilter::Expired => {
                    q.push(" AND (revoked_at IS NULL OR revoked_at > ")
                        .push_bind(micros(now))
                        .push(") AND expires_at <= ")
                        .push_bind(micros(now));
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
                .push_bind(micros(t))
                .push(")");
        }
        if let Some(k) = query.created_by {
            q.push(" AND created_by = ").push_bind(k.to_string());
        }
        if let Some(c) = query.after {
            q.push(" AND (created_at < ")
                .push_bind(micros(c.created_at))
                .push(" OR (created_at = ")
                .push_bind(micros(c.created_at))
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
             WHERE (expires_at > ?1 OR (expires_at = ?1 AND ?4 IS NOT NULL AND id > ?4)) \
             AND expires_at <= ?2 \
             AND (revoked_at IS NULL OR revoked_at > expires_at) \
             AND (expiry_notified_for IS NULL OR expiry_notified_for <> expires_at) \
             ORDER BY expires_at, id LIMIT ?3"
        ))
        .bind(micros(after))
        .bind(micros(until))
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
        let updated = sqlx::query("UPDATE api_keys SET expiry_notified_for = ?1 WHERE id = ?2")
            .bind(micros(expires_at))
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
        super::issuing_prefix::sqlite::record(&self.pool, prefix.as_str(), at).await
    }

    async fn issuing_prefixes(&self) -> Result<Vec<super::IssuingPrefix>, StoreError> {
        super::issuing_prefix::sqlite::list(&self.pool).await
    }
}
