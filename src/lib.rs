//! # keygate
//!
//! API-key authentication for axum and tower services, in one dependency:
//!
//! - [`auth_core`]: token format and minting, argon2id hashing, key stores
//!   (memory, SQLite, PostgreSQL), the verifier, scopes, access levels,
//!   `AuthContext`, errors, audit events, JWTs with per-user secrets.
//! - [`auth_tower`]: the `AuthLayer` that authenticates requests.
//! - [`auth_axum`]: extractors, scope guards, access levels, WebSocket helpers,
//!   the key-management router.
//! - [`auth_ratelimit`]: token-bucket rate limits, in memory or on Redis.
//!
//! Start with the README and `cargo run --example server`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use auth_axum;
pub use auth_core;
pub use auth_ratelimit;
pub use auth_tower;

// The README's example is compiled as a doc test, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
