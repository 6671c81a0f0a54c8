//! # auth-core
//!
//! The core of an API-key authentication toolkit: prefixed tokens shown once
//! and stored only as argon2id hashes, a pluggable [`KeyStore`], a
//! [`Verifier`] with a constant-time cached hot path, [`ScopeSet`]s,
//! per-resource [`AccessLevel`]s, the [`AuthContext`] handed to handlers
//! (with subject-user impersonation), typed [`AuthError`]s with stable
//! machine-readable codes, and [`AuditEvent`]s.
//!
//! HTTP integration lives in `auth-tower` and `auth-axum`.
//!
//! # Feature flags
//!
//! None is on by default: the memory store, the verifier, scopes, access
//! levels and audit events need none of them.
//!
//! | Feature | Enables |
//! |---|---|
//! | `sqlite` | `SqliteKeyStore` and `SqliteAuditLog`: an embedded file, zero set-up; SQLite paths in `store::open_store` |
//! | `postgres` | `PostgresKeyStore`, `PostgresAuditLog` and `PostgresOptions`: one database shared by several instances, changes announced with `LISTEN/NOTIFY`; `postgres://` URLs in `store::open_store` |
//! | `tls` | TLS (rustls, ring, webpki roots) to PostgreSQL: `sslmode`/`sslrootcert` in the URL and `PostgresOptions::ca_file` |
//! | `jwt` | the `jwt` module: JWT credentials signed with per-user secrets, kept in the SQLite or PostgreSQL store when those features are on |
//! | `test-util` | `SecretHasher::for_tests`: argon2 parameters too weak for anything but tests and doc examples; enable it only from `[dev-dependencies]` |
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use auth_core::{Keys, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix};
//!
//! let store = Arc::new(MemoryKeyStore::new());
//! let hasher = SecretHasher::default(); // argon2id m=256 KiB, t=1, p=1 (random 256-bit secrets)
//! # let hasher = SecretHasher::for_tests();
//! // The issuer and the verifier, from one hasher and one prefix.
//! let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
//!     .hasher(hasher)
//!     .build();
//!
//! let key = issuer
//!     .issue(NewKey::new(Principal::user("admin"), "laptop", ScopeSet::parse(["read"]).unwrap()))
//!     .await
//!     .unwrap();
//! println!("your token (shown once): {}", key.token.expose_secret());
//!
//! let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
//! assert_eq!(ctx.actor().user_id(), "admin");
//! # });
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

/// Gives a middleware service `get_ref`, `get_mut` and `into_inner` over its
/// `inner: S` field, as tower-http's services have: one macro for every
/// middleware of auth-tower, auth-axum and auth-ratelimit, invoked inside
/// `impl<S> XxxService<S> { .. }`.
#[doc(hidden)]
#[macro_export]
macro_rules! define_inner_service_accessors {
    () => {
        /// The wrapped service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The wrapped service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the wrapped service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

// Implementation modules: the everyday types among their items are
// re-exported below, the rest through the public modules.
mod access;
mod audit_log;
mod base62;
mod check;
mod context;
mod credits;
mod digest;
mod error;
mod hasher;
mod ip_allowlist;
mod issuer;
mod key_policy;
mod keys;
mod metrics;
mod plaintext;
mod recheck;
mod scope_set;
mod token_format;
mod verifier;

pub mod audit;
pub mod client_ip;
pub mod clock;
pub mod expiry_notice;
pub mod hash;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
pub mod policy;
pub mod response;
pub mod revoke_by_token;
pub mod scope;
pub mod store;
pub mod token;
pub mod watch;

pub use access::AccessLevel;
pub use audit_log::{AuditEvent, AuditSink};
pub use context::{AuthContext, CredentialKind, Principal};
pub use error::{AuthError, ErrorCode, RejectReason};
pub use hasher::SecretHasher;
pub use issuer::{IssueError, IssuedKey, KeyIssuer, NewKey};
pub use keys::{Keys, KeysBuilder};
pub use plaintext::PlaintextToken;
pub use scope_set::ScopeSet;
pub use store::{key_store::KeyStore, memory::MemoryKeyStore};
pub use token_format::{KeyId, TokenPrefix};
pub use verifier::{Credential, Verifier, VerifierBuilder};
