//! Scope requirements on routes: [`RequireScopeLayer`] and the service it
//! makes, [`RequireScopeService`], with its [`ResponseFuture`].
//!
//! A request passes when its [`AuthContext`](auth_core::AuthContext) has the
//! required scopes; otherwise it is answered 403 `forbidden` naming the
//! missing scope (401 without a context, 500 with no `AuthLayer` in front),
//! in the error format the `AuthLayer` configured, and the inner service is
//! not called.
//!
//! ```
//! use auth_axum::RequireScopeLayer;
//! use axum::{routing::get, Router};
//!
//! # fn app(verifier: auth_core::Verifier) -> Router {
//! Router::new()
//!     .route("/reports", get(|| async { "reports" }))
//!     .route_layer(RequireScopeLayer::all(["reports.read", "billing.read"]))
//!     .layer(auth_tower::AuthLayer::new(verifier))
//! # }
//! ```
//!
//! [`RequireScopeLayer`]: crate::RequireScopeLayer

mod future;
pub(crate) mod layer;
mod service;

pub use future::ResponseFuture;
pub use service::RequireScopeService;
