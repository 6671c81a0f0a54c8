//! `cargo run --example forward_auth`: keys in front of a service in any
//! language, behind nginx (`auth_request`), Traefik (`ForwardAuth`) or
//! Envoy (`ext_authz`).
//!
//! The proxy asks this server about each request; the answer is 200 with
//! the caller's identity in `x-auth-*` headers, or the refusal (401, 403,
//! 429) with its JSON body and headers. The same `AuthLayer`, rate limiter
//! and audit log as an axum app's own routes decide, on the *original*
//! method and path: `/admin/…` needs the `admin` scope, everything else a
//! valid key, 60 requests per minute per user. On every start it issues a
//! key for `alice` (scope `read`) and prints the token once.
//!
//! ```nginx
//! location / {
//!     auth_request /_keygate;
//!     auth_request_set $auth_user $upstream_http_x_auth_user;
//!     proxy_set_header X-Auth-User $auth_user;
//!     proxy_pass http://app;
//! }
//! location = /_keygate {
//!     internal;
//!     proxy_pass http://127.0.0.1:3020;
//!     proxy_pass_request_body off;
//!     proxy_set_header Content-Length "";
//!     proxy_set_header X-Original-URI $request_uri;
//!     proxy_set_header X-Original-Method $request_method;
//!     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
//! }
//! ```

use std::net::SocketAddr;

use auth_axum::{
    connect_info_ip,
    forward_auth::{self, ForwardAuthLayer},
    RequireScopeLayer,
};
use auth_core::{
    client_ip::TrustedProxies, store::open_store, Keys, NewKey, Principal, ScopeSet, TokenPrefix,
};
use auth_ratelimit::{HeaderStyle, Quota, RateLimiter, RedisStore, Rule};
use auth_tower::AuthLayer;
use axum::{routing::any, Router};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The key store: a SQLite file (created if missing) or a postgres:// URL
    #[arg(long, default_value = "data/forward_auth.db")]
    db: String,
    /// Share the rate limits with other instances through this Redis
    #[arg(long)]
    redis: Option<String>,
    /// Where the proxy sends its sub-requests
    #[arg(long, default_value = "127.0.0.1:3020")]
    addr: SocketAddr,
    /// The proxies allowed to ask (addresses or CIDR blocks; repeat for more)
    #[arg(long = "proxy", default_value = "127.0.0.1")]
    proxies: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = open_store(&args.db).await?;
    let Keys {
        issuer, verifier, ..
    } = Keys::builder(store.keys.clone(), TokenPrefix::new("fa_")?).build();
    let key = issuer
        .issue(NewKey::new(
            Principal::user("alice"),
            "forward auth example",
            ScopeSet::parse(["read"])?,
        ))
        .await?;
    println!(
        "token for alice (shown once): {}",
        key.token.expose_secret()
    );

    // One list of proxies for the forward-auth layer, the auth layer and
    // the limiter: they all name the same client.
    let proxies = TrustedProxies::new(&args.proxies)?;
    let mut limits = RateLimiter::builder()
        .rule(Rule::per_user("default", Quota::per_minute(60)))
        .headers(HeaderStyle::Draft)
        .trusted_proxies(proxies.clone());
    if let Some(url) = &args.redis {
        limits = limits.redis(RedisStore::open(url)?.with_prefix("forward_auth"));
    }
    let limits = limits.build()?;

    // The original paths and their rules, as for the app's own routes.
    let verdicts = Router::new()
        .route(
            "/admin/{*rest}",
            any(forward_auth::allow).layer(RequireScopeLayer::one("admin")),
        )
        .fallback(forward_auth::allow)
        .layer(limits.layer())
        .layer(
            AuthLayer::builder(verifier)
                .client_ip(connect_info_ip)
                .trusted_proxies(proxies.clone())
                .audit(store.audit.clone())
                .build(),
        );
    let app = forward_auth::router(ForwardAuthLayer::new(proxies), verdicts);

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
