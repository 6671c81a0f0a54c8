//! `audit --follow` without missed events.
//!
//! Audit ids come from a sequence, but they become visible in commit
//! order, not id order: two instances writing batches at once can commit
//! id 11 before id 10. A reader that only asks for ids above the highest
//! it has seen would never see id 10. So the reader remembers which ids it
//! has printed above a *settled* id, re-reads everything above that id, and
//! moves it forward only when no transaction that could still commit an id
//! below it is open:
//!
//! - a [`Mark`] is the highest id handed out so far (the sequence's last
//!   value) and the transactions open right after: any id at or below the
//!   mark that is not yet visible belongs to one of them;
//! - once all of them have ended, every id at or below the mark is visible
//!   to the next read, or will never exist (a rolled-back batch).
//!
//! This relies on the identity column handing out ids one at a time
//! (`CACHE 1`, PostgreSQL's default): a session holding pre-allocated ids
//! could use one below the mark after it was taken. On SQLite, writers take
//! turns, so ids become visible in order and every mark is settled at once.

use std::{collections::BTreeSet, time::Duration};

use sqlx::{postgres::PgPool, sqlite::SqlitePool};

use crate::{db::Pool, error::CliError, output};

/// How often the start waits for older transactions between checks.
const START_POLL: Duration = Duration::from_millis(50);
/// After this long waiting at the start, say why.
const START_NOTE_AFTER: Duration = Duration::from_secs(2);

/// The highest id handed out at some moment, and the transactions that
/// were open then (PostgreSQL virtual transaction ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) upto: i64,
    open: Vec<String>,
}

/// Where the audit log's ids come from.
pub(crate) enum Horizon {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Horizon {
    pub(crate) fn of(pool: &Pool) -> Self {
        match pool {
            Pool::Sqlite(p) => Self::Sqlite(p.clone()),
            Pool::Postgres(p) => Self::Postgres(p.clone()),
        }
    }

    /// The highest id handed out so far, then the transactions open now.
    pub(crate) async fn mark(&self) -> Result<Mark, CliError> {
        match self {
            Self::Sqlite(p) => {
                let upto: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'",
                )
                .fetch_optional(p)
                .await?;
                Ok(Mark {
                    upto: upto.unwrap_or(0),
                    open: Vec::new(),
                })
            }
            Self::Postgres(p) => {
                // Read before the open transactions are listed: an id at or
                // below it that is not visible yet is held by one of them.
                // The catalog's name for it, quoted and qualified by PostgreSQL.
                let sequence: String =
                    sqlx::query_scalar("SELECT pg_get_serial_sequence('audit_events', 'id')")
                        .fetch_one(p)
                        .await?;
                let (last, called): (i64, bool) =
                    sqlx::query_as(&format!("SELECT last_value, is_called FROM {sequence}"))
                        .fetch_one(p)
                        .await?;
                let open: Vec<String> = sqlx::query_scalar(
                    "SELECT virtualxid FROM pg_locks WHERE locktype = 'virtualxid' AND granted \
                     AND virtualxid IS NOT NULL AND pid IS DISTINCT FROM pg_backend_pid()",
                )
                .fetch_all(p)
                .await?;
                Ok(Mark {
                    upto: if called { last } else { last - 1 },
                    open,
                })
            }
        }
    }

    /// Whether every transaction open at `mark` has ended.
    pub(crate) async fn settled(&self, mark: &Mark) -> Result<bool, CliError> {
        match self {
            Self::Sqlite(_) => Ok(true),
            Self::Postgres(_) if mark.open.is_empty() => Ok(true),
            Self::Postgres(p) => {
                let still: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'virtualxid' AND granted \
                     AND virtualxid = ANY($1)",
                )
                .bind(&mark.open)
                .fetch_one(p)
                .await?;
                Ok(still == 0)
            }
        }
    }

    /// Waits until every transaction open at `mark` has ended, so that
    /// every id at or below it can be read now. (As creating a replication
    /// slot does: a transaction left open blocks the start.)
    pub(crate) async fn wait(&self, mark: &Mark) -> Result<(), CliError> {
        let started = tokio::time::Instant::now();
        let mut noted = false;
        while !self.settled(mark).await? {
            if !noted && started.elapsed() >= START_NOTE_AFTER {
                output::note(&format!(
                    "waiting for {} database transaction(s) opened before this command to end, \
                     so that no event they write is missed",
                    mark.open.len()
                ));
                noted = true;
            }
            tokio::time::sleep(START_POLL).await;
        }
        Ok(())
    }
}

/// What the follower has printed: every id at or below `settled` is done
/// with, and `seen` holds the ids above it already read.
#[derive(Debug)]
pub(crate) struct Cursor {
    settled: i64,
    seen: BTreeSet<i64>,
    pending: Option<Mark>,
}

impl Cursor {
    /// Starts after `settled`, with `seen` (ids above it) already read.
    pub(crate) fn new(settled: i64, seen: impl IntoIterator<Item = i64>) -> Self {
        let mut seen: BTreeSet<i64> = seen.into_iter().collect();
        seen = seen.split_off(&settled.saturating_add(1));
        Self {
            settled,
            seen,
            pending: None,
        }
    }

    /// The id to read above.
    pub(crate) fn settled(&self) -> i64 {
        self.settled
    }

    /// Whether `id` is new (and remembers it).
    pub(crate) fn first_time(&mut self, id: i64) -> bool {
        id > self.settled && self.seen.insert(id)
    }

    /// Before a read: whether the pending mark can be settled after it.
    pub(crate) async fn ready(&self, horizon: &Horizon) -> Result<bool, CliError> {
        match &self.pending {
            Some(mark) => horizon.settled(mark).await,
            None => Ok(false),
        }
    }

    /// After a read: settles the pending mark if `ready` said so (every id
    /// at or below it was visible to that read), then takes a new mark if
    /// there are ids to forget.
    pub(crate) async fn advance(&mut self, ready: bool, horizon: &Horizon) -> Result<(), CliError> {
        if ready {
            if let Some(mark) = self.pending.take() {
                self.settled = self.settled.max(mark.upto);
                self.seen = self.seen.split_off(&self.settled.saturating_add(1));
            }
        }
        if self.pending.is_none() && !self.seen.is_empty() {
            self.pending = Some(horizon.mark().await?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_new_once_and_only_above_the_settled_one() {
        let mut c = Cursor::new(10, [9, 11, 12]);
        assert_eq!(c.settled(), 10);
        assert!(!c.first_time(9) && !c.first_time(10) && !c.first_time(11));
        assert!(c.first_time(13));
        assert!(!c.first_time(13));
    }
}
