//! Running an example in production: health checks, Prometheus metrics and
//! log output, the same in every example.
//!
//! - `GET /health/live`: 200 while the process serves HTTP.
//! - `GET /health/ready`: 200 when the key store answers a ping and the
//!   change feed is in sync (revocations made elsewhere are being
//!   delivered); otherwise 503 with a JSON body naming the failing part.
//!   With an audit log ([`mount_with_audit`]), a log that sheds events or
//!   cannot write makes the answer `"status": "degraded"` (still 200: the
//!   instance serves correctly, its audit rows are counted but incomplete).
//! - `GET /metrics`: every `keygate_*` metric the libraries record, in the
//!   Prometheus text format (metrics-exporter-prometheus), on a listener of
//!   its own (`--metrics-addr`, e.g. `127.0.0.1:9100`), never on the public
//!   one: the counts tell an outsider about traffic and refusals. Without
//!   the flag there is no metrics endpoint.
//!
//! The health routes sit outside authentication and rate limits, as probes
//! expect; they tell nothing but "live" and "ready".

use std::{
    io::IsTerminal,
    sync::{Arc, OnceLock},
    time::Duration,
};

use auth_core::{audit::AuditLog, KeyStore, Verifier};
use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// A readiness ping slower than this counts as a failure.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Environment variable selecting the log format (`text` or `json`) when
/// `--log-format` is not given.
pub const LOG_FORMAT_ENV: &str = "KEYGATE_LOG_FORMAT";

/// Histogram buckets (seconds) for every `*_seconds` metric: from a cached
/// check's store read to a slow argon2 run.
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// `router` with `/health/live` and `/health/ready` added; the readiness
/// check uses the verifier's key store. Metrics are served apart:
/// [`metrics_router`].
pub fn mount(router: Router, verifier: &Verifier) -> Router {
    prometheus();
    router.merge(routes(verifier.store().clone()))
}

/// As [`mount`], with `audit`'s health in the readiness answer.
pub fn mount_with_audit(router: Router, verifier: &Verifier, audit: Arc<dyn AuditLog>) -> Router {
    prometheus();
    router.merge(routes_with(verifier.store().clone(), Some(audit)))
}

/// The health routes for `store`.
pub fn routes(store: Arc<dyn KeyStore>) -> Router {
    routes_with(store, None)
}

fn routes_with(store: Arc<dyn KeyStore>, audit: Option<Arc<dyn AuditLog>>) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "live" })) }),
        )
        .route(
            "/health/ready",
            get(move || ready(store.clone(), audit.clone())),
        )
}

/// `GET /metrics`, for the metrics listener (`--metrics-addr`) only.
pub fn metrics_router() -> Router {
    let handle = prometheus();
    Router::new().route("/metrics", get(move || metrics(handle.clone())))
}

/// The process-wide Prometheus recorder, installed on first use. `None` if
/// another recorder was installed first (then `/metrics` answers 404).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed: /metrics is off");
                    None
                }
            }
        })
        .clone()
}

async fn metrics(handle: Option<PrometheusHandle>) -> Response {
    let Some(handle) = handle else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Drains histogram samples into their buckets (bounded memory).
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

async fn ready(store: Arc<dyn KeyStore>, audit: Option<Arc<dyn AuditLog>>) -> Response {
    let key_store = match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: key store unreachable");
            "unreachable"
        }
        Err(_) => {
            tracing::warn!(timeout = ?PING_TIMEOUT, "readiness: key store ping timed out");
            "unreachable"
        }
    };
    let change_feed = if store.changes().is_in_sync() {
        "in_sync"
    } else {
        "out_of_sync"
    };
    let mut failing = Vec::new();
    if key_store != "ok" {
        failing.push("key_store");
    }
    if change_feed != "in_sync" {
        failing.push("change_feed");
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let audit = audit.map(|log| log.health());
    let degraded = audit.is_some_and(|h| h.is_degraded());
    let mut body = json!({
        "status": match (failing.is_empty(), degraded) {
            (false, _) => "not_ready",
            (true, true) => "degraded",
            (true, false) => "ready",
        },
        "failing": failing,
        "checks": { "key_store": key_store, "change_feed": change_feed },
    });
    if let Some(h) = audit {
        let state = if h.store_failing {
            "store_failing"
        } else if h.shed_recently {
            "shedding"
        } else {
            "ok"
        };
        body["checks"]["audit"] = json!(state);
        body["audit"] = json!({ "queued": h.queued, "shed_total": h.shed_total });
    }
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Log format: human-readable text, or one JSON object per line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text; colours only when stderr is a terminal (and NO_COLOR is unset).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The format asked for by `--log-format` (read before clap parses, so
/// that parse errors are logged in it too), else by `KEYGATE_LOG_FORMAT`.
pub fn log_format() -> LogFormat {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--log-format=")
            .map(str::to_owned)
            .or_else(|| (a == "--log-format").then(|| args.get(i + 1).cloned().unwrap_or_default()))
    });
    let asked = from_args.or_else(|| std::env::var(LOG_FORMAT_ENV).ok());
    match asked.as_deref().map(str::trim) {
        Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise, in [`log_format`].
/// Span fields use OpenTelemetry's names where one exists
/// (`http.request.method`, `url.path`, `user.id`; see `auth_tower::trace`).
pub fn init_logging() {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = colours_wanted(std::io::stderr().is_terminal());
    let _ = subscriber(log_format(), ansi, filter, std::io::stderr).try_init();
}

/// The log subscriber: text (with colours only if `ansi`) or JSON lines
/// (the event's fields at the top level, the current span under `span`).
pub fn subscriber<W>(
    format: LogFormat,
    ansi: bool,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .into(),
        LogFormat::Text => builder.with_ansi(ansi).finish().into(),
    }
}

/// Colours only on a terminal, and never with `NO_COLOR` set (no-color.org).
pub fn colours_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
