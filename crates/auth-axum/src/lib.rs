//! # auth-axum
//!
//! axum integration for the API-key toolkit: put an
//! [`AuthLayer`](auth_tower::AuthLayer) on the router, then take [`Auth`] (or
//! `Option<Auth>`) in handlers, guard routes with scopes ([`Scoped`],
//! [`RequireScopeLayer`]) and per-resource access levels ([`Access`]), and
//! accept authenticated WebSocket upgrades ([`AuthenticatedUpgrade`]), whose
//! sockets follow their credential ([`AuthenticatedSocket`]).
//!
//! Every refusal from here renders in the error format configured on the
//! `AuthLayer`, which the layer leaves in the request extensions.
//!
//! # Feature flags
//!
//! None is on by default: the extractors, guards, WebSocket upgrades, the
//! forward-auth router and the key-management routers need none of them.
//!
//! | Feature | Enables |
//! |---|---|
//! | `ui` | `SettingsPage`: the API-keys settings page (HTML, CSS and JS embedded; no build step) |
//! | `secret-scanning` | the `secret_scanning` module: GitHub's secret-scanning partner route (ECDSA P-256 signatures) |
//! | `openapi` | the `openapi` module: an OpenAPI 3.1 document of the key routes (`openapi::document`) |
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use auth_axum::{Auth, RequireScopeLayer};
//! use auth_core::*;
//! use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
//! use auth_tower::AuthLayer;
//! use axum::{body::Body, http::Request, routing::get, Router};
//! use tower::ServiceExt;
//!
//! let store = Arc::new(MemoryKeyStore::new());
//! let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
//!     .hasher(SecretHasher::for_tests())
//!     .build();
//! let key = issuer
//!     .issue(NewKey::new(Principal::user("alice"), "cli", ScopeSet::parse(["read"]).unwrap()))
//!     .await
//!     .unwrap();
//!
//! let app = Router::new()
//!     .route("/me", get(|Auth(ctx): Auth| async move { ctx.effective_user().to_owned() }))
//!     .route_layer(RequireScopeLayer::one("read"))
//!     .layer(AuthLayer::builder(verifier).error_format(ErrorFormat::Envelope).build());
//!
//! let req = Request::get("/me")
//!     .header("authorization", format!("Bearer {}", key.token.expose_secret()))
//!     .body(Body::empty())
//!     .unwrap();
//! assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
//! # });
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod access;
mod auth;
mod client_ip;
pub mod forward_auth;
mod keys;
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub mod openapi;
#[cfg(any(feature = "ui", feature = "openapi-ui"))]
mod page_headers;
mod rejection;
pub mod require_scope;
mod scope;
#[cfg(feature = "secret-scanning")]
mod secret_scanning;
#[cfg(feature = "ui")]
pub mod ui;
mod websocket;

pub use access::{Access, GrantResolver, Grants};
pub use auth::Auth;
pub use client_ip::connect_info_ip;
pub use keys::{
    admin_keys_router, keys_router, AllowedOrigins, DefaultScopes, EnforcedPolicy, KeyAdmin,
    KeyManager, KeyOwner,
};
pub use rejection::AuthRejection;
pub use require_scope::layer::RequireScopeLayer;
pub use scope::{check_scopes, Match, ScopeRule, Scoped};
#[cfg(feature = "secret-scanning")]
#[cfg_attr(docsrs, doc(cfg(feature = "secret-scanning")))]
pub use secret_scanning::{
    InvalidPublicKey, SecretScanning, KEY_IDENTIFIER_HEADER, SIGNATURE_HEADER,
};
#[cfg(feature = "ui")]
pub use ui::{settings_page, SettingsPage};
pub use websocket::{
    AuthenticatedSocket, AuthenticatedUpgrade, WebSocketAuthRejection, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_READ_BUFFER_SIZE,
};
