//! `cargo run --example rate_limits`: token buckets with proper 429s.
//!
//! Three rules, checked together on every request (each one it matches
//! takes a token; the first empty bucket refuses with 429, `Retry-After`
//! and a JSON body with the code `rate_limited`):
//! - 100 requests per hour per user (every key of a user shares it);
//! - 5 per minute per user on `POST /reports`, which is expensive;
//! - 20 per minute per client address for everything, before any key is known.
//!
//! A fourth limiter, outside the `AuthLayer`, counts failed authentications
//! per address: after 10 bad tokens in a minute the address gets 429 without
//! its tokens being checked at all.
//!
//! With `--redis redis://127.0.0.1:6379/` the buckets live in Redis, so two
//! instances on one Redis share them (memory is the fallback while it is down).
//!
//! ```sh
//! for i in $(seq 6); do curl -si -X POST -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3013/reports | head -1; done
//! ```

use std::net::SocketAddr;

use auth_core::{store::open_store, Keys, NewKey, Principal, ScopeSet, TokenPrefix};
use auth_ratelimit::{
    headers::HeaderStyle, FailedAuthLimiter, Quota, RateLimiter, RedisStore, Rule,
};
use auth_tower::AuthLayer;
use axum::{
    http::Method,
    routing::{get, post},
    Router,
};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The key store: a SQLite file (created if missing) or a postgres:// URL
    #[arg(long, default_value = "data/rate_limits.db")]
    db: String,
    /// Share the buckets with other instances through this Redis
    #[arg(long)]
    redis: Option<String>,
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:3013")]
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
    } = Keys::builder(store.keys.clone(), TokenPrefix::new("rl_")?).build();
    let key = issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "rate limits example",
            ScopeSet::empty(),
        ))
        .await?;
    println!(
        "token for alice (shown once): {}",
        key.token.expose_secret()
    );

    // Instances that share limits use the same Redis and the same prefix.
    let redis = args.redis.as_deref().map(RedisStore::open).transpose()?;
    let redis = redis.map(|r| r.with_prefix("rate_limits"));

    let mut limits = RateLimiter::builder()
        .rules([
            Rule::per_user("hourly", Quota::per_hour(100)),
            Rule::per_user("reports", Quota::per_minute(5))
                .method(Method::POST)
                .path("/reports"),
            Rule::per_ip("per-address", Quota::per_minute(20)),
        ])
        // `RateLimit-Policy` and `RateLimit` (IETF draft) on every answer.
        .headers(HeaderStyle::Draft);
    let mut failures = FailedAuthLimiter::builder(Quota::per_minute(10));
    if let Some(redis) = redis {
        limits = limits.redis(redis.clone());
        failures = failures.redis(redis);
    }
    let (limits, failures) = (limits.build()?, failures.build());

    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route("/reports", post(|| async { "report queued\n" }))
        // Inside the AuthLayer, so per-user rules know the user.
        .layer(limits.layer())
        .layer(
            AuthLayer::builder(verifier)
                .audit(store.audit.clone())
                .build(),
        )
        // Outside it, so it sees the 401s.
        .layer(failures.layer());

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
