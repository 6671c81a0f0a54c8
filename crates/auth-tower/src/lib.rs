//! # auth-tower
//!
//! Tower middleware that authenticates API-key requests with an
//! [`auth_core::Verifier`]: `.layer(AuthLayer::new(verifier))` on an axum
//! `Router` or in a `ServiceBuilder` stack.
//!
//! For each request [`AuthService`]:
//!
//! 1. marks the credential headers sensitive and puts the configured
//!    [`ErrorFormat`](auth_core::response::ErrorFormat) in the extensions (see [`RenderAuthError`]);
//!    resolves the client address once (the socket peer, or what
//!    [`TrustedProxies`](auth_core::client_ip::TrustedProxies) forwarded; see
//!    [`AuthLayerBuilder::client_ip`]) and leaves it there as
//!    [`ClientIp`](auth_core::client_ip::ClientIp);
//! 2. reads the credential from the first [`CredentialSource`] that has one
//!    (`Authorization: Bearer`, the WebSocket subprotocol, a custom header, a
//!    query parameter; in a configurable order);
//! 3. verifies it (a store outage is 503, never a pass);
//! 4. applies subject-user impersonation ([`SubjectResolver`]) and workspace
//!    selection ([`WorkspaceResolver`]);
//! 5. puts the [`AuthContext`](auth_core::AuthContext) in the extensions,
//!    records key id, actor and subject in the request span ([`trace`]), and
//!    calls the inner service; or answers the refusal in the configured format;
//! 6. sends an [`AuditEvent`](auth_core::AuditEvent) to the audit sink, if any.
//!
//! | Situation | Status | `WWW-Authenticate` |
//! |---|---|---|
//! | no credential (required mode) | 401 | `Bearer realm="api"` |
//! | unknown, revoked, expired, wrong or malformed credential; two `Authorization` headers | 401 | `Bearer realm="api", error="invalid_token"` |
//! | impersonation without the `sudo` scope | 403 | `error="insufficient_scope", scope="sudo"` |
//! | impersonation refused, unknown subject, workspace not a member | 403 | |
//! | key used from outside its IP allowlist (code `ip_not_allowed`) | 403 | |
//! | malformed subject or workspace header | 400 | |
//! | store or resolver unreachable | 503 | |
//!
//! Two `Authorization` headers are a malformed *credential* (401
//! `invalid_token`) rather than a 400: every credential problem gets one
//! status and one challenge, and the client learns nothing more.
//!
//! No response, log line, span or `Debug` output contains the token, and no
//! message tells an unknown key from a wrong secret.
//!
//! # Feature flags
//!
//! This crate has none of its own: all of the above is always on. What the
//! layer verifies against is chosen with `auth-core`'s features:
//!
//! | Feature of `auth-core` | What it changes here |
//! |---|---|
//! | `sqlite`, `postgres` | the durable stores a `Verifier` can read keys from |
//! | `tls` | TLS to PostgreSQL |
//! | `jwt` | JWTs signed with per-user secrets, accepted next to API keys |
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod audit;
mod authenticate;
mod builder;
mod config;
mod credential;
mod error_format;
mod future;
mod headers;
mod impersonation;
mod layer;
mod metrics;
mod resolve_error;
mod service;
pub mod trace;
mod workspace;

pub use builder::AuthLayerBuilder;
pub use credential::{offered_bearer_protocol, CredentialSource};
pub use error_format::{AuthRealm, RenderAuthError};
pub use future::ResponseFuture;
pub use impersonation::{
    Subject, SubjectDecision, SubjectResolver, DEFAULT_IMPERSONATION_SCOPE, DEFAULT_SUBJECT_HEADER,
};
pub use layer::AuthLayer;
pub use resolve_error::ResolveError;
pub use service::AuthService;
pub use trace::AuthMakeSpan;
pub use workspace::{WorkspaceResolver, DEFAULT_WORKSPACE_HEADER};
