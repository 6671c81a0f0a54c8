//! The demo server of seed 000 (a node-graph task API): `st_` tokens,
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

use auth_axum::{
    connect_info_ip, keys_router, Auth, DefaultScopes, Grants, KeyManager, RequireScopeLayer,
};
use auth_core::{
    AuditLog, ErrorFormat, IssuedKey, KeyIssuer, Keys, NewKey, Principal, ScopeSet, TrustedProxies,
    Verifier,
};
use auth_ratelimit::{FailedAuthLimiter, Quota, RateLimiter, Rule};
use auth_tower::AuthLayer;
use axum::{
    routing::{get, put},
    Extension, Router,
};

use self::nodes::NodeGrants;
pub use self::nodes::Nodes;
use crate::support::{
    cli::CliSpec,
    commands::{Holder, KeyRules},
    http::me,
    limits, stack, Backend,
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
    "Demo server of seed 000: st_ API tokens, nodes with access levels, a WebSocket, rate limits.";

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

/// Token prefix of seed 000.
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
        return Err(format!(
            "unknown user '{user}'; users: {}",
            USERS.join(", ")
        ));
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
    /// Failed authentications (401s) per client address before 429
    /// (default [`limits::FAILED_AUTH`]).
    pub failed_auth: Quota,
    /// Keep rate limits in this Redis, shared by every instance.
    pub redis: Option<String>,
    /// Key prefix in Redis: instances that share limits use the same one.
    pub redis_prefix: String,
    /// Proxies whose X-Forwarded-For names the client (`--trusted-proxy`),
    /// for the audit log, the rate limits and the IP allowlists.
    pub trusted_proxies: TrustedProxies,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests_per_hour: 200,
            ws_connects_per_minute: 10,
            failed_auth: limits::FAILED_AUTH,
            redis: None,
            redis_prefix: "keygate:server".into(),
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

/// The server's parts.
pub struct Server {
    /// Issues `st_` keys into the store.
    pub issuer: KeyIssuer,
    /// Verifies them.
    pub verifier: Verifier,
    /// Every authenticated request, for the activity route.
    pub audit: Arc<dyn AuditLog>,
    /// The nodes (in memory).
    pub nodes: Arc<Nodes>,
    auth: AuthLayer,
    limiter: RateLimiter,
    failures: FailedAuthLimiter,
}

impl Server {
    /// The server over `backend`.
    pub fn new(backend: &Backend, options: &Options) -> Result<Self, String> {
        let Keys { issuer, verifier } = backend.keys(PREFIX);
        let auth = AuthLayer::builder(verifier.clone())
            .error_format(ErrorFormat::Flat)
            .audit(backend.audit_sink())
            .client_ip(connect_info_ip)
            .trusted_proxies(options.trusted_proxies.clone())
            .build();
        let limiter = limits::limiter(
            vec![
                Rule::per_user("default", Quota::per_hour(options.requests_per_hour.max(1))),
                Rule::websocket_connects(
                    "ws-connect",
                    Quota::per_minute(options.ws_connects_per_minute.max(1)),
                ),
            ],
            options.redis.as_deref(),
            &options.redis_prefix,
            &options.trusted_proxies,
        )?;
        let failures = limits::failed_auth(
            options.failed_auth,
            ErrorFormat::Flat,
            options.redis.as_deref(),
            &options.redis_prefix,
            &options.trusted_proxies,
        )?;
        Ok(Self {
            issuer,
            verifier,
            audit: backend.audit.clone(),
            nodes: Arc::new(Nodes::new(USERS)),
            auth,
            limiter,
            failures,
        })
    }

    /// The API's routes, not yet behind authentication and rate limits.
    pub fn routes(&self) -> Router {
        // A token made without naming scopes has the rights of its user.
        let keys = KeyManager::new(self.issuer.clone(), self.audit.clone())
            .known_scopes(all_scopes())
            .default_scopes(DefaultScopes::OwnerGrantable);
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
        stack::protect(routes, &self.auth, &self.limiter, &self.failures)
    }

    /// The whole app, with Socket.IO at `/ext-socket.io` (feature `socketio`).
    pub fn router(&self) -> Router {
        let router = crate::support::ops::mount(self.protect(self.routes()), &self.verifier);
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
