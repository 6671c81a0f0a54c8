//! What keygate's test suites share, written once instead of copied into
//! every crate's `tests/`:
//!
//! - [`services`]: the one rule for tests that need PostgreSQL, Redis,
//!   node or Chromium. Under `CI=true` a missing service fails the test;
//!   elsewhere the test prints why it is skipped and returns. Never a
//!   silent pass.
//! - [`eventually`]: bounded polling for a condition reached in the
//!   background, instead of sleeping.
//! - [`logs`]: capturing `tracing` output to assert on it.
//! - [`fixtures`]: an issuer, verifier and keys with a cheap hasher.
//! - [`conformance`]: the key-store conformance suite, for any
//!   [`KeyStore`](auth_core::KeyStore) implementation.
//! - [`stores`]: [`TestStore`](stores::TestStore), a key store to count
//!   reads on, take down, silence or hold mid-write.
//! - [`redis_cluster`]: a local three-node Redis Cluster, started and
//!   stopped by the test.
//!
//! Not published, and only ever a dev-dependency: [`fixtures`] use
//! `SecretHasher::for_tests`, which is behind auth-core's `test-util`
//! feature.
#![deny(missing_docs)]

pub mod conformance;
mod eventually;
pub mod fixtures;
pub mod logs;
pub mod redis_cluster;
pub mod services;
pub mod stores;

pub use eventually::eventually;
