//! Revocations made by other processes on the same SQLite file.
//!
//! Every revocation or rotation appends its key id to `key_changes` in the
//! same transaction. A background task reads the rows past the last one it
//! saw (an indexed range scan, every 200 ms, off the request path) and
//! publishes them on the local [`ChangeFeed`]. While the file cannot be
//! read, the feed is marked out of sync so caches confirm every hit.

use std::{sync::Arc, time::Duration};

use sqlx::{sqlite::SqlitePool, Row};
use tokio::sync::oneshot;

use crate::store::{sql::store_error, ChangeFeed, KeyChange, StoreError};

/// How often the change log is read.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(200);
/// Most rows handled per poll; the rest come on the next one.
const PAGE: i64 = 1000;

/// Stops the watcher when dropped.
#[derive(Debug)]
pub(crate) struct Watcher {
    _stop: oneshot::Sender<()>,
}

/// The newest change-log sequence number.
pub(crate) async fn latest_seq(pool: &SqlitePool) -> Result<i64, StoreError> {
    sqlx::query("SELECT coalesce(max(seq), 0) FROM key_changes")
        .fetch_one(pool)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(store_error)
}

/// Starts watching for changes after `last_seq`.
pub(crate) fn spawn(pool: SqlitePool, feed: Arc<ChangeFeed>, last_seq: i64) -> Watcher {
    let (stop_tx, stop) = oneshot::channel();
    tokio::spawn(run(pool, feed, last_seq, stop));
    Watcher { _stop: stop_tx }
}

async fn run(
    pool: SqlitePool,
    feed: Arc<ChangeFeed>,
    mut last_seq: i64,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        match changes_after(&pool, last_seq).await {
            Ok(rows) => {
                if rows.first().is_some_and(|(seq, _)| *seq != last_seq + 1) {
                    // Rows were pruned before we read them: we cannot know
                    // which keys changed, so every cached entry goes.
                    feed.publish(&KeyChange::All);
                }
                for (seq, key) in rows {
                    last_seq = seq;
                    feed.publish(&crate::store::change_payload::decode(&key));
                }
                if !feed.is_in_sync() {
                    tracing::info!("key change log readable again; caches re-synchronised");
                    feed.set_in_sync(true);
                }
            }
            Err(e) => {
                if feed.is_in_sync() {
                    tracing::warn!(error = %e, "cannot read the key change log; confirming cached keys against the store");
                    feed.set_in_sync(false);
                }
            }
        }
    }
}

async fn changes_after(pool: &SqlitePool, seq: i64) -> Result<Vec<(i64, String)>, StoreError> {
    sqlx::query("SELECT seq, key_id FROM key_changes WHERE seq > ? ORDER BY seq LIMIT ?")
        .bind(seq)
        .bind(PAGE)
        .fetch_all(pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(store_error)
}
