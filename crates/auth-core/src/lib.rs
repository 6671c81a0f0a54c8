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

mod access;
mod audit;
mod base62;
mod check;
mod client_ip;
mod clock;
mod context;
mod credits;
mod digest;
mod error;
mod expiry_notice;
mod hasher;
mod ip_allowlist;
mod issuer;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
mod key_policy;
mod keys;
mod metrics;
mod plaintext;
mod response;
mod revoke_by_token;
mod scope;
pub mod store;
mod token;
mod verifier;

pub use access::{AccessLevel, InvalidAccessLevel};
pub use audit::{
    audit_now, count_usage, page as audit_page, AuditEvent, AuditHealth, AuditLog, AuditOutcome,
    AuditPage, AuditQuery, AuditSink, KeyCreated, KeyManaged, MemoryAuditLog, RefusalCount,
    RefusedFor, UsageBucket, UsageCount, UsageQuery, MAX_USER_AGENT,
};
pub use check::SecretCheck;
pub use client_ip::{ClientIp, ForwardedHeader, InvalidNet, TrustedProxies};
pub use clock::{ManualClock, SystemClock, WallClock};
pub use context::{AuthContext, CredentialKind, Principal};
pub use credits::{CreditSpend, Credits, Refill, RefillEvery, MAX_CREDITS};
pub use error::{AuthError, ErrorCode, RejectReason};
pub use expiry_notice::{
    ExpiryListener, ExpiryNotifier, NoticeError, NoticePass, DEFAULT_EXPIRY_NOTICE,
    MIN_NOTICE_INTERVAL,
};
pub use hasher::{HashError, HashParams, SecretHasher};
/// IP networks (`203.0.113.0/24`), as trusted proxies and allowlists take them.
pub use ipnet::IpNet;
pub use issuer::{validate_name, IssueError, IssuedKey, KeyIssuer, NewKey, MAX_NAME_LEN};
pub use key_policy::{KeyPolicy, KeyRateLimit, MAX_EXTERNAL_ID_LEN, MAX_META_BYTES};
pub use keys::{Keys, KeysBuilder};
pub use plaintext::PlaintextToken;
pub use response::{ErrorFormat, RenderFn, DEFAULT_REALM};
pub use revoke_by_token::{RevocationSource, TokenRevocation};
pub use scope::{validate_scope, InvalidScope, ScopePolicy, ScopeSet, MAX_SCOPE_LEN};
pub use store::{
    ChangeFeed, ChangeListener, InvalidCursor, IssuingPrefix, KeyChange, KeyCursor, KeyMetadata,
    KeyPage, KeyQuery, KeyRecord, KeyState, KeyStore, KeyUpdate, KeyUse, MemoryKeyStore,
    StateFilter, StoreError, DEFAULT_EXPIRING_WITHIN, MAX_KEY_PAGE,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::{PostgresAuditLog, PostgresKeyStore, PostgresOptions};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::{SqliteAuditLog, SqliteKeyStore};
pub use token::{
    mint_token, InvalidKeyId, InvalidPrefix, KeyId, ParsedToken, TokenError, TokenPrefix, BODY_LEN,
    MAX_PREFIX_LEN, MAX_TOKEN_LEN,
};
pub use verifier::{CredentialChange, CredentialWatch, Verifier, VerifierBuilder};
