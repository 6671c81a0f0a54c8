//! Token-bucket rate limiting for axum/tower services: per user, per API
//! key, per client IP, per route, in memory or on Redis.
//!
//! * **Algorithm**: a token bucket of capacity `burst` refilled one token per
//!   interval ([`Quota`]), kept as one integer per key (GCRA, which is the
//!   same bucket): `burst` requests pass at once, then one per interval,
//!   exactly, with no float drift. Requests may cost several tokens. The
//!   clock is injectable ([`clock`]: `MonotonicClock`, `FakeClock`) for tests
//!   without sleeps.
//! * **Layer**: [`RateLimitLayer`] goes inside the auth layer and counts by
//!   what [`KeyBy`] says: the effective user of the `AuthContext`, the API
//!   key, the client IP (socket peer, or auth-core's `TrustedProxies`' forwarding
//!   header read from the right), everyone, or your function. Several
//!   [`Rule`]s apply at once (per user *and* per IP), restricted to routes and
//!   methods, with quotas chosen from the `AuthContext` if you like.
//! * **Answers**: 429 in the auth layer's JSON format (code `rate_limited`)
//!   with `Retry-After`; `RateLimit-Limit/Remaining/Reset` and optionally the
//!   IETF draft `RateLimit-Policy`/`RateLimit` fields on every response
//!   ([`HeaderStyle`], which can also hide them).
//! * **WebSocket**: [`Rule::websocket_connects`] limits handshakes per IP;
//!   [`ws::MessageLimiter`] limits messages per connection and answers with a
//!   [`ws::RateLimitedEvent`] frame instead of closing ([`ws`] module docs).
//! * **Failed authentication**: [`FailedAuthLimiter`] goes *outside* the
//!   auth layer and counts 401 answers per client address; past its quota
//!   the address gets 429 before authentication runs ([`failed_auth`]
//!   module docs).
//! * **Stores**: one [`RateLimitStore`] per limiter: [`MemoryStore`]
//!   (lock-free map, bounded memory) or, with the `redis`
//!   feature, `RedisStore` (one atomic Lua round trip per request, shared by
//!   all instances), with the memory store as the fallback and an
//!   [`OnStoreError`] policy for when the shared store is down.
//!
//! # Layout
//!
//! The names used every day are at the root: [`RateLimiter`] and its
//! [`RateLimitLayer`], [`Rule`], [`KeyBy`], [`Quota`], the stores
//! ([`MemoryStore`], `RedisStore`) and their [`OnStoreError`] policy,
//! [`FailedAuthLimiter`] and its [`FailedAuthLayer`], and the errors. Each
//! middleware has its module with its service and response future
//! ([`rate_limit`], [`failed_auth`]); the rest lives in the module of its
//! topic ([`clock`], [`credits`], [`headers`], [`key`], [`store`], [`tiers`],
//! [`ws`]). Every item has one path.
//!
//! # Feature flags
//!
//! None is on by default; the limiter itself needs only `http` and
//! `tower-layer`/`tower-service`.
//!
//! | Feature | Enables |
//! |---|---|
//! | `axum` | the socket peer from axum's `ConnectInfo<SocketAddr>` (or `MockConnectInfo`), [`RequestInfo::path`](key::RequestInfo::path) from axum's `OriginalUri`, and `RateLimitedEvent::message` as an axum WebSocket frame. An axum app needs it for per-IP limits |
//! | `redis` | `RedisStore`: one atomic Lua round trip per check, shared by many instances |
//! | `tls` | TLS (rustls, ring, webpki roots) for `rediss://` URLs; `RedisStore::open_with_ca` for a private CA |
//!
//! Without `axum` the peer is a [`std::net::SocketAddr`] request extension
//! (read with the feature too, after axum's); either way a `ClientIp` an
//! earlier component resolved comes first ([`RequestInfo::peer_addr`](key::RequestInfo::peer_addr)).
//!
//! # Example
//!
//! ```
//! use auth_core::{AuthContext, KeyId, Principal, ScopeSet};
//! use auth_ratelimit::{clock::FakeClock, Quota, RateLimiter, Rule};
//! use axum::{body::Body, routing::get, Router};
//! use http::{header::RETRY_AFTER, Request, StatusCode};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limiter = RateLimiter::builder()
//!     // 200 requests per hour per user...
//!     .rule(Rule::per_user("default", Quota::per_hour(200)))
//!     // ...and the graph endpoint at most 2 per minute.
//!     .rule(Rule::per_user("graph", Quota::per_minute(2)).path_prefix("/graph"))
//!     .clock(FakeClock::new())
//!     .build()
//!     .unwrap();
//!
//! // Stands in for auth-tower's AuthLayer, which puts the AuthContext in the
//! // request extensions.
//! let auth = tower::util::MapRequestLayer::new(|mut req: Request<Body>| {
//!     let key = KeyId::from_u64(1);
//!     let ctx = AuthContext::for_key(key, "ci", Principal::user("alice"), ScopeSet::empty());
//!     req.extensions_mut().insert(ctx);
//!     req
//! });
//!
//! let app = Router::new()
//!     .route("/graph", get(|| async { "graph" }))
//!     .layer(limiter.layer()) // runs second, so it sees the AuthContext
//!     .layer(auth); // runs first
//!
//! let get_graph = || Request::get("/graph").body(Body::empty()).unwrap();
//! let res = app.clone().oneshot(get_graph()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["ratelimit-remaining"], "1");
//! app.clone().oneshot(get_graph()).await.unwrap();
//! let res = app.clone().oneshot(get_graph()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()[RETRY_AFTER], "30");
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod clock;
mod credit_lease;
pub mod credits;
mod decision;
mod error;
pub mod failed_auth;
mod fallback;
mod gcra;
pub mod headers;
mod ipv6_site;
pub mod key;
mod memory;
mod metrics;
mod options;
mod quota;
pub mod rate_limit;
#[cfg(feature = "redis")]
mod redis_failures;
#[cfg(feature = "redis")]
mod redis_lease;
#[cfg(feature = "redis")]
mod redis_store;
mod rule;
pub mod store;
pub mod tiers;
pub mod ws;

pub use error::{ConfigError, LimitStoreError};
pub use failed_auth::{layer::FailedAuthLayer, limiter::FailedAuthLimiter};
pub use fallback::OnStoreError;
pub use memory::MemoryStore;
pub use quota::Quota;
pub use rate_limit::{layer::RateLimitLayer, limiter::RateLimiter};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::RedisStore;
pub use rule::{KeyBy, Rule};

// Short paths inside the crate to items whose public path is a module's.
pub(crate) use auth_core::client_ip::TrustedProxies;
pub(crate) use clock::{MonotonicClock, QuantaClock};
pub(crate) use headers::HeaderStyle;
pub(crate) use key::{LimitKeyHasher, RequestInfo};
pub(crate) use store::{Decision, RateLimitStore};
pub(crate) use tiers::QuotaResolver;
