//! The audit log in the SQLite file, written in batches off the request path.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{
    sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow},
    QueryBuilder, Row, Sqlite, SqliteConnection,
};
use time::OffsetDateTime;

use crate::store::{
    audit_policy::{RefusalRow, UsageDelta},
    audit_writer::{AuditWriter, Batch, BatchSink},
    sql::{self, micros, store_error, truncate, MAX_AUDIT_METHOD, MAX_AUDIT_PATH},
    AuditBatching, StoreError,
};
use crate::{
    audit::page as audit_page, audit::AuditHealth, audit::AuditLog, audit::AuditPage,
    audit::AuditQuery, audit::RefusalCount, audit::UsageCount, audit::UsageQuery,
    audit::MAX_USER_AGENT, AuditEvent, AuditSink,
};

/// A durable, queryable [`AuditLog`] in the key store's SQLite file.
///
/// [`AuditSink::record`] never waits. What gets a row follows the recording
/// policy (see `docs/ARCHITECTURE.md`): key management and impersonation
/// always; every use of a real key; refusals naming no real key, and
/// limiter refusals, are counted per minute, reason and client network
/// ([`AuditLog::refusals`]). Rows go through a bounded queue to a writer
/// with a connection of its own, which inserts each batch with multi-row
/// statements in one transaction, with the usage roll-up the activity chart
/// reads. WAL checkpoints run on another connection, off the write path.
/// When the queue is full (the disk stalls), key uses are shed: counted in
/// the usage roll-up and [`SqliteAuditLog::dropped_events`], and the log
/// reports itself degraded ([`AuditLog::health`]). Call [`AuditLog::flush`]
/// on graceful shutdown.
///
/// Get one from [`SqliteKeyStore::audit_log`](crate::store::SqliteKeyStore::audit_log).
pub struct SqliteAuditLog {
    pool: SqlitePool,
    writer: AuditWriter,
    _checkpoints: Checkpoints,
}

impl std::fmt::Debug for SqliteAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAuditLog")
            .field("dropped_events", &self.dropped_events())
            .finish_non_exhaustive()
    }
}

/// How often the WAL is checkpointed, off the writer's connection.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Stops the checkpoint task when the log is dropped.
struct Checkpoints(tokio::task::JoinHandle<()>);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqliteAuditLog {
    pub(crate) fn new(pool: SqlitePool, batching: &AuditBatching) -> Self {
        // The writer's own connection never checkpoints on commit: a
        // checkpoint copies the WAL into the file and syncs it, which would
        // stall the batches behind it.
        let options = (*pool.connect_options())
            .clone()
            .pragma("wal_autocheckpoint", "0");
        let writer_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(options);
        let writer = AuditWriter::spawn(Sink(writer_pool), batching);
        let checkpoints = Checkpoints(tokio::spawn(checkpoint(pool.clone())));
        Self {
            pool,
            writer,
            _checkpoints: checkpoints,
        }
    }

    /// Events without a row of their own because the store could not keep
    /// up (shed while the queue was full, counted in the usage roll-up) or
    /// refused a batch.
    pub fn dropped_events(&self) -> u64 {
        self.writer.dropped()
    }

    pub(crate) fn writer(&self) -> &AuditWriter {
        &self.writer
    }
}

/// Checkpoints the WAL now and then, without blocking writers (`PASSIVE`).
async fn checkpoint(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "audit WAL checkpoint failed");
        }
    }
}

/// Rows per multi-row insert (13 parameters each, well under SQLite's 32 766).
const ROWS_PER_INSERT: usize = 256;

struct Sink(SqlitePool);

#[async_trait]
impl BatchSink for Sink {
    async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut tx = self.0.begin().await.map_err(store_error)?;
        let mut rest = &batch.events[..];
        while !rest.is_empty() {
            // Whole statements of a few fixed sizes, so that each is
            // prepared once and cached.
            let n = if rest.len() >= ROWS_PER_INSERT {
                ROWS_PER_INSERT
            } else {
                1 << rest.len().ilog2()
            };
            let (chunk, tail) = rest.split_at(n);
            insert_events(&mut tx, chunk).await?;
            rest = tail;
        }
        for u in &batch.usage {
            add_usage(&mut tx, u).await?;
        }
        for r in &batch.refusals {
            add_refusals(&mut tx, r).await?;
        }
        tx.commit().await.map_err(store_error)
    }
}

async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO audit_events (at, key_id, actor, subject, outcome, reason, method, path, \
         status, client_ip, user_agent, created_key) ",
    );
    q.push_values(events, |mut row, e| {
        row.push_bind(micros(e.at))
            .push_bind(e.key_id.map(|k| k.to_string()))
            .push_bind(e.actor.as_deref().map(str::to_owned))
            .push_bind(e.subject.as_deref().map(str::to_owned))
            .push_bind(e.outcome.as_str())
            .push_bind(e.reason.map(|r| r.as_str()))
            .push_bind(truncate(e.method.as_str(), MAX_AUDIT_METHOD).to_owned())
            .push_bind(truncate(&e.path, MAX_AUDIT_PATH).to_owned())
            .push_bind(e.status.map(i64::from))
            .push_bind(e.client_ip.map(|ip| ip.to_string()))
            .push_bind(
                e.user_agent
                    .as_deref()
                    .map(|ua| truncate(ua, MAX_USER_AGENT).to_owned()),
            )
            .push_bind(e.created_key.map(|k| k.to_string()));
    });
    q.build()
        .persistent(true)
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

async fn add_usage(conn: &mut SqliteConnection, u: &UsageDelta) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_usage (key_id, hour, success, refused, rate_limited) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (key_id, hour) DO UPDATE SET success = success + excluded.success, \
         refused = refused + excluded.refused, rate_limited = rate_limited + excluded.rate_limited",
    )
    .bind(&u.key_id)
    .bind(u.hour * 1_000_000)
    .bind(count(u.success))
    .bind(count(u.refused))
    .bind(count(u.rate_limited))
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

async fn add_refusals(conn: &mut SqliteConnection, r: &RefusalRow) -> Result<(), StoreError> {
    let e = &r.sample;
    sqlx::query(
        "INSERT INTO audit_refusals (minute, reason, network, count, first_at, key_id, actor, method, \
         path, status, client_ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (minute, reason, network) DO UPDATE SET count = count + excluded.count",
    )
    .bind(r.minute * 1_000_000)
    .bind(r.reason.as_str())
    .bind(&r.network)
    .bind(count(r.count))
    .bind(micros(e.at))
    .bind(e.key_id.map(|k| k.to_string()))
    .bind(e.actor.as_deref())
    .bind(truncate(e.method.as_str(), MAX_AUDIT_METHOD))
    .bind(truncate(&e.path, MAX_AUDIT_PATH))
    .bind(e.status.map(i64::from))
    .bind(e.client_ip.map(|ip| ip.to_string()))
    .bind(e.user_agent.as_deref().map(|ua| truncate(ua, MAX_USER_AGENT)))
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// A count as SQLite's integer.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let get = |e| store_error(e);
    let at: i64 = row.try_get("at").map_err(get)?;
    let outcome: String = row.try_get("outcome").map_err(get)?;
    let status: Option<i64> = row.try_get("status").map_err(get)?;
    Ok(AuditEvent {
        id: Some(row.try_get("id").map_err(get)?),
        at: sql::from_micros(at)?,
        key_id: sql::opt_key_id(row.try_get("key_id").map_err(get)?)?,
        actor: shared(row.try_get("actor").map_err(get)?),
        subject: shared(row.try_get("subject").map_err(get)?),
        outcome: sql::outcome(&outcome)?,
        reason: sql::reason(row.try_get("reason").map_err(get)?)?,
        method: sql::method(row.try_get("method").map_err(get)?)?,
        path: row.try_get::<&str, _>("path").map_err(get)?.into(),
        status: sql::status(status)?,
        client_ip: sql::client_ip(row.try_get("client_ip").map_err(get)?)?,
        user_agent: row
            .try_get::<Option<&str>, _>("user_agent")
            .map_err(get)?
            .map(Into::into),
        created_key: sql::opt_key_id(row.try_get("created_key").map_err(get)?)?,
        key_management: false,
    })
}

fn shared(name: Option<String>) -> Option<std::sync::Arc<str>> {
    name.map(Into::into)
}

impl AuditSink for SqliteAuditLog {
    fn record(&self, event: AuditEvent) {
        self.writer.record(event);
    }

    fn record_boxed(&self, event: Box<AuditEvent>) {
        self.writer.record_boxed(event);
    }
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let limit = query.effective_limit();
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, key_id, actor, subject, outcome, reason, method, path, status, client_ip, \
             user_agent, created_key FROM audit_events WHERE 1 = 1",
        );
        if let Some(k) = query.key_id {
            q.push(" AND key_id = ").push_bind(k.to_string());
        }
        if let Some(a) = &query.actor {
            q.push(" AND actor = ").push_bind(a.clone());
        }
        if let Some(b) = query.before {
            q.push(" AND id < ").push_bind(b);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit as i64 + 1);
        let events = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(audit_page(events, limit))
    }

    async fn purge_before(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        // In chunks, so the write lock is never held for long.
        let mut total = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < ? LIMIT 5000)",
            )
            .bind(micros(before))
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
            total += n;
            if n == 0 {
                break;
            }
        }
        // The counts go with the rows: whole hours and minutes before `before`.
        let hour = micros(crate::audit::UsageBucket::Hour.start_of(before));
        sqlx::query("DELETE FROM audit_usage WHERE hour < ?")
            .bind(hour)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        sqlx::query("DELETE FROM audit_refusals WHERE minute < ?")
            .bind(micros(before) - micros(before).rem_euclid(60_000_000))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(total)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.writer.flush().await
    }

    /// One range read of the roll-up `audit_usage` (primary key `key_id,
    /// hour`): the chart never reads the events.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageCount>, StoreError> {
        let width = query.bucket.seconds() * 1_000_000;
        let from = micros(query.bucket.start_of(query.since));
        let rows = sqlx::query(USAGE_SQL)
            .bind(width)
            .bind(query.key_id.to_string())
            .bind(from)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let get = |e| store_error(e);
                Ok(UsageCount {
                    start: sql::from_micros(row.try_get("start").map_err(get)?)?,
                    success: unsigned(row.try_get("success").map_err(get)?)?,
                    refused: unsigned(row.try_get("refused").map_err(get)?)?,
                    rate_limited: unsigned(row.try_get("rate_limited").map_err(get)?)?,
                })
            })
            .collect()
    }

    async fn refusals(&self, since: OffsetDateTime) -> Result<Vec<RefusalCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT minute, reason, network, count, first_at, key_id, actor, method, path, status, \
             client_ip, user_agent FROM audit_refusals WHERE minute >= ? ORDER BY minute, reason, network",
        )
        .bind(micros(since) - micros(since).rem_euclid(60_000_000))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let get = |e| store_error(e);
                let reason: Option<String> = row.try_get("reason").map_err(get)?;
                let reason = sql::reason(reason)?.ok_or_else(|| sql::corrupt("no reason"))?;
                let status: Option<i64> = row.try_get("status").map_err(get)?;
                let mut sample = AuditEvent::new(
                    sql::from_micros(row.try_get("first_at").map_err(get)?)?,
                    crate::audit::AuditOutcome::Failure,
                    sql::method(row.try_get("method").map_err(get)?)?,
                    row.try_get::<String, _>("path").map_err(get)?,
                );
                sample.key_id = sql::opt_key_id(row.try_get("key_id").map_err(get)?)?;
                sample.actor = shared(row.try_get("actor").map_err(get)?);
                sample.reason = Some(reason);
                sample.status = sql::status(status)?;
                sample.client_ip = sql::client_ip(row.try_get("client_ip").map_err(get)?)?;
                sample.user_agent = row
                    .try_get::<Option<&str>, _>("user_agent")
                    .map_err(get)?
                    .map(Into::into);
                Ok(RefusalCount {
                    minute: sql::from_micros(row.try_get("minute").map_err(get)?)?,
                    reason,
                    network: row.try_get("network").map_err(get)?,
                    count: unsigned(row.try_get("count").map_err(get)?)?,
                    sample,
                })
            })
            .collect()
    }

    fn health(&self) -> AuditHealth {
        self.writer.health()
    }
}

/// A stored count, which is never negative.
fn unsigned(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| sql::corrupt("negative count"))
}

/// Requests per bucket (`?1` microseconds wide) and outcome for key `?2`
/// since `?3`, oldest first, from the hourly roll-up.
pub(crate) const USAGE_SQL: &str = "SELECT (hour / ?1) * ?1 AS start, \
     COALESCE(SUM(success), 0) AS success, COALESCE(SUM(refused), 0) AS refused, \
     COALESCE(SUM(rate_limited), 0) AS rate_limited \
     FROM audit_usage WHERE key_id = ?2 AND hour >= ?3 GROUP BY 1 ORDER BY 1";

#[cfg(test)]
mod tests {
    use super::USAGE_SQL;
    use crate::store::SqliteKeyStore;
    use sqlx::Row;

    /// The chart's query reads the roll-up's primary key, not the events.
    #[tokio::test]
    async fn usage_reads_the_roll_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteKeyStore::open(dir.path().join("k.db")).await.unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {USAGE_SQL}"))
            .bind(3_600_000_000_i64)
            .bind("AAAAAAAAAAA")
            .bind(0_i64)
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("SEARCH audit_usage USING PRIMARY KEY (key_id=? AND hour>?)"),
            "{plan}"
        );
    }
}
