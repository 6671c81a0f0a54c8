//! `last_used_at` / `last_used_ip` bookkeeping: at most one report per key per interval,
//! written in batches by a background task, never on the request path.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use crate::{store::KeyUse, KeyId, KeyStore};

const QUEUE: usize = 4096;
const BATCH: usize = 512;

enum Msg {
    Use(KeyUse),
    Flush(oneshot::Sender<()>),
}

pub(crate) struct UsageRecorder {
    tx: mpsc::Sender<Msg>,
    rx: parking_lot::Mutex<Option<mpsc::Receiver<Msg>>>,
    started: OnceLock<()>,
    store: Arc<dyn KeyStore>,
    pub interval: i64,
}

impl UsageRecorder {
    pub(super) fn new(store: Arc<dyn KeyStore>, interval: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            started: OnceLock::new(),
            store,
            interval: interval.as_nanos().min(i64::MAX as u128) as i64,
        }
    }

    /// Queues a use; dropped (with a debug log) if the queue is full.
    pub(super) fn report(&self, used: KeyUse) {
        self.ensure_started();
        if self.tx.try_send(Msg::Use(used)).is_err() {
            tracing::debug!(key_id = %used.id, "last-used queue full; use not recorded");
        }
    }

    /// Writes out everything queued so far.
    pub(super) async fn flush(&self) {
        self.ensure_started();
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Spawns the writer on first use, from inside the caller's runtime.
    fn ensure_started(&self) {
        self.started.get_or_init(|| {
            if let Some(rx) = self.rx.lock().take() {
                tokio::spawn(writer(rx, self.store.clone()));
            }
        });
    }
}

async fn writer(mut rx: mpsc::Receiver<Msg>, store: Arc<dyn KeyStore>) {
    let mut pending: HashMap<KeyId, KeyUse> = HashMap::new();
    while let Some(msg) = rx.recv().await {
        let mut acks = Vec::new();
        let mut next = Some(msg);
        // Take whatever else is queued, up to a batch.
        while let Some(m) = next {
            match m {
                Msg::Use(used) => {
                    let latest = pending.entry(used.id).or_insert(used);
                    *latest = crate::store::later_use(*latest, used);
                }
                Msg::Flush(ack) => acks.push(ack),
            }
            next = if pending.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !pending.is_empty() {
            let batch: Vec<_> = pending.drain().map(|(_, u)| u).collect();
            if let Err(e) = store.record_use(&batch).await {
                tracing::warn!(error = %e, keys = batch.len(), "could not record key last use");
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}
