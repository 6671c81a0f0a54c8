//! Revocations made by other instances on the same PostgreSQL database.
//!
//! Every revocation or rotation runs `pg_notify(CHANNEL, key_id)` in its own
//! transaction, so the notification is sent exactly when it commits. Each
//! store keeps one connection in `LISTEN` and publishes what it hears on its
//! [`ChangeFeed`]: no query per request, typically a few milliseconds from
//! commit to cache eviction.
//!
//! Notifications are lost while that connection is down, so then the feed
//! is marked out of sync (caches confirm every hit against the store) until
//! `LISTEN` is re-established, which resynchronises the caches (each cached
//! key is confirmed against the store on its next use). A lost connection is
//! seen at once when the socket closes; a silently dead one (a network
//! partition) by a heartbeat: the store notifies a channel of its own every
//! `heartbeat` and expects to hear it back. Heartbeats are sent on a
//! connection of their own, opened with the listener and never one of the
//! shared pool: a pool busy with requests must not look like a dead listener
//! (which would resync every cache). The connection is deemed dead when
//! three heartbeats in a row go unanswered (sent and not heard back before
//! the next, or not sent at all), counted in heartbeats rather than elapsed
//! time, so a machine too busy to run the listener on time is not mistaken
//! for a partition.

use std::{sync::Arc, time::Duration};

use rand::RngCore;
use sqlx::{
    postgres::{PgConnection, PgListener, PgPool},
    Connection,
};
use tokio::sync::{mpsc, oneshot};

use crate::store::{sql::store_error, ChangeFeed, StoreError};

/// The channel revocations are announced on (one per database).
pub(crate) const CHANNEL: &str = "auth_core_key_changes";
/// Heartbeats in a row not heard back before the connection is deemed dead.
const MISSED_HEARTBEATS: u32 = 3;
/// The least time one heartbeat (opening its connection if needed, then one
/// `pg_notify`) may take: a short period must not cancel a connection still
/// being set up on a loaded server.
const MIN_SEND_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Stops the listener (and frees its connection) when dropped.
#[derive(Debug)]
pub(crate) struct ListenerHandle {
    _stop: oneshot::Sender<()>,
}

struct Heartbeat {
    channel: String,
    every: Duration,
}

impl Heartbeat {
    fn new(every: Duration) -> Self {
        Self {
            // A channel of this store's own: heartbeats reach nobody else.
            channel: format!("auth_core_hb_{:016x}", rand::rngs::OsRng.next_u64()),
            every: every.max(Duration::from_millis(10)),
        }
    }
}

/// Starts listening; the first `LISTEN` is done before this returns (so the
/// feed starts in sync), and its failure is returned.
pub(crate) async fn start(
    pool: PgPool,
    feed: Arc<ChangeFeed>,
    heartbeat: Duration,
) -> Result<ListenerHandle, StoreError> {
    let hb = Heartbeat::new(heartbeat);
    let first = listen(&pool, &hb.channel).await.map_err(store_error)?;
    Ok(spawn(pool, feed, hb, Some(first)))
}

/// Starts listening in the background: the feed is out of sync until then.
pub(crate) fn start_detached(
    pool: PgPool,
    feed: Arc<ChangeFeed>,
    heartbeat: Duration,
) -> ListenerHandle {
    feed.set_in_sync(false);
    spawn(pool, feed, Heartbeat::new(heartbeat), None)
}

fn spawn(
    pool: PgPool,
    feed: Arc<ChangeFeed>,
    hb: Heartbeat,
    first: Option<Listening>,
) -> ListenerHandle {
    let (stop_tx, stop) = oneshot::channel();
    tokio::spawn(run(pool, feed, hb, first, stop));
    ListenerHandle { _stop: stop_tx }
}

/// The `LISTEN` connection and the one heartbeats are sent on.
struct Listening {
    listener: PgListener,
    sender: PgConnection,
}

/// Opens both connections: the feed is only declared in sync once
/// heartbeats can be sent as well as heard.
async fn listen(pool: &PgPool, heartbeat_channel: &str) -> Result<Listening, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection at once instead of reconnecting inside recv.
    listener.eager_reconnect(false);
    listener.listen_all([CHANNEL, heartbeat_channel]).await?;
    let sender = open_sender(pool).await?;
    Ok(Listening { listener, sender })
}

/// A connection with the pool's connect options, outside the pool.
async fn open_sender(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect_with(&pool.connect_options()).await
}

async fn run(
    pool: PgPool,
    feed: Arc<ChangeFeed>,
    hb: Heartbeat,
    mut first: Option<Listening>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let listening = match first.take() {
            Some(l) => l,
            None => {
                let attempt = tokio::select! {
                    _ = &mut stop => return,
                    r = listen(&pool, &hb.channel) => r,
                };
                match attempt {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for key changes");
                        tokio::select! {
                            _ = &mut stop => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        backoff = MIN_BACKOFF;
        if !feed.is_in_sync() {
            tracing::info!("listening for key changes again; caches resynchronised");
            feed.set_in_sync(true);
        }
        let why = tokio::select! {
            _ = &mut stop => return,
            why = serve(listening, &pool, &feed, &hb) => why,
        };
        tracing::warn!(reason = %why, "key change notifications lost; confirming cached keys against the store until re-synchronised");
        feed.set_in_sync(false);
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes notifications until the connection is lost; returns why.
async fn serve(listening: Listening, pool: &PgPool, feed: &ChangeFeed, hb: &Heartbeat) -> String {
    let Listening {
        mut listener,
        sender,
    } = listening;
    // The listener is read by a task of its own so that the receive is
    // never cancelled half-way (heartbeats below tick independently).
    let (tx, mut rx) = mpsc::channel::<Result<(String, String), String>>(256);
    let _reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let msg = match listener.try_recv().await {
                Ok(Some(n)) => Ok((n.channel().to_owned(), n.payload().to_owned())),
                Ok(None) => Err("connection closed".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            let end = msg.is_err();
            if tx.send(msg).await.is_err() || end {
                return;
            }
        }
    }));
    let mut tick = tokio::time::interval(hb.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send_timeout = hb.every.max(MIN_SEND_TIMEOUT);
    // Heartbeats sent (or attempted) since the last one heard back.
    let mut unanswered = 0u32;
    // Reopened on the next tick after a failed send.
    let mut sender = Some(sender);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Ok((channel, payload))) if channel == CHANNEL => publish(feed, &payload),
                Some(Ok(_)) => unanswered = 0,
                Some(Err(why)) => return why,
                None => return "listener stopped".to_owned(),
            },
            _ = tick.tick() => {
                if unanswered >= MISSED_HEARTBEATS {
                    return "heartbeat not heard back".to_owned();
                }
                unanswered += 1;
                let sent = tokio::time::timeout(send_timeout, send_heartbeat(&mut sender, pool, &hb.channel)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    sender = None;
                    tracing::debug!("heartbeat not sent");
                }
            }
        }
    }
}

/// Sends one heartbeat on the heartbeat connection, opening it if needed.
async fn send_heartbeat(
    sender: &mut Option<PgConnection>,
    pool: &PgPool,
    channel: &str,
) -> Result<(), sqlx::Error> {
    let conn = match sender {
        Some(c) => c,
        None => sender.insert(open_sender(pool).await?),
    };
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(conn)
        .await?;
    Ok(())
}

fn publish(feed: &ChangeFeed, payload: &str) {
    // What is not understood drops everything rather than miss a revocation.
    feed.publish(&crate::store::change_payload::decode(payload));
}
