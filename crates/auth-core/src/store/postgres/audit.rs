//! The audit log in PostgreSQL, written in batches off the request path.

use async_trait::async_trait;
use sqlx::{
    postgres::{PgPool, PgRow},
    Postgres, QueryBuilder, Row,
};
use time::OffsetDateTime;

use crate::store::{
    audit_writer::{AuditWriter, Batch, BatchSink},
    sql::{self, store_error, truncate, MAX_AUDIT_METHOD, MAX_AUDIT_PATH},
    AuditBatching, StoreError,
};
use crate::{
    audit::page as audit_page, audit::AuditHealth, audit::AuditLog, audit::AuditOutcome,
    audit::AuditPage, audit::AuditQuery, audit::RefusalCount, audit::UsageCount, audit::UsageQuery,
    audit::MAX_USER_AGENT, AuditEvent, AuditSink,
};

/// A durable, queryable [`AuditLog`] in the key store's PostgreSQL database.
///
/// [`AuditSink::record`] never waits. What gets a row follows the recording
/// policy (see `docs/ARCHITECTURE.md`): key management and impersonation
/// always; every use of a real key; refusals naming no real key, and
/// limiter refusals, are counted per minute, reason and client network
/// ([`AuditLog::refusals`]). Rows go through a bounded queue to a writer
/// that inserts each batch with one statement, in one transaction with the
/// usage roll-up the activity chart reads. While the database is
/// unreachable the batch is retried; when the queue is full meanwhile, key
/// uses are shed: counted in the usage roll-up and
/// [`PostgresAuditLog::dropped_events`], and the log reports itself
/// degraded ([`AuditLog::health`]). Call [`AuditLog::flush`] on graceful
/// shutdown.
///
/// Get one from [`PostgresKeyStore::audit_log`](crate::store::PostgresKeyStore::audit_log).
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
    async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut c = Columns::default();
        for e in &batch.events {
            c.at.push(e.at);
            c.key_id.push(e.key_id.map(|k| k.to_string()));
            c.created_key.push(e.created_key.map(|k| k.to_string()));
            c.actor.push(e.actor.as_deref().map(str::to_owned));
            c.subject.push(e.subject.as_deref().map(str::to_owned));
            c.outcome.push(e.outcome.as_str());
            c.reason.push(e.reason.map(|r| r.as_str()));
            c.method
                .push(truncate(e.method.as_str(), MAX_AUDIT_METHOD).to_owned());
            c.path.push(truncate(&e.path, MAX_AUDIT_PATH).to_owned());
            c.status.push(e.status.map(i32::from));
            c.client_ip.push(e.client_ip.map(|ip| ip.to_string()));
            c.user_agent.push(
                e.user_agent
                    .as_deref()
                    .map(|ua| truncate(ua, MAX_USER_AGENT).to_owned()),
            );
        }
        let mut tx = self.0.begin().await.map_err(store_error)?;
        if !batch.events.is_empty() {
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
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        if !batch.usage.is_empty() {
            // Sorted by key and hour: instances adding to the same rows lock
            // them in one order.
            let u = &batch.usage;
            sqlx::query(
                "INSERT INTO audit_usage (key_id, hour, success, refused, rate_limited) \
                 SELECT k, to_timestamp(h), s, r, l FROM UNNEST($1::text[], $2::int8[], $3::int8[], \
                 $4::int8[], $5::int8[]) AS t(k, h, s, r, l) \
                 ON CONFLICT (key_id, hour) DO UPDATE SET success = audit_usage.success + excluded.success, \
                 refused = audit_usage.refused + excluded.refused, \
                 rate_limited = audit_usage.rate_limited + excluded.rate_limited",
            )
            .bind(u.iter().map(|d| d.key_id.clone()).collect::<Vec<_>>())
            .bind(u.iter().map(|d| d.hour).collect::<Vec<_>>())
            .bind(u.iter().map(|d| count(d.success)).collect::<Vec<_>>())
            .bind(u.iter().map(|d| count(d.refused)).collect::<Vec<_>>())
            .bind(u.iter().map(|d| count(d.rate_limited)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        if !batch.refusals.is_empty() {
            let r = &batch.refusals;
            let sample = |f: &dyn Fn(&AuditEvent) -> Option<String>| {
                r.iter().map(|r| f(&r.sample)).collect::<Vec<_>>()
            };
            sqlx::query(
                "INSERT INTO audit_refusals (minute, reason, network, count, first_at, key_id, actor, \
                 method, path, status, client_ip, user_agent) \
                 SELECT to_timestamp(m), reason, network, n, first_at, key_id, actor, method, path, \
                 status, client_ip, user_agent FROM UNNEST($1::int8[], $2::text[], $3::text[], \
                 $4::int8[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[], \
                 $10::int4[], $11::text[], $12::text[]) AS t(m, reason, network, n, first_at, key_id, \
                 actor, method, path, status, client_ip, user_agent) \
                 ON CONFLICT (minute, reason, network) DO UPDATE SET count = audit_refusals.count + excluded.count",
            )
            .bind(r.iter().map(|r| r.minute).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.network.clone()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| count(r.count)).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.sample.at).collect::<Vec<_>>())
            .bind(sample(&|e| e.key_id.map(|k| k.to_string())))
            .bind(sample(&|e| e.actor.as_deref().map(str::to_owned)))
            .bind(sample(&|e| Some(truncate(e.method.as_str(), MAX_AUDIT_METHOD).to_owned())))
            .bind(sample(&|e| Some(truncate(&e.path, MAX_AUDIT_PATH).to_owned())))
            .bind(r.iter().map(|r| r.sample.status.map(i32::from)).collect::<Vec<_>>())
            .bind(sample(&|e| e.client_ip.map(|ip| ip.to_string())))
            .bind(sample(&|e| {
                e.user_agent
                    .as_deref()
                    .map(|ua| truncate(ua, MAX_USER_AGENT).to_owned())
            }))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }
}

/// A count as PostgreSQL's `bigint`.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count, which is never negative.
fn unsigned(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| sql::corrupt("negative count"))
}

fn decode(row: &PgRow) -> Result<AuditEvent, StoreError> {
    let get = |e| store_error(e);
    let outcome: String = row.try_get("outcome").map_err(get)?;
    let status: Option<i32> = row.try_get("status").map_err(get)?;
    Ok(AuditEvent {
        id: Some(row.try_get("id").map_err(get)?),
        at: row.try_get("at").map_err(get)?,
        key_id: sql::opt_key_id(row.try_get("key_id").map_err(get)?)?,
        actor: shared(row.try_get("actor").map_err(get)?),
        subject: shared(row.try_get("subject").map_err(get)?),
        outcome: sql::outcome(&outcome)?,
        reason: sql::reason(row.try_get("reason").map_err(get)?)?,
        method: sql::method(row.try_get("method").map_err(get)?)?,
        path: row.try_get::<&str, _>("path").map_err(get)?.into(),
        status: sql::status(status.map(i64::from))?,
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

impl AuditSink for PostgresAuditLog {
    fn record(&self, event: AuditEvent) {
        self.writer.record(event);
    }

    fn record_boxed(&self, event: Box<AuditEvent>) {
        self.writer.record_boxed(event);
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
                break;
            }
        }
        // The counts go with the rows: whole hours and minutes before `before`.
        sqlx::query("DELETE FROM audit_usage WHERE hour < $1")
            .bind(crate::audit::UsageBucket::Hour.start_of(before))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        let s = before.unix_timestamp();
        sqlx::query("DELETE FROM audit_refusals WHERE minute < to_timestamp($1)")
            .bind(s - s.rem_euclid(60))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(total)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.writer.flush().await
    }

    /// One range scan of the roll-up `audit_usage` (primary key `key_id,
    /// hour`): the chart never reads the events.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageCount>, StoreError> {
        let from = query.bucket.start_of(query.since);
        let rows = sqlx::query(
            "SELECT (floor(extract(epoch FROM hour)::float8 / $1::float8) * $1::float8)::int8 AS start, \
             sum(success)::int8 AS success, sum(refused)::int8 AS refused, \
             sum(rate_limited)::int8 AS rate_limited \
             FROM audit_usage WHERE key_id = $2 AND hour >= $3 GROUP BY 1 ORDER BY 1",
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
                let start: i64 = row.try_get("start").map_err(get)?;
                Ok(UsageCount {
                    start: OffsetDateTime::from_unix_timestamp(start)
                        .map_err(|_| sql::corrupt("invalid bucket start"))?,
                    success: unsigned(row.try_get("success").map_err(get)?)?,
                    refused: unsigned(row.try_get("refused").map_err(get)?)?,
                    rate_limited: unsigned(row.try_get("rate_limited").map_err(get)?)?,
                })
            })
            .collect()
    }

    async fn refusals(&self, since: OffsetDateTime) -> Result<Vec<RefusalCount>, StoreError> {
        let s = since.unix_timestamp();
        let rows = sqlx::query(
            "SELECT minute, reason, network, count, first_at, key_id, actor, method, path, status, \
             client_ip, user_agent FROM audit_refusals WHERE minute >= to_timestamp($1) \
             ORDER BY minute, reason, network",
        )
        .bind(s - s.rem_euclid(60))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let get = |e| store_error(e);
                let reason: Option<String> = row.try_get("reason").map_err(get)?;
                let reason = sql::reason(reason)?.ok_or_else(|| sql::corrupt("no reason"))?;
                let status: Option<i32> = row.try_get("status").map_err(get)?;
                let mut sample = AuditEvent::new(
                    row.try_get("first_at").map_err(get)?,
                    AuditOutcome::Failure,
                    sql::method(row.try_get("method").map_err(get)?)?,
                    row.try_get::<String, _>("path").map_err(get)?,
                );
                sample.key_id = sql::opt_key_id(row.try_get("key_id").map_err(get)?)?;
                sample.actor = shared(row.try_get("actor").map_err(get)?);
                sample.reason = Some(reason);
                sample.status = sql::status(status.map(i64::from))?;
                sample.client_ip = sql::client_ip(row.try_get("client_ip").map_err(get)?)?;
                sample.user_agent = row
                    .try_get::<Option<&str>, _>("user_agent")
                    .map_err(get)?
                    .map(Into::into);
                Ok(RefusalCount {
                    minute: row.try_get("minute").map_err(get)?,
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
