//! The batching writer behind the durable audit logs.
//!
//! `record` runs on the request path: it only `try_send`s into a bounded
//! queue. When the queue is full the event is dropped and counted, never
//! waited for. A background task takes events off the queue and writes them
//! in batches (one transaction each); `flush` waits until everything queued
//! before it is written.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{AuditEvent, StoreError};

/// How a durable audit log queues and batches its writes.
///
/// ```
/// use std::time::Duration;
/// use auth_core::store::AuditBatching;
/// let b = AuditBatching::new().queue_capacity(50_000).max_batch(1000).linger(Duration::from_millis(50));
/// assert_eq!(b.get_queue_capacity(), 50_000);
/// ```
#[derive(Clone, Debug)]
pub struct AuditBatching {
    queue_capacity: usize,
    max_batch: usize,
    linger: Duration,
}

impl Default for AuditBatching {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            max_batch: 500,
            linger: Duration::from_millis(100),
        }
    }
}

impl AuditBatching {
    /// Defaults: a queue of 10 000 events, batches of up to 500, written at
    /// most 100 ms after their first event arrived.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events held in memory waiting to be written; more are dropped (and counted).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Most events written in one transaction.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// How long a batch waits for more events before it is written.
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// The queue capacity.
    pub fn get_queue_capacity(&self) -> usize {
        self.queue_capacity
    }
}

/// Writes one batch of events in one transaction.
#[async_trait]
pub(crate) trait BatchSink: Send + Sync + 'static {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
}

enum Msg {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Attempts per batch before it is given up (and counted as dropped).
const WRITE_ATTEMPTS: u32 = 5;
/// Dropped-event warnings are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    started: Instant,
    /// Milliseconds after `started` before which no new warning is logged.
    next_warning_ms: AtomicU64,
}

impl AuditWriter {
    /// Starts the writer task. Must be called from within a Tokio runtime.
    pub(crate) fn spawn(sink: impl BatchSink, batching: &AuditBatching) -> Self {
        let (tx, rx) = mpsc::channel(batching.queue_capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(sink, rx, batching.clone(), dropped.clone()));
        Self {
            tx,
            dropped,
            started: Instant::now(),
            next_warning_ms: AtomicU64::new(0),
        }
    }

    /// Queues an event without waiting; drops and counts it if the queue is full.
    pub(crate) fn record(&self, event: AuditEvent) {
        if self.tx.try_send(Msg::Event(Box::new(event))).is_err() {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            crate::metrics::audit_dropped("queue_full", 1);
            self.warn_dropped(total);
        }
    }

    fn warn_dropped(&self, total: u64) {
        let now = self.started.elapsed().as_millis() as u64;
        let next = self.next_warning_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_warning_ms
                .compare_exchange(
                    next,
                    now + WARN_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(dropped_total = total, "audit queue full: events dropped");
        }
    }

    /// Waits until every event queued before this call is written.
    ///
    /// `Err` if a batch could not be written since the previous flush.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Flush(ack))
            .await
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))?;
        done.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("audit writer stopped".into())))
    }

    /// Events dropped so far: queue full, or a batch that could not be written.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The shared drop counter (for handles that outlive a borrow of the log).
    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

async fn run(
    sink: impl BatchSink,
    mut rx: mpsc::Receiver<Msg>,
    cfg: AuditBatching,
    dropped: Arc<AtomicU64>,
) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(cfg.max_batch);
    let mut acks = Vec::new();
    // A write failed since the last flush: the next flush reports it.
    let mut failed: Option<StoreError> = None;
    // Ends once every sender is gone and the queue is empty.
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let deadline = Instant::now() + cfg.linger;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => batch.push(*e),
                Msg::Flush(ack) => acks.push(ack),
            }
            // A flush is answered at once; otherwise wait a little for more.
            if batch.len() < cfg.max_batch && acks.is_empty() {
                next = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten();
            }
        }
        if !batch.is_empty() {
            let written = write_with_retries(&sink, &batch).await;
            if written.is_ok() {
                crate::metrics::audit_written(batch.len());
            }
            if let Err(e) = written {
                dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                crate::metrics::audit_dropped("write_failed", batch.len());
                tracing::error!(error = %e, events = batch.len(), "audit events could not be written: dropped");
                failed = Some(e);
            }
            batch.clear();
        }
        if !acks.is_empty() {
            let result = failed.take().map_or(Ok(()), Err);
            for ack in acks.drain(..) {
                let _ = ack.send(result.clone());
            }
        }
    }
}

async fn write_with_retries(sink: &impl BatchSink, batch: &[AuditEvent]) -> Result<(), StoreError> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match sink.write(batch).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= WRITE_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "audit batch write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use parking_lot::Mutex;
    use time::OffsetDateTime;

    use super::*;
    use crate::AuditOutcome;

    #[derive(Clone)]
    struct Recording {
        batches: Arc<Mutex<Vec<usize>>>,
        failing: Arc<AtomicBool>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Recording {
        /// A sink that lets `permits` writes through before blocking.
        fn new(permits: usize) -> Self {
            Self {
                batches: Arc::default(),
                failing: Arc::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(permits)),
            }
        }
    }

    #[async_trait]
    impl BatchSink for Recording {
        async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|_| StoreError::Unavailable("closed".into()))?;
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.batches.lock().push(events.len());
            Ok(())
        }
    }

    fn event() -> AuditEvent {
        AuditEvent {
            id: None,
            at: OffsetDateTime::now_utc(),
            key_id: None,
            actor: None,
            subject: None,
            outcome: AuditOutcome::Failure,
            reason: None,
            method: "GET".into(),
            path: "/".into(),
            status: Some(401),
            client_ip: None,
            user_agent: None,
            created_key: None,
        }
    }

    #[tokio::test]
    async fn batches_and_flushes_everything_accepted() {
        let sink = Recording::new(1000);
        let w = AuditWriter::spawn(sink.clone(), &AuditBatching::new().max_batch(10));
        for _ in 0..25 {
            w.record(event());
        }
        w.flush().await.unwrap();
        let batches = sink.batches.lock().clone();
        assert_eq!(batches.iter().sum::<usize>(), 25);
        assert!(batches.iter().all(|&n| n <= 10), "{batches:?}");
        assert_eq!(w.dropped(), 0);
    }

    #[tokio::test]
    async fn overload_drops_and_counts_without_blocking() {
        // The sink is blocked: the queue fills up and further events are dropped.
        let sink = Recording::new(0);
        let w = AuditWriter::spawn(
            sink.clone(),
            &AuditBatching::new().queue_capacity(4).max_batch(2),
        );
        for _ in 0..50 {
            w.record(event());
        }
        assert!(w.dropped() > 0);
        sink.gate.add_permits(1000);
        w.flush().await.unwrap();
        let written: usize = sink.batches.lock().iter().sum();
        assert_eq!(written as u64 + w.dropped(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_batches_are_counted_and_reported_by_flush() {
        let sink = Recording::new(1000);
        sink.failing.store(true, Ordering::SeqCst);
        let w = AuditWriter::spawn(sink.clone(), &AuditBatching::new());
        w.record(event());
        w.record(event());
        assert!(w.flush().await.is_err());
        assert_eq!(w.dropped(), 2);
        sink.failing.store(false, Ordering::SeqCst);
        w.record(event());
        w.flush().await.unwrap();
        assert_eq!(sink.batches.lock().iter().sum::<usize>(), 1);
    }
}
