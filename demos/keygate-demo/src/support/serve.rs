//! Serving an example: listen, answer until Ctrl-C or SIGTERM, then write
//! out what is still queued.

use std::net::SocketAddr;

use auth_core::Verifier;
use axum::Router;
use tokio::net::TcpListener;

use super::Backend;

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise; colours only on
/// a terminal, JSON lines with `--log-format json` (see [`super::ops`]).
pub fn init_tracing() {
    super::ops::init_logging();
}

/// Serves `router` on `addr` until Ctrl-C, then flushes the audit log and
/// the verifier's last-used queue. With `metrics`, `/metrics` is served on
/// that address (and only there).
pub async fn serve(
    router: Router,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    backend: &Backend,
    verifier: &Verifier,
) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{local}");
    if let Some(at) = metrics {
        let metrics = TcpListener::bind(at)
            .await
            .map_err(|e| format!("cannot listen on {at} for metrics: {e}"))?;
        println!("metrics:     http://{at}/metrics (keep it off the public network)");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, super::ops::metrics_router()).await {
                tracing::warn!(error = %e, "the metrics listener stopped");
            }
        });
    }
    println!("database:    {}", backend.location);
    // ConnectInfo gives the rate limiter and the audit log the client's address.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| format!("server error: {e}"))?;
    eprintln!("shutting down: writing out audit events and last-used times");
    backend.flush(verifier).await;
    Ok(())
}

/// Serves `router` on a free port of 127.0.0.1 in the background (tests).
pub async fn spawn(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    addr
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
