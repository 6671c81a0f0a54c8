//! # auth-socketio
//!
//! Socket.IO ([`socketioxide`]) with the same API-key authentication as the
//! HTTP routes: [`SocketIoAuth`] authenticates connects with the routes'
//! [`AuthLayer`](auth_tower::AuthLayer) (the token from the client's `auth`
//! payload or the handshake's headers) and applies connect and
//! failed-authentication limits from `auth-ratelimit`; [`SocketAuth`] hands
//! handlers the [`AuthContext`](auth_core::AuthContext); [`Throttle`] limits
//! events per connection.
//!
//! Nothing here needs axum: socketioxide's layer goes on any tower service.
//! The client address for per-IP limits is found as `auth-ratelimit` finds
//! it (a [`ClientIp`](auth_core::client_ip::ClientIp) an earlier component resolved, a
//! `SocketAddr` request extension, or, with auth-ratelimit's `axum` feature,
//! axum's `ConnectInfo`); see [`SocketIoAuth`] for a full router.
//!
//! # Feature flags
//!
//! This crate has none of its own: all of the above is always on. The
//! crates it builds on have the ones that change what it does:
//!
//! | Feature | What it changes here |
//! |---|---|
//! | `auth-ratelimit/axum` | per-IP connect limits find the client in axum's `ConnectInfo` |
//! | `auth-ratelimit/redis` | connect and event limits shared by every instance through Redis |
//! | `auth-core/sqlite`, `auth-core/postgres`, `auth-core/jwt` | the stores and credentials the `AuthLayer` verifies |
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use auth_core::*;
//! use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
//! use auth_socketio::SocketIoAuth;
//! use auth_tower::AuthLayer;
//!
//! let store = Arc::new(MemoryKeyStore::new());
//! let issuer = KeyIssuer::new(store.clone(), SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
//! let verifier = Verifier::builder(store).hasher(SecretHasher::for_tests()).build();
//! let key = issuer
//!     .issue(NewKey::new(Principal::user("alice"), "socket", ScopeSet::empty()))
//!     .await
//!     .unwrap();
//!
//! let auth = SocketIoAuth::new(AuthLayer::builder(verifier).build());
//! // What socketioxide hands the connect middleware: the engine.io
//! // handshake, and the token of the client's `auth: { api_token }`.
//! let (handshake, ()) = http::Request::get("/socket.io/?EIO=4&transport=websocket")
//!     .body(())
//!     .unwrap()
//!     .into_parts();
//! let ctx = auth.authenticate(&handshake, Some(key.token.expose_secret())).await.unwrap();
//! assert_eq!(ctx.effective_user(), "alice");
//!
//! let refused = auth.authenticate(&handshake, Some("st_guess")).await.unwrap_err();
//! assert_eq!(refused.status(), 401);
//! assert_eq!(
//!     refused.message(),
//!     r#"{"error":"unauthorized","message":"Invalid or missing API token"}"#
//! );
//! # });
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod auth;
mod context;
mod throttle;

pub use socketioxide;

pub use self::{
    auth::{ConnectRefusal, SocketIoAuth, CREDENTIAL_ENDED_EVENT},
    context::{NotAuthenticated, SocketAuth},
    throttle::{EventRateLimited, Throttle, RATE_LIMITED_EVENT},
};
