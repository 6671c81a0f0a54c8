//! The audit log in the SQLite file, written in batches off the request path.

use async_trait::async_trait;
use sqlx::{sqlite::SqlitePool, sqlite::SqliteRow, QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;

use super::{
    audit_writer::{AuditWriter, BatchSink},
    sql::{self, micros, store_error, truncate, MAX_AUDIT_METHOD, MAX_AUDIT_PATH},
    AuditBatching, StoreError,
};
use crate::{
    audit_page, AuditEvent, AuditLog, AuditPage, AuditQuery, AuditSink, UsageCount, UsageQuery,
    MAX_USER_AGENT,
};

/// A durable, queryable [`AuditLog`] in the key store's SQLite file.
///
/// [`AuditSink::record`] never waits: events go through a bounded queue to
/// a background writer that inserts them in batches. When the queue is full,
/// events are dropped, counted ([`SqliteAuditLog::dropped_events`]) and a
/// warning is logged. Call [`AuditLog::flush`] on graceful shutdown.
///
/// Get one from [`SqliteKeyStore::audit_log`](crate::SqliteKeyStore::audit_log).
pub struct SqliteAuditLog {
    pool: SqlitePool,
    writer: AuditWriter,
}

impl std::fmt::Debug for SqliteAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAuditLog")
            .field("dropped_events", &self.dropped_events())
            .finish_non_exhaustive()
    }
}

impl SqliteAuditLog {
    pub(crate) fn new(pool: SqlitePool, batching: &AuditBatching) -> Self {
        let writer = AuditWriter::spawn(Sink(pool.clone()), batching);
        Self { pool, writer }
    }

    /// Events dropped so far because the queue was full or the database
    /// refused a batch.
    pub fn dropped_events(&self) -> u64 {
        self.writer.dropped()
    }

    pub(crate) fn writer(&self) -> &AuditWriter {
        &self.writer
    }
}

struct Sink(SqlitePool);

#[async_trait]
impl BatchSink for Sink {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.0.begin().await.map_err(store_error)?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (at, key_id, actor, subject, outcome, reason, method, path, \
                 status, client_ip, user_agent, created_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(micros(e.at))
            .bind(e.key_id.map(|k| k.to_string()))
            .bind(e.actor.as_deref())
            .bind(e.subject.as_deref())
            .bind(e.outcome.as_str())
            .bind(e.reason.map(|r| r.as_str()))
            .bind(truncate(&e.method, MAX_AUDIT_METHOD))
            .bind(truncate(&e.path, MAX_AUDIT_PATH))
            .bind(e.status.map(i64::from))
            .bind(e.client_ip.map(|ip| ip.to_string()))
            .bind(e.user_agent.as_deref().map(|ua| truncate(ua, MAX_USER_AGENT)))
            .bind(e.created_key.map(|k| k.to_string()))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }
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
        actor: row.try_get("actor").map_err(get)?,
        subject: row.try_get("subject").map_err(get)?,
        outcome: sql::outcome(&outcome)?,
        reason: sql::reason(row.try_get("reason").map_err(get)?)?,
        method: row.try_get("method").map_err(get)?,
        path: row.try_get("path").map_err(get)?,
        status: sql::status(status)?,
        client_ip: sql::client_ip(row.try_get("client_ip").map_err(get)?)?,
        user_agent: row.try_get("user_agent").map_err(get)?,
        created_key: sql::opt_key_id(row.try_get("created_key").map_err(get)?)?,
    })
}

impl AuditSink for SqliteAuditLog {
    fn record(&self, event: AuditEvent) {
        self.writer.record(event);
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
                return Ok(total);
            }
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.writer.flush().await
    }

    /// One range read of the index `audit_events_by_key_time`
    /// (`key_id, at, outcome, reason`): no table rows are visited.
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
                let count = |name| -> Result<u64, StoreError> {
                    let n: i64 = row.try_get(name).map_err(get)?;
                    u64::try_from(n).map_err(|_| sql::corrupt("negative count"))
                };
                Ok(UsageCount {
                    start: sql::from_micros(row.try_get("start").map_err(get)?)?,
                    success: count("success")?,
                    refused: count("refused")?,
                    rate_limited: count("rate_limited")?,
                })
            })
            .collect()
    }
}

/// Requests per bucket (`?1` microseconds wide) and outcome for key `?2`
/// since `?3`, oldest first.
pub(crate) const USAGE_SQL: &str = "SELECT (at / ?1) * ?1 AS start, \
     COALESCE(SUM(outcome = 'success'), 0) AS success, \
     COALESCE(SUM(outcome = 'failure' AND reason IS NOT 'rate_limited'), 0) AS refused, \
     COALESCE(SUM(outcome = 'failure' AND reason IS 'rate_limited'), 0) AS rate_limited \
     FROM audit_events WHERE key_id = ?2 AND at >= ?3 GROUP BY 1 ORDER BY 1";

#[cfg(test)]
mod tests {
    use super::USAGE_SQL;
    use crate::SqliteKeyStore;
    use sqlx::Row;

    /// The chart's query reads the covering index, not the table.
    #[tokio::test]
    async fn usage_reads_the_covering_index() {
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
            plan.contains("USING COVERING INDEX audit_events_by_key_time (key_id=? AND at>?)"),
            "{plan}"
        );
    }
}
