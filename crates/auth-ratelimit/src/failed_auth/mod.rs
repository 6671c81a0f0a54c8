//! Failed authentication, limited per client address: [`FailedAuthLimiter`]
//! and its middleware, [`FailedAuthLayer`], [`FailedAuthService`] and
//! [`ResponseFuture`].
//!
//! The rate limiter runs *after* authentication (it counts by the
//! authenticated user), so requests refused with 401 never reach it: without
//! this limiter, guessing is free, every random key id costs a store read,
//! and a flood of bad tokens fills the audit queue. This limiter goes
//! *outside* the auth layer and keeps one bucket per client address:
//!
//! * the address is resolved like the rate limiter's and the auth layer's:
//!   the socket peer, or what [`TrustedProxies`] forwarded (IPv6 grouped by
//!   a /64 by default); it is left in the request as a [`ClientIp`], so the
//!   audit log, the IP allowlists and the rate limiter inside name the same
//!   client;
//! * only refusals charge it: a response with status 401, whatever answered
//!   it (the auth layer, an extractor, a WebSocket handshake). Successful and
//!   other requests cost nothing;
//! * every failure counts, even past the limit (a burst of concurrent
//!   guesses cannot slip through while the first ones are still being
//!   answered), but the debt is capped at two windows: an address that stops
//!   failing is let in again at most one window after its bucket would have
//!   been full;
//! * while the address's bucket is empty, its requests are answered 429
//!   `rate_limited` with `Retry-After`, in the configured [`ErrorFormat`],
//!   before the auth layer runs: no store read, no argon2, no audit event.
//!   Other addresses are unaffected;
//! * **no collateral lockout**: with [`FailedAuthLayer::pass_cached`]
//!   (given the auth layer's `AuthLayer::verifies_from_cache`), a request
//!   from such an address whose credential verifies from the verifier's
//!   cache (a key this instance has already verified, within the address
//!   allowlist) is still served: a guesser behind a shared address (a
//!   company NAT, a carrier, a CI provider) does not lock out the clients
//!   behind it. Only what a guess looks like gets 429: a credential the
//!   cache refuses or does not know (its check would read the store or run
//!   argon2), and requests with no credential at all (a sign-in form's
//!   password is a guess too);
//! * with [`FailedAuthLimiterBuilder::redis`] the buckets live in Redis and
//!   are shared by every instance: each 401 is charged there (one round
//!   trip), and every other request is answered from a local mirror of the
//!   addresses over the limit, shared within 100 ms, with no round trip;
//!   the same [`OnStoreError`] policies as the rate limiter apply.
//!
//! Socket.IO connects authenticate inside the upgraded connection, out of
//! reach of HTTP layers: `auth_socketio::SocketIoAuth::failed_auth_limits` calls
//! [`FailedAuthLimiter::check`] and [`FailedAuthLimiter::record_failure`] itself.
//!
//! ```
//! use std::net::SocketAddr;
//! use auth_ratelimit::{FailedAuthLimiter, Quota};
//! use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // 3 failures at once, then one more every 20 seconds.
//! let failures = FailedAuthLimiter::builder(Quota::per_minute(3)).build();
//! let app = Router::new()
//!     // Stands in for a route behind the AuthLayer: always 401.
//!     .route("/", get(|| async { StatusCode::UNAUTHORIZED }))
//!     .layer(failures.layer()); // outside (after) the auth layer
//! let from = |ip: [u8; 4]| {
//!     let mut req = Request::get("/").body(Body::empty()).unwrap();
//!     // The peer, as a server records it: a `SocketAddr` extension (or, with
//!     // the `axum` feature, axum's `ConnectInfo<SocketAddr>`).
//!     req.extensions_mut().insert(SocketAddr::from((ip, 4000)));
//!     req
//! };
//! for _ in 0..3 {
//!     assert_eq!(app.clone().oneshot(from([203, 0, 113, 9])).await.unwrap().status(), 401);
//! }
//! let res = app.clone().oneshot(from([203, 0, 113, 9])).await.unwrap();
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()["retry-after"], "20");
//! // Another address is not affected.
//! assert_eq!(app.oneshot(from([198, 51, 100, 7])).await.unwrap().status(), 401);
//! # }
//! ```
//!
//! [`FailedAuthLimiter`]: crate::FailedAuthLimiter
//! [`FailedAuthLimiter::check`]: crate::FailedAuthLimiter::check
//! [`FailedAuthLimiter::record_failure`]: crate::FailedAuthLimiter::record_failure
//! [`FailedAuthLayer`]: crate::FailedAuthLayer
//! [`FailedAuthLayer::pass_cached`]: crate::FailedAuthLayer::pass_cached
//! [`OnStoreError`]: crate::OnStoreError
//! [`ClientIp`]: auth_core::client_ip::ClientIp
//! [`TrustedProxies`]: auth_core::client_ip::TrustedProxies
//! [`ErrorFormat`]: auth_core::response::ErrorFormat

mod future;
pub(crate) mod layer;
pub(crate) mod limiter;
mod service;

pub use future::ResponseFuture;
pub use limiter::FailedAuthLimiterBuilder;
pub use service::FailedAuthService;
