//! # keygate
//!
//! API-key authentication for axum and tower services, in one dependency:
//! each crate of the workspace is re-exported under its own name, behind the
//! cargo feature named after it, so `keygate::auth_axum::Auth` is the
//! `auth_axum::Auth` of the crate itself.
//!
//! | module | feature | what it holds |
//! |---|---|---|
//! | [`auth_core`] | always | token format and minting, argon2id hashing, key stores (memory; SQLite, PostgreSQL), the verifier, scopes, access levels, `AuthContext`, errors, audit events, JWTs with per-user secrets |
//! | `auth_tower` | `tower` | the `AuthLayer` that authenticates requests |
//! | `auth_axum` | `axum` (with `tower`) | extractors, scope guards, access levels, WebSocket helpers, the key-management router |
//! | `auth_ratelimit` | `ratelimit` | token-bucket rate limits, in memory or on Redis |
//! | `auth_socketio` | `socketio` (with `tower`, `ratelimit`) | Socket.IO (socketioxide) connects authenticated like the HTTP routes |
//!
//! # Feature flags
//!
//! The default features are the common path: an axum service with rate
//! limits, keys in SQLite. The others switch on the rest of the crates and
//! what they can do.
//!
//! | Feature | Default | Enables |
//! |---|---|---|
//! | `axum` | yes | `auth_axum` (and `tower`); with `ratelimit`, auth-ratelimit's `axum` feature, so the limiters read axum's `ConnectInfo` |
//! | `ratelimit` | yes | `auth_ratelimit` |
//! | `sqlite` | yes | auth-core's SQLite key store and audit log |
//! | `tower` | with `axum` | `auth_tower` |
//! | `socketio` | no | `auth_socketio` (and `tower`, `ratelimit`) |
//! | `postgres` | no | auth-core's PostgreSQL key store and audit log |
//! | `redis` | no | auth-ratelimit's Redis store (and `ratelimit`) |
//! | `jwt` | no | auth-core's JWTs signed with per-user secrets |
//! | `tls` | no | TLS (rustls) to PostgreSQL and to `rediss://` Redis |
//! | `ui` | no | auth-axum's API-keys settings page (and `axum`) |
//! | `secret-scanning` | no | auth-axum's route for GitHub's secret-scanning partner program (and `axum`) |
//! | `openapi` | no | auth-axum's OpenAPI 3.1 document of the key routes (and `axum`) |
//! | `openapi-ui` | no | auth-axum's Swagger UI for that document, embedded, under a same-origin CSP (and `openapi`) |
//!
//! A tower service without axum can take
//! `default-features = false, features = ["tower", "ratelimit", "sqlite"]`.
//!
//! Start with the README and `cargo run --example server`.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

/// The framework-free core (crate `auth-core`): tokens, hashing, key
/// stores, the verifier, scopes, access levels, audit events.
pub use auth_core;

/// Tower middleware (crate `auth-tower`): the `AuthLayer`.
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use auth_tower;

/// axum integration (crate `auth-axum`): extractors, guards, WebSocket
/// upgrades, the key-management router.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use auth_axum;

/// Rate limits (crate `auth-ratelimit`): per user, key, IP and route, in
/// memory or on Redis.
#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
pub use auth_ratelimit;

/// Socket.IO (crate `auth-socketio`): connects authenticated by the HTTP
/// routes' `AuthLayer`, connect and event limits.
#[cfg(feature = "socketio")]
#[cfg_attr(docsrs, doc(cfg(feature = "socketio")))]
pub use auth_socketio;

// The README's example is compiled as a doc test, so it cannot rot. It uses
// the axum integration and the rate limiter.
#[cfg(all(doctest, feature = "axum", feature = "ratelimit"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
