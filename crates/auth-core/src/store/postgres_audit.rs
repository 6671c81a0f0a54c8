//! The audit log in PostgreSQL, written in batches off the request path.

use async_trait::async_trait;
use sqlx::{
    postgres::{PgPool, PgRow},
    Postgres, QueryBuilder, Row,
};
use time::OffsetDateTime;

use super::{
    audit_writer::{AuditWriter, BatchSink},
    sql::{self, store_error, truncate, MAX_AUDIT_METHOD, MAX_AUDIT_PATH},
    AuditBatching, StoreError,
};
use crate::{
    audit_page, AuditEvent, AuditLog, AuditPage, AuditQuery, AuditSink, UsageCount, UsageQuery,
    MAX_USER_AGENT,
};

/// A durable, queryable [`AuditLog`] in the key store's PostgreSQL database.
///
/// [`AuditSink::record`] never waits: events go through a bounded queue to
/// a background writer that inserts each batch with one statement. When the
/// queue is full, events are dropped, counted
/// ([`PostgresAuditLog::dropped_events`]) and a warning is logged. Call
/// [`AuditLog::flush`] on graceful shutdown.
///
/// Get one from [`PostgresKeyStore::audit_log`](crate::PostgresKeyStore::audit_log).
pub struct PostgresAuditLog {
    pool: PgPool,
    writer: AuditWriter,
}

impl std::fmt::Debug for PostgresAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAuditLog")
            .field("dropped_events", &self.dropped_events())
            .finish_non_exhaustive()
    }
}

impl PostgresAuditLog {
    pub(crate) fn new(pool: PgPool, batching: &AuditBatching) -> Self {
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

struct Sink(PgPool);

#[derive(Default)]
struct Columns {
    at: Vec<OffsetDateTime>,
    key_id: Vec<Option<String>>,
    actor: Vec<Option<String>>,
    subject: Vec<Option<String>>,
    outcome: Vec<&'static str>,
    reason: Vec<Option<&'static str>>,
    method: Vec<String>,
    path: Vec<String>,
    status: Vec<Option<i32>>,
    client_ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    created_key: Vec<Option<String>>,
}

#[async_trait]
impl BatchSink for Sink {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut c = Columns::default();
        for e in events {
            c.at.push(e.at);
            c.key_id.push(e.key_id.map(|k| k.to_string()));
            c.created_key.push(e.created_key.map(|k| k.to_string()));
            c.actor.push(e.actor.clone());
            c.subject.push(e.subject.clone());
            c.outcome.push(e.outcome.as_str());
            c.reason.push(e.reason.map(|r| r.as_str()));
            c.method
                .push(truncate(&e.method, MAX_AUDIT_METHOD).to_owned());
            c.path.push(truncate(&e.path, MAX_AUDIT_PATH).to_owned());
            c.status.push(e.status.map(i32::from));
            c.client_ip.push(e.client_ip.map(|ip| ip.to_string()));
            c.user_agent.push(
                e.user_agent
                    .as_deref()
                    .map(|ua| truncate(ua, MAX_USER_AGENT).to_owned()),
            );
        }
        // One statement for the whole batch: arrays, unnested into rows.
        sqlx::query(
            "INSERT INTO audit_events (at, key_id, actor, subject, outcome, reason, method, path, \
             status, client_ip, user_agent, created_key) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::int4[], $10::text[], $11::text[], $12::text[])",
        )
        .bind(c.at)
        .bind(c.key_id)
        .bind(c.actor)
        .bind(c.subject)
        .bind(c.outcome)
        .bind(c.reason)
        .bind(c.method)
        .bind(c.path)
        .bind(c.status)
        .bind(c.client_ip)
        .bind(c.user_agent)
        .bind(c.created_key)
        .execute(&self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

fn decode(row: &PgRow) -> Result<AuditEvent, StoreError> {
    let get = |e| store_error(e);
    let outcome: String = row.try_get("outcome").map_err(get)?;
    let status: Option<i32> = row.try_get("status").map_err(get)?;
    Ok(AuditEvent {
        id: Some(row.try_get("id").map_err(get)?),
        at: row.try_get("at").map_err(get)?,
        key_id: sql::opt_key_id(row.try_get("key_id").map_err(get)?)?,
        actor: row.try_get("actor").map_err(get)?,
        subject: row.try_get("subject").map_err(get)?,
        outcome: sql::outcome(&outcome)?,
        reason: sql::reason(row.try_get("reason").map_err(get)?)?,
        method: row.try_get("method").map_err(get)?,
        path: row.try_get("path").map_err(get)?,
        status: sql::status(status.map(i64::from))?,
        client_ip: sql::client_ip(row.try_get("client_ip").map_err(get)?)?,
        user_agent: row.try_get("user_agent").map_err(get)?,
        created_key: sql::opt_key_id(row.try_get("created_key").map_err(get)?)?,
    })
}

impl AuditSink for PostgresAuditLog {
    fn record(&self, event: AuditEvent) {
        self.writer.record(event);
    }
}

#[async_trait]
impl AuditLog for PostgresAuditLog {
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let limit = query.effective_limit();
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT id, at, key_id, actor, subject, outcome, reason, method, path, status, client_ip, \
             user_agent, created_key FROM audit_events WHERE TRUE",
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
        // In chunks, so no statement holds locks on millions of rows.
        let mut total = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 LIMIT 5000)",
            )
            .bind(before)
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

    /// One range scan of the index `audit_events_by_key_time`
    /// (`key_id, at, outcome, reason`).
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageCount>, StoreError> {
        let from = query.bucket.start_of(query.since);
        let rows = sqlx::query(
            "SELECT (floor(extract(epoch FROM at)::float8 / $1::float8) * $1::float8)::int8 AS start, \
             count(*) FILTER (WHERE outcome = 'success') AS success, \
             count(*) FILTER (WHERE outcome = 'failure' AND reason IS DISTINCT FROM 'rate_limited') AS refused, \
             count(*) FILTER (WHERE outcome = 'failure' AND reason = 'rate_limited') AS rate_limited \
             FROM audit_events WHERE key_id = $2 AND at >= $3 GROUP BY 1 ORDER BY 1",
        )
        .bind(query.bucket.seconds() as f64)
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
                let start: i64 = row.try_get("start").map_err(get)?;
                Ok(UsageCount {
                    start: OffsetDateTime::from_unix_timestamp(start)
                        .map_err(|_| sql::corrupt("invalid bucket start"))?,
                    success: count("success")?,
                    refused: count("refused")?,
                    rate_limited: count("rate_limited")?,
                })
            })
            .collect()
    }
}
