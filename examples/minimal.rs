//! `cargo run --example minimal`: the smallest useful setup.
//!
//! One key store (a SQLite file by default, or `--db postgres://…`), one
//! verifier, the `AuthLayer` in front of a router, and a per-user rate limit
//! (shared between instances with `--redis redis://…`). On every start it
//! issues a key for `alice` and prints the token: it is shown this once and
//! stored only as an argon2id hash.
//!
//! ```sh
//! cargo run --example minimal
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3010/me
//! ```

use std::net::SocketAddr;

use auth_axum::Auth;
use auth_core::{store::open_store, Keys, NewKey, Principal, ScopeSet, TokenPrefix};
use auth_ratelimit::{Quota, RateLimiter, RedisStore, Rule};
use auth_tower::AuthLayer;
use axum::{routing::get, Json, Router};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The key store: a SQLite file (created if missing) or a postgres:// URL
    #[arg(long, default_value = "data/minimal.db")]
    db: String,
    /// Share the rate limits with other instances through this Redis
    #[arg(long)]
    redis: Option<String>,
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:3010")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = open_store(&args.db).await?;

    // The issuer and the verifier, from one hasher (argon2id defaults) and
    // one prefix, so they cannot disagree.
    let Keys {
        issuer, verifier, ..
    } = Keys::builder(store.keys.clone(), TokenPrefix::new("mk_")?).build();

    let key = issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "minimal example",
            ScopeSet::empty(),
        ))
        .await?;
    println!(
        "token for alice (shown once): {}",
        key.token.expose_secret()
    );

    let mut limits = RateLimiter::builder().rule(Rule::per_user("default", Quota::per_minute(60)));
    if let Some(url) = &args.redis {
        limits = limits.redis(RedisStore::open(url)?.with_prefix("minimal"));
    }
    let limits = limits.build()?;

    let app = Router::new()
        .route("/me", get(|Auth(ctx): Auth| async move { Json(ctx) }))
        // Layers run bottom-up: authenticate first, then count per user.
        .layer(limits.layer())
        .layer(
            AuthLayer::builder(verifier)
                .audit(store.audit.clone())
                .build(),
        );

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
