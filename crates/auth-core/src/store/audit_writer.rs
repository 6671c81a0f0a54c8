//! The batching writer behind the durable audit logs.
//!
//! `record` runs on the request path and never waits: it sorts the event
//! into its lane (see [`audit_policy`](super::audit_policy)). Rows of key
//! uses go through a bounded queue; key management and impersonation go
//! to a list of their own that is never shed; refusals naming no real key
//! are only counted. A background task writes each batch (rows, the usage
//! roll-up and the counted refusals) in one transaction. When the store
//! cannot keep up and the queue is full, a key use is shed: it is counted
//! in its key's usage and in `dropped`, and [`AuditWriter::health`] says
//! degraded for a minute. A batch the store refuses for being unreachable
//! is retried until it is written; `flush` waits until everything queued
//! before it is written.

use std::{
    mem,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::{
    sync::{mpsc, oneshot, Notify},
    time::Instant,
};

use super::audit_policy::{self, Lane, Limits, RefusalRow, Tally, UsageDelta, UsageTally};
use crate::{audit::AuditHealth, audit::AuditOutcome, store::StoreError, AuditEvent};

/// How a durable audit log queues, batches and aggregates its writes.
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
    refusal_rows_per_key: u32,
    networks_per_minute: usize,
}

impl Default for AuditBatching {
    fn default() -> Self {
        Self {
            queue_capacity: 131_072,
            max_batch: 4_096,
            linger: Duration::from_millis(50),
            refusal_rows_per_key: 100,
            networks_per_minute: 1_024,
        }
    }
}

impl AuditBatching {
    /// Defaults: a queue of 131 072 key uses (about two seconds of a full
    /// speed server, 30 MB at most), batches of up to 4 096, written at
    /// most 50 ms after their first event arrived; 100 refusal rows per key
    /// and minute; 1 024 client networks with counts of their own per minute.
    pub fn new() -> Self {
        Self::default()
    }

    /// Key uses held in memory waiting to be written; more are shed (and
    /// counted) while the store cannot keep up.
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

    /// Refusals of one real key that get a row of their own per minute; the
    /// rest are counted per reason and network, and in the key's usage.
    pub fn refusal_rows_per_key(mut self, n: u32) -> Self {
        self.refusal_rows_per_key = n;
        self
    }

    /// Client networks whose refusals are counted apart per minute; later
    /// networks of the same minute are counted together as `other`.
    pub fn networks_per_minute(mut self, n: usize) -> Self {
        self.networks_per_minute = n.max(1);
        self
    }

    /// The queue capacity.
    pub fn get_queue_capacity(&self) -> usize {
        self.queue_capacity
    }
}

/// One transaction's worth: rows, usage roll-up increments, counted refusals.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) events: Vec<AuditEvent>,
    pub(crate) usage: Vec<UsageDelta>,
    pub(crate) refusals: Vec<RefusalRow>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.usage.is_empty() && self.refusals.is_empty()
    }
}

/// Writes one batch in one transaction.
#[async_trait]
pub(crate) trait BatchSink: Send + Sync + 'static {
    async fn write(&self, batch: &Batch) -> Result<(), StoreError>;
}

enum Msg {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Attempts at a batch the store refuses for another reason than being
/// unreachable, or while a flush waits, before it is given up (and counted).
const WRITE_ATTEMPTS: u32 = 5;
/// Longest pause between two attempts at a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Counted refusals are written at least this often.
const TALLY_EVERY: Duration = Duration::from_secs(1);
/// Shedding makes the log degraded for this long.
const DEGRADED_FOR: Duration = Duration::from_secs(60);
/// Dropped-event warnings are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the request path and the writer task share.
struct Shared {
    /// Key management and impersonation: never shed.
    priority: Mutex<Vec<AuditEvent>>,
    tally: Mutex<Tally>,
    /// Wakes the writer for priority events.
    wake: Notify,
    dropped: Arc<AtomicU64>,
    shed: AtomicU64,
    /// Milliseconds after `started` of the last shed event, plus one; 0: never.
    last_shed_ms: AtomicU64,
    failing: AtomicBool,
    started: Instant,
    /// Milliseconds after `started` before which no new warning is logged.
    next_warning_ms: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

pub(crate) struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl AuditWriter {
    /// Starts the writer task. Must be called from within a Tokio runtime.
    pub(crate) fn spawn(sink: impl BatchSink, batching: &AuditBatching) -> Self {
        let (tx, rx) = mpsc::channel(batching.queue_capacity);
        let shared = Arc::new(Shared {
            priority: Mutex::new(Vec::new()),
            tally: Mutex::new(Tally::new(Limits {
                refusal_rows_per_key: batching.refusal_rows_per_key,
                networks_per_minute: batching.networks_per_minute,
            })),
            wake: Notify::new(),
            dropped: Arc::new(AtomicU64::new(0)),
            shed: AtomicU64::new(0),
            last_shed_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            started: Instant::now(),
            next_warning_ms: AtomicU64::new(0),
        });
        tokio::spawn(run(sink, rx, batching.clone(), shared.clone()));
        Self { tx, shared }
    }

    /// Sorts the event into its lane without waiting.
    pub(crate) fn record(&self, event: AuditEvent) {
        self.record_boxed(Box::new(event));
    }

    /// As [`record`](Self::record); a key use is queued in its box.
    pub(crate) fn record_boxed(&self, event: Box<AuditEvent>) {
        match audit_policy::lane(&event) {
            Lane::Priority => {
                self.shared.priority.lock().push(*event);
                self.shared.wake.notify_one();
            }
            Lane::Counted => self.shared.tally.lock().count(*event),
            Lane::Row => {
                if event.outcome == AuditOutcome::Failure {
                    let mut tally = self.shared.tally.lock();
                    if !tally.grant_refusal_row(&event) {
                        tally.count(*event);
                        return;
                    }
                }
                if let Err(e) = self.tx.try_send(Msg::Event(event)) {
                    let (mpsc::error::TrySendError::Full(msg)
                    | mpsc::error::TrySendError::Closed(msg)) = e;
                    if let Msg::Event(event) = msg {
                        self.shed(&event);
                    }
                }
            }
        }
    }

    /// The store is behind: `event` loses its row but is counted.
    fn shed(&self, event: &AuditEvent) {
        self.shared.tally.lock().count_shed(event);
        self.shared.shed.fetch_add(1, Ordering::Relaxed);
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.shared.now_ms();
        self.shared.last_shed_ms.store(now + 1, Ordering::Relaxed);
        crate::metrics::audit_dropped("queue_full", 1);
        let next = self.shared.next_warning_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .shared
                .next_warning_ms
                .compare_exchange(
                    next,
                    now + WARN_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                "audit store behind, queue full: key uses counted without their rows"
            );
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
            .map_err(|_| StoreError::unavailable("audit writer stopped"))?;
        done.await
            .unwrap_or_else(|_| Err(StoreError::unavailable("audit writer stopped")))
    }

    /// Events without a row: shed while the queue was full, or in a batch
    /// that could not be written.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The shared drop counter (for handles that outlive a borrow of the log).
    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.shared.dropped.clone()
    }

    /// Whether the writer keeps up.
    pub(crate) fn health(&self) -> AuditHealth {
        let last = self.shared.last_shed_ms.load(Ordering::Relaxed);
        let queued = (self.tx.max_capacity() - self.tx.capacity()) as u64
            + self.shared.priority.lock().len() as u64;
        AuditHealth {
            queued,
            shed_total: self.shared.shed.load(Ordering::Relaxed),
            shed_recently: last != 0
                && self.shared.now_ms() < last - 1 + DEGRADED_FOR.as_millis() as u64,
            store_failing: self.shared.failing.load(Ordering::Relaxed),
        }
    }
}

async fn run(
    sink: impl BatchSink,
    mut rx: mpsc::Receiver<Msg>,
    cfg: AuditBatching,
    shared: Arc<Shared>,
) {
    let mut tick = tokio::time::interval(TALLY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events: Vec<AuditEvent> = Vec::with_capacity(cfg.max_batch);
    let mut acks = Vec::new();
    // A batch was given up since the last flush: the next flush reports it.
    let mut failed: Option<StoreError> = None;
    let mut open = true;
    while open {
        let first = tokio::select! {
            msg = rx.recv() => msg,
            () = shared.wake.notified() => None,
            _ = tick.tick() => None,
        };
        let mut next = first;
        if next.is_none() && rx.is_closed() && rx.is_empty() {
            open = false;
        }
        // Fill the batch: a flush is answered at once; otherwise wait a
        // little for more, up to the batch size.
        let deadline = Instant::now() + cfg.linger;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => events.push(*e),
                Msg::Flush(ack) => acks.push(ack),
            }
            if events.len() < cfg.max_batch && acks.is_empty() {
                next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(msg)) => Some(msg),
                    Ok(None) => {
                        open = false;
                        None
                    }
                    Err(_) => None,
                };
            }
        }
        let mut batch = Batch {
            events: mem::take(&mut *shared.priority.lock()),
            ..Batch::default()
        };
        // The rows queued before a priority event go in its batch, and a
        // batch is written in the order its events happened: ids follow
        // time, whichever lane an event took.
        while events.len() < cfg.max_batch {
            match rx.try_recv() {
                Ok(Msg::Event(e)) => events.push(*e),
                Ok(Msg::Flush(ack)) => acks.push(ack),
                Err(_) => break,
            }
        }
        batch.events.append(&mut events);
        batch.events.sort_by_key(|e| e.at);
        let mut usage = UsageTally::default();
        for e in &batch.events {
            usage.add(e);
        }
        (batch.usage, batch.refusals) = shared.tally.lock().take(usage);
        if !batch.is_empty() {
            if let Err(e) = write(&sink, &batch, &shared, !acks.is_empty()).await {
                let n = batch.events.len();
                shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
                crate::metrics::audit_dropped("write_failed", n);
                tracing::error!(error = %e, events = n, "audit batch could not be written: dropped");
                failed = Some(e);
            }
        }
        if !acks.is_empty() {
            let failed = failed.take().map(Arc::new);
            for ack in acks.drain(..) {
                let result = match &failed {
                    None => Ok(()),
                    Some(e) => Err(StoreError::unavailable(WriteFailed(e.clone()))),
                };
                let _ = ack.send(result);
            }
        }
        if events.capacity() > cfg.max_batch * 2 {
            events = Vec::with_capacity(cfg.max_batch);
        }
    }
}

/// The error of a failed batch write, handed to every flush that waited
/// for the batch: it reads as the backend's error and has it as source.
#[derive(Debug)]
struct WriteFailed(Arc<StoreError>);

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::error::Error::source(&*self.0) {
            Some(source) => std::fmt::Display::fmt(source, f),
            None => std::fmt::Display::fmt(&self.0, f),
        }
    }
}

impl std::error::Error for WriteFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// Writes `batch`, retrying: without end while the store is unreachable and
/// no flush waits (new events are shed meanwhile, counted), up to
/// [`WRITE_ATTEMPTS`] otherwise.
async fn write(
    sink: &impl BatchSink,
    batch: &Batch,
    shared: &Shared,
    flush_waits: bool,
) -> Result<(), StoreError> {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match sink.write(batch).await {
            Ok(()) => {
                shared.failing.store(false, Ordering::Relaxed);
                crate::metrics::audit_written(batch.events.len());
                return Ok(());
            }
            Err(e) => {
                shared.failing.store(true, Ordering::Relaxed);
                let unreachable = matches!(e, StoreError::Unavailable(_));
                if attempt >= WRITE_ATTEMPTS && (flush_waits || !unreachable) {
                    return Err(e);
                }
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(error = %e, attempt, "audit batch write failed; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use time::OffsetDateTime;

    use super::*;
    use crate::{audit::AuditOutcome, KeyId, RejectReason};

    #[derive(Clone)]
    struct Recording {
        batches: Arc<Mutex<Vec<Batch>>>,
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

        fn rows(&self) -> Vec<AuditEvent> {
            let batches = self.batches.lock();
            batches.iter().flat_map(|b| b.events.clone()).collect()
        }

        fn usage(&self) -> (u64, u64, u64) {
            let batches = self.batches.lock();
            batches
                .iter()
                .flat_map(|b| &b.usage)
                .fold((0, 0, 0), |(s, f, r), u| {
                    (s + u.success, f + u.refused, r + u.rate_limited)
                })
        }

        fn refusals(&self) -> Vec<RefusalRow> {
            let batches = self.batches.lock();
            batches.iter().flat_map(|b| b.refusals.clone()).collect()
        }
    }

    #[async_trait]
    impl BatchSink for Recording {
        async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|_| StoreError::unavailable("closed"))?;
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::unavailable("down"));
            }
            self.batches.lock().push(Batch {
                events: batch.events.clone(),
                usage: batch.usage.clone(),
                refusals: batch.refusals.clone(),
            });
            Ok(())
        }
    }

    /// A request by `key`'s owner.
    fn used(key: KeyId) -> AuditEvent {
        let mut e = AuditEvent::new(
            OffsetDateTime::now_utc(),
            AuditOutcome::Success,
            http::Method::GET,
            "/",
        );
        e.key_id = Some(key);
        e.actor = Some("alice".into());
        e.status = Some(200);
        e
    }

    /// A garbage token from `ip`.
    fn garbage(ip: std::net::IpAddr) -> AuditEvent {
        let mut e = AuditEvent::new(
            OffsetDateTime::now_utc(),
            AuditOutcome::Failure,
            http::Method::GET,
            "/",
        );
        e.reason = Some(RejectReason::Malformed);
        e.status = Some(401);
        e.client_ip = Some(ip);
        e
    }

    #[tokio::test]
    async fn batches_and_flushes_everything_accepted() {
        let sink = Recording::new(1000);
        let w = AuditWriter::spawn(sink.clone(), &AuditBatching::new().max_batch(10));
        let key = KeyId::random();
        for _ in 0..25 {
            w.record(used(key));
        }
        w.flush().await.unwrap();
        let batches: Vec<usize> = sink.batches.lock().iter().map(|b| b.events.len()).collect();
        assert_eq!(batches.iter().sum::<usize>(), 25);
        assert!(batches.iter().all(|&n| n <= 10), "{batches:?}");
        assert_eq!(sink.usage(), (25, 0, 0));
        assert_eq!(w.dropped(), 0);
        assert!(!w.health().is_degraded());
    }

    /// Key management jumps the queue of key uses but not the clock: the
    /// uses recorded before it are written in its batch, ahead of it.
    #[tokio::test]
    async fn rows_are_written_in_the_order_events_happened_across_lanes() {
        let sink = Recording::new(0);
        let w = AuditWriter::spawn(sink.clone(), &AuditBatching::new().linger(Duration::ZERO));
        let key = KeyId::random();
        let start = OffsetDateTime::now_utc();
        let at = |i: i64| start + time::Duration::milliseconds(i);
        // The writer takes a first batch and blocks on the stalled store.
        w.record(used(key));
        keygate_test_support::eventually("the first batch taken", || async {
            w.health().queued == 0
        })
        .await;
        for i in 1..=20 {
            let mut e = used(key);
            e.at = at(i);
            if i % 5 == 0 {
                e.key_management = true;
            }
            w.record(e);
        }
        sink.gate.add_permits(1_000);
        w.flush().await.unwrap();
        let times: Vec<_> = sink.rows().iter().skip(1).map(|e| e.at).collect();
        assert_eq!(times, (1..=20).map(at).collect::<Vec<_>>());
    }

    /// The store stalls: garbage and limiter refusals never queue, the
    /// queue of key uses fills and sheds (counted in the usage roll-up, in
    /// `dropped` and in the health), key management is never shed, and
    /// once the store is back every count is exact.
    #[tokio::test]
    async fn a_stalled_store_sheds_by_the_policy() {
        let sink = Recording::new(0);
        let w = AuditWriter::spawn(
            sink.clone(),
            &AuditBatching::new()
                .queue_capacity(8)
                .max_batch(4)
                .linger(Duration::ZERO)
                .networks_per_minute(16),
        );
        let key = KeyId::random();
        // The writer takes a first batch and blocks on the stalled store.
        w.record(used(key));
        keygate_test_support::eventually("the first batch taken", || async {
            w.health().queued == 0
        })
        .await;
        for i in 0..5000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i * 256).into();
            w.record(garbage(ip));
        }
        // A limiter's refusals of requests that named no real key.
        let mut limited = garbage("192.0.2.1".parse().unwrap());
        limited.reason = Some(RejectReason::RateLimited);
        for _ in 0..300 {
            w.record(limited.clone());
        }
        for _ in 0..100 {
            w.record(used(key));
        }
        let mut created = used(key);
        created.method = http::Method::POST;
        created.created_key = Some(KeyId::random());
        for _ in 0..50 {
            w.record(created.clone());
        }
        // Only the queue of key uses filled: 8 queued, 92 shed.
        let health = w.health();
        assert_eq!(w.dropped(), 92);
        assert_eq!(health.shed_total, 92);
        assert!(health.is_degraded());
        assert_eq!(health.queued, 8 + 50);

        sink.gate.add_permits(1_000_000);
        w.flush().await.unwrap();
        let rows = sink.rows();
        assert_eq!(rows.iter().filter(|e| e.created_key.is_some()).count(), 50);
        let uses = rows
            .iter()
            .filter(|e| e.created_key.is_none() && e.outcome == AuditOutcome::Success)
            .count();
        assert_eq!(uses, 1 + 8);
        assert!(rows.iter().all(|e| e.reason.is_none()), "no refusal rows");
        // Every use counted in the key's usage, with or without a row.
        assert_eq!(sink.usage(), (1 + 100 + 50, 0, 0));
        // Garbage: exact counts, at most 16 networks and `other` a minute.
        let refusals = sink.refusals();
        let malformed: Vec<_> = refusals
            .iter()
            .filter(|r| r.reason == RejectReason::Malformed)
            .collect();
        assert_eq!(malformed.iter().map(|r| r.count).sum::<u64>(), 5000);
        let minutes = malformed
            .iter()
            .map(|r| r.minute)
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert!(malformed.len() <= 17 * minutes, "{}", malformed.len());
        let limited_rows: u64 = refusals
            .iter()
            .filter(|r| r.reason == RejectReason::RateLimited)
            .map(|r| r.count)
            .sum();
        assert_eq!(limited_rows, 300);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_retried_while_the_store_is_down() {
        let sink = Recording::new(1000);
        sink.failing.store(true, Ordering::SeqCst);
        let w = AuditWriter::spawn(sink.clone(), &AuditBatching::new());
        let key = KeyId::random();
        w.record(used(key));
        w.record(used(key));
        keygate_test_support::eventually("a failed write", || async { w.health().store_failing })
            .await;
        assert!(w.health().is_degraded());
        // Many attempts later the store is back: nothing was lost.
        tokio::time::sleep(Duration::from_secs(60)).await;
        sink.failing.store(false, Ordering::SeqCst);
        w.flush().await.unwrap();
        assert_eq!(sink.rows().len(), 2);
        assert_eq!(w.dropped(), 0);
        assert!(!w.health().store_failing);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_gives_up_on_a_store_that_stays_down() {
        let sink = Recording::new(1000);
        sink.failing.store(true, Ordering::SeqCst);
        let w = AuditWriter::spawn(
            sink.clone(),
            &AuditBatching::new().linger(Duration::from_secs(5)),
        );
        let key = KeyId::random();
        w.record(used(key));
        w.record(used(key));
        // The flush joins the batch: after a few attempts it is given up.
        assert!(w.flush().await.is_err());
        assert_eq!(w.dropped(), 2);
        sink.failing.store(false, Ordering::SeqCst);
        w.record(used(key));
        w.flush().await.unwrap();
        assert_eq!(sink.rows().len(), 1);
    }
}
