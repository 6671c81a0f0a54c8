//! Rate limits per user, API key, client IP and route: the [`RateLimiter`]
//! and its middleware, [`RateLimitLayer`], [`RateLimitService`] and
//! [`ResponseFuture`].
//!
//! Put it *inside* the auth layer so it can count by the authenticated
//! principal: with axum, `.layer(rate_limit)` first, then `.layer(auth)`
//! (the last layer added runs first); with `tower::ServiceBuilder`,
//! `.layer(auth).layer(rate_limit)` (the first runs first).
//!
//! A refused request gets 429 in the limiter's [`ErrorFormat`] (code
//! `rate_limited`) with `Retry-After` in whole seconds, rounded up and never
//! 0, and never reaches the inner service. Every response, 429s included,
//! carries the `RateLimit-*` headers of the limiter's
//! [`HeaderStyle`](crate::headers::HeaderStyle) for the rules that applied.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use auth_ratelimit::{Quota, RateLimiter, Rule};
//! use axum::{routing::get, Router};
//! use http::Method;
//!
//! # async fn demo() {
//! let limiter = RateLimiter::builder()
//!     .rule(Rule::per_user("default", Quota::per_hour(200)))
//!     .rule(Rule::per_ip("login", Quota::per_minute(5)).method(Method::POST).path("/login"))
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/items", get(|| async { "items" }))
//!     .layer(limiter.layer());
//!     // .layer(auth_layer) — added after, so it runs before the limiter.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! // ConnectInfo gives the limiter the client's socket address (read with
//! // auth-ratelimit's `axum` feature).
//! let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>());
//! # let _ = serve; }
//! ```
//!
//! [`ErrorFormat`]: auth_core::response::ErrorFormat
//! [`RateLimiter`]: crate::RateLimiter
//! [`RateLimitLayer`]: crate::RateLimitLayer

mod future;
pub(crate) mod layer;
pub(crate) mod limiter;
mod service;

pub use future::ResponseFuture;
pub use limiter::RateLimiterBuilder;
pub use service::RateLimitService;
