//! `cargo run --example websocket`: the same keys on a WebSocket.
//!
//! Browsers cannot set `Authorization` on a WebSocket, so the token travels
//! as a subprotocol: `new WebSocket(url, ["Bearer", token])` sends
//! `Sec-WebSocket-Protocol: Bearer, <token>`. The `AuthLayer` reads it like a
//! header; `AuthenticatedUpgrade` selects `Bearer` (never echoing the token)
//! and hands the context to the socket. The socket then:
//! - limits messages to 1 per second (a `rate_limited` message, not a close);
//! - closes with 1008 (policy) as soon as its key is revoked, disabled or
//!   expires, or an edit takes the client's address off its allowlist; an
//!   edit that narrows the key's scopes narrows the socket's;
//! - closes with 1009 on a message over 64 KiB (`configure` changes it).
//!
//! Connections count against a per-address connect limit (10 per minute),
//! shared between instances with `--redis`.
//!
//! ```sh
//! cargo run --example websocket
//! websocat -H "Sec-WebSocket-Protocol: Bearer, $TOKEN" ws://127.0.0.1:3012/ws
//! ```

use std::net::SocketAddr;

use auth_axum::AuthenticatedUpgrade;
use auth_core::{store::open_store, Keys, NewKey, Principal, ScopeSet, TokenPrefix, Verifier};
use auth_ratelimit::{ws::MessageLimiter, Quota, RateLimiter, RedisStore, Rule};
use auth_tower::AuthLayer;
use axum::{extract::ws::Message, response::Response, routing::get, Extension, Router};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The key store: a SQLite file (created if missing) or a postgres:// URL
    #[arg(long, default_value = "data/websocket.db")]
    db: String,
    /// Share the connect limit with other instances through this Redis
    #[arg(long)]
    redis: Option<String>,
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:3012")]
    addr: SocketAddr,
}

/// Echoes text messages until the client leaves or the key stops working.
async fn echo(ws: AuthenticatedUpgrade, Extension(verifier): Extension<Verifier>) -> Response {
    ws.on_upgrade(&verifier, |mut socket| async move {
        let mut limiter = MessageLimiter::new(Quota::per_second(1));
        // `recv` closes the socket (1008) when the key ends, on any instance.
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(text) => match limiter.check() {
                    Ok(_) => {
                        let user = socket.context().effective_user();
                        Message::Text(format!("{user}: {text}").into())
                    }
                    Err(limited) => limited.message(),
                },
                Message::Close(_) => return,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = open_store(&args.db).await?;
    // The issuer and the verifier, from one hasher (argon2id defaults) and
    // one prefix, so they cannot disagree.
    let Keys {
        issuer, verifier, ..
    } = Keys::builder(store.keys.clone(), TokenPrefix::new("ws_")?).build();

    let key = issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "websocket example",
            ScopeSet::empty(),
        ))
        .await?;
    println!(
        "token for alice (shown once): {}",
        key.token.expose_secret()
    );

    let mut limits =
        RateLimiter::builder().rule(Rule::websocket_connects("connects", Quota::per_minute(10)));
    if let Some(url) = &args.redis {
        limits = limits.redis(RedisStore::open(url)?.with_prefix("websocket"));
    }
    let limits = limits.build()?;

    let app = Router::new()
        .route("/ws", get(echo))
        .layer(Extension(verifier.clone()))
        .layer(limits.layer())
        .layer(
            AuthLayer::builder(verifier)
                .audit(store.audit.clone())
                .build(),
        );

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on ws://{}/ws", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
