//! The demo server (a node-graph task API): `st_` tokens,
//! per-node access levels, the flat error format, per-user and per-IP rate
//! limits, a WebSocket, Socket.IO at `/ext-socket.io`, and key management
//! at `/api/tokens`.
//!
//! [`Server::router`] is the whole app. To add routes (e.g. a Socket.IO
//! endpoint or another API), take [`Server::routes`], merge yours, and pass
//! the result to [`Server::protect`]; routes that authenticate on their own
//! can be merged onto the protected router instead.

mod nodes;
pub mod signin;
#[cfg(feature = "socketio")]
mod socketio;
mod ws;

use std::sync::Arc;

use auth_axum::{keys_router, Auth, DefaultScopes, Grants, KeyManager, RequireScopeLayer};
use auth_core::{
    audit::AuditLog, response::ErrorFormat, IssuedKey, KeyIssuer, Keys, NewKey, Principal,
    ScopeSet, Verifier,
};
use auth_ratelimit::{Quota, Rule};
use auth_tower::AuthLayer;
use axum::{
    routing::{get, put},
    Extension, Router,
};

use self::nodes::NodeGrants;
pub use self::nodes::Nodes;
use crate::support::{
    cli::CliSpec,
    commands::{unknown_user, Holder, KeyRules},
    http::me,
    limits::SharedLimits,
    stack::Protection,
    Backend,
};

/// The command line: name, help and defaults.
pub const CLI: CliSpec = CliSpec {
    name: "server",
    about: ABOUT,
    after_help: AFTER_HELP,
    default_addr: "127.0.0.1:3000",
    default_db: "./data/server.db",
};

const ABOUT: &str =
    "Demo server: st_ API tokens, nodes with access levels, a WebSocket, rate limits.";

const AFTER_HELP: &str = "\
Subcommands default to `serve`. Users: admin, alice, bob. Scopes: nodes:read, nodes:write, tokens:manage.

Routes: GET /api/me; GET|POST /api/nodes; GET|PATCH|DELETE /api/nodes/{id};
PUT|DELETE /api/nodes/{id}/grants/{user}; /api/tokens (key management, scope tokens:manage);
In a browser: /login, then /settings/tokens (set a password first: `server passwd --user alice`, reads stdin);
GET /ws (Sec-WebSocket-Protocol: Bearer, <token>);
Socket.IO at path /ext-socket.io (auth: { api_token }), events whoami and echo.

Example:
  cargo run --example server
  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:3000/api/me";

/// Token prefix of the demo server's tokens.
pub const PREFIX: &str = "st_";
/// The scopes of this server.
pub const SCOPES: &[&str] = &["nodes:read", "nodes:write", "tokens:manage"];
/// The demo users (nodes are granted to them).
pub const USERS: &[&str] = &["admin", "alice", "bob"];
/// The user created on first start.
pub const ADMIN: &str = "admin";

/// Who may hold keys, for the command line: any demo user, with every
/// scope (a token has the same access rights as its user).
pub const RULES: KeyRules = KeyRules {
    prefix: PREFIX,
    known_scopes: SCOPES,
    holder,
    scope_required: false,
};

fn holder(user: &str) -> Result<Holder, String> {
    if !USERS.contains(&user) {
        return Err(unknown_user(user, USERS));
    }
    Ok(Holder {
        principal: Principal::user(user),
        ceiling: all_scopes(),
    })
}

fn all_scopes() -> ScopeSet {
    ScopeSet::parse(SCOPES).expect("valid scopes")
}

/// Limits and where they are kept.
#[derive(Clone, Debug)]
pub struct Options {
    /// REST requests per hour per user (seed: 200).
    pub requests_per_hour: u32,
    /// WebSocket connects per minute per IP (seed: 10).
    pub ws_connects_per_minute: u32,
    /// Failed-authentication limit, Redis and trusted proxies.
    pub limits: SharedLimits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests_per_hour: 200,
            ws_connects_per_minute: 10,
            limits: SharedLimits::new("keygate:server"),
        }
    }
}

/// The server's parts.
#[derive(Debug)]
pub struct Server {
    /// Issues `st_` keys into the store.
    pub issuer: KeyIssuer,
    /// Verifies them.
    pub verifier: Verifier,
    /// Every authenticated request, for the activity route.
    pub audit: Arc<dyn AuditLog>,
    /// The nodes (in memory).
    pub nodes: Arc<Nodes>,
    protection: Protection,
}

impl Server {
    /// The server over `backend`.
    pub fn new(backend: &Backend, options: &Options) -> Result<Self, String> {
        let Keys {
            issuer, verifier, ..
        } = backend.keys(PREFIX);
        let auth = AuthLayer::builder(verifier.clone());
        // Keys made with credits spend one per request (unlimited otherwise).
        let limiter = options.limits.limiter_with(
            vec![
                Rule::per_user("default", Quota::per_hour(options.requests_per_hour.max(1))),
                Rule::websocket_connects(
                    "ws-connect",
                    Quota::per_minute(options.ws_connects_per_minute.max(1)),
                ),
            ],
            |limiter| limiter.credits(backend.keys.clone()),
        )?;
        let protection =
            Protection::new(auth, ErrorFormat::Flat, backend, &options.limits, limiter)?;
        Ok(Self {
            issuer,
            verifier,
            audit: backend.audit.clone(),
            nodes: Arc::new(Nodes::new(USERS)),
            protection,
        })
    }

    /// The API's routes, not yet behind authentication and rate limits.
    pub fn routes(&self) -> Router {
        // A token made without naming scopes has the rights of its user. The
        // limiter in front of every route spends credits but has no per-key
        // quota rule, so the router takes `remaining` and refuses `rate_limit`.
        let keys = KeyManager::new(self.issuer.clone(), self.audit.clone())
            .known_scopes(all_scopes())
            .default_scopes(DefaultScopes::OwnerGrantable)
            .enforces(auth_axum::EnforcedPolicy::Credits);
        let node_routes = Router::new()
            .route("/api/nodes", get(nodes::list).post(nodes::create))
            .route(
                "/api/nodes/{id}",
                get(nodes::show).patch(nodes::update).delete(nodes::delete),
            )
            .route(
                "/api/nodes/{id}/grants/{user}",
                put(nodes::put_grant).delete(nodes::delete_grant),
            )
            .layer(Extension(Grants::new(NodeGrants(self.nodes.clone()))))
            .with_state(self.nodes.clone());
        Router::new()
            .route("/api/me", get(me))
            .route("/ws", get(ws::echo).layer(Extension(self.verifier.clone())))
            .nest(
                "/api/tokens",
                keys_router::<Auth, _>(keys).route_layer(RequireScopeLayer::one("tokens:manage")),
            )
            .merge(node_routes)
    }

    /// `routes` behind authentication (flat errors, audit) and rate limits.
    pub fn protect(&self, routes: Router) -> Router {
        self.protection.protect(routes)
    }

    /// The whole app, with Socket.IO at `/ext-socket.io` (feature `socketio`).
    pub fn router(&self) -> Router {
        let router = crate::support::ops::mount_with_audit(
            self.protect(self.routes()),
            &self.verifier,
            self.audit.clone(),
        )
        // The key API's description: public, like the health routes.
        .route(
            "/openapi.json",
            get(|| async { axum::Json(auth_axum::openapi::document("/api/tokens", None)) }),
        );
        #[cfg(feature = "socketio")]
        let router = socketio::mount(self, router);
        router
    }

    /// [`Server::router`] plus the browser side: `/login`, `/logout`, and
    /// the settings page at `/settings/tokens` behind cookie sessions.
    pub async fn router_with_sign_in(&self, accounts: &signin::Accounts) -> Result<Router, String> {
        Ok(self.router().merge(signin::routes(self, accounts).await?))
    }

    /// On the first start (no key for `admin` in the store, revoked ones
    /// included): issues `admin` a token with every scope. Later: `None`.
    pub async fn bootstrap_admin(&self) -> Result<Option<IssuedKey>, String> {
        let existing = self
            .issuer
            .list(ADMIN)
            .await
            .map_err(|e| format!("cannot read the key store: {e}"))?;
        if !existing.is_empty() {
            return Ok(None);
        }
        let key = self
            .issuer
            .issue(NewKey::new(
                Principal::user(ADMIN),
                "bootstrap",
                all_scopes(),
            ))
            .await
            .map_err(|e| format!("cannot issue the admin token: {e}"))?;
        Ok(Some(key))
    }
}
