//! Metrics, recorded through the [`metrics`] facade: nothing is exported
//! unless the application installs a recorder (e.g.
//! `metrics-exporter-prometheus`); without one each call is a no-op.
//!
//! Names follow Prometheus conventions; labels are low-cardinality only
//! (never a key id or a user id).
//!
//! | name | type | labels |
//! |---|---|---|
//! | `keygate_verifier_cache_total` | counter | `result` = `hit`, `miss` |
//! | `keygate_argon2_runs_total` | counter | `operation` = `hash`, `verify` |
//! | `keygate_argon2_duration_seconds` | histogram | `operation` |
//! | `keygate_store_errors_total` | counter | — |
//! | `keygate_store_read_duration_seconds` | histogram | — |
//! | `keygate_change_feed_in_sync` | gauge (1 or 0) | — |
//! | `keygate_audit_events_written_total` | counter | — |
//! | `keygate_audit_events_dropped_total` | counter | `cause` = `queue_full`, `write_failed` |

use std::{future::Future, time::Instant};

/// A verified-cache lookup on the request path hit.
#[inline]
pub(crate) fn cache_hit() {
    metrics::counter!("keygate_verifier_cache_total", "result" => "hit").increment(1);
}

/// A verified-cache lookup missed (the slow path follows).
#[inline]
pub(crate) fn cache_miss() {
    metrics::counter!("keygate_verifier_cache_total", "result" => "miss").increment(1);
}

/// One argon2 run (`hash` or `verify`) took `started.elapsed()`.
pub(crate) fn argon2_run(operation: &'static str, started: Instant) {
    metrics::counter!("keygate_argon2_runs_total", "operation" => operation).increment(1);
    metrics::histogram!("keygate_argon2_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}

/// A key-store read by the verifier, timed; a failure is counted.
pub(crate) async fn timed_read<T, E>(read: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = read.await;
    metrics::histogram!("keygate_store_read_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        store_error();
    }
    result
}

/// A key-store operation failed.
pub(crate) fn store_error() {
    metrics::counter!("keygate_store_errors_total").increment(1);
}

/// The change feed went in or out of sync.
pub(crate) fn change_feed_in_sync(in_sync: bool) {
    metrics::gauge!("keygate_change_feed_in_sync").set(if in_sync { 1.0 } else { 0.0 });
}

/// `n` audit events were written.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn audit_written(n: usize) {
    metrics::counter!("keygate_audit_events_written_total").increment(n as u64);
}

/// `n` audit events were dropped: `queue_full` or `write_failed`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn audit_dropped(cause: &'static str, n: usize) {
    metrics::counter!("keygate_audit_events_dropped_total", "cause" => cause).increment(n as u64);
}
