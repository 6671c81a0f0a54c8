//! The pod demo: `sk_live_` keys with eight additive scopes,
//! workspaces (`x-workspace-id`, or the key owner's default), a
//! server-sent-event chat, and key management with activity at `/api/keys`.
//!
//! Managing keys through the API needs the scope `keys.manage`: it stands in
//! for the signed-in web session of a pod's "Settings → API Keys", and a
//! key may only create keys with scopes it holds itself. The settings page
//! itself is at `/settings/api-keys`: the person pastes such a key into it.

mod api;
mod tiers;
mod workspace;

use std::{sync::Arc, time::Duration};

use auth_axum::{keys_router, Auth, KeyManager, RequireScopeLayer, SettingsPage};
use auth_core::{
    audit::AuditLog, response::ErrorFormat, KeyIssuer, Keys, Principal, ScopeSet, Verifier,
};
use auth_ratelimit::{Quota, Rule};
use auth_tower::AuthLayer;
use axum::{
    routing::{get, post},
    Router,
};

pub use self::tiers::Plans;
pub use self::workspace::{Entities, MEMBERSHIPS};
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
    name: "pod",
    about: ABOUT,
    after_help: AFTER_HELP,
    default_addr: "127.0.0.1:3001",
    default_db: "./data/pod.db",
};

const ABOUT: &str = "Personal pod demo: sk_live_ keys with eight additive scopes, workspaces, SSE chat, key activity.";

const AFTER_HELP: &str = "\
Subcommands default to `serve`. Users: alice (workspaces ws_alpha [default], ws_beta), bob (ws_gamma).
Scopes: read:entities write:entities hub-protocol.read hub-protocol.write skills.invoke chat.stream
mcp.read mcp.write, and keys.manage for the key-management API at /api/keys.

Routes: GET /api/me; GET /api/external/skills; POST /api/external/skills/{id}/invoke;
POST /api/external/chat/stream (SSE); GET /trpc/entities.list and POST /trpc/entities.create
(x-workspace-id header required); GET|POST /api/hub/entities; GET /mcp/resources; /api/keys;
GET /openapi.json (the key API's OpenAPI document).

Example:
  TOKEN=$(cargo run -q --example pod -- issue --user alice --scope skills.invoke --scope read:entities)
  cargo run --example pod &
  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:3001/api/external/skills";

/// Token prefix of the pod's keys.
pub const PREFIX: &str = "sk_live_";
/// The pod's eight scopes, and `keys.manage` for the key-management API.
pub const SCOPES: &[&str] = &[
    "read:entities",
    "write:entities",
    "hub-protocol.read",
    "hub-protocol.write",
    "skills.invoke",
    "chat.stream",
    "mcp.read",
    "mcp.write",
    "keys.manage",
];

/// What each scope allows, for the "New key"
/// dialog of the settings page.
pub const SCOPE_DESCRIPTIONS: &[(&str, &str)] = &[
    ("read:entities", "Read entities and their properties"),
    ("write:entities", "Create and update entities"),
    (
        "hub-protocol.read",
        "Read via Hub Protocol: entities, documents, search, memory",
    ),
    (
        "hub-protocol.write",
        "Write via Hub Protocol: create entities, send messages, trigger AI",
    ),
    (
        "skills.invoke",
        "List and invoke skills via /api/external/skills",
    ),
    (
        "chat.stream",
        "Stream AI chat via /api/external/chat/stream",
    ),
    ("mcp.read", "Read resources via the MCP endpoint"),
    ("mcp.write", "Write via the MCP endpoint"),
    (
        "keys.manage",
        "Create, rotate and revoke API keys (this page needs it)",
    ),
];

/// Where the settings page is: "Settings → API Keys".
pub const SETTINGS: &str = "/settings/api-keys";

/// Who may hold keys: the pod's users, any scope; `issue` needs `--scope`.
pub const RULES: KeyRules = KeyRules {
    prefix: PREFIX,
    known_scopes: SCOPES,
    holder,
    scope_required: true,
};

fn holder(user: &str) -> Result<Holder, String> {
    if workspace::workspaces_of(user).is_none() {
        let users: Vec<&str> = MEMBERSHIPS.iter().map(|(u, _)| *u).collect();
        return Err(unknown_user(user, &users));
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
    /// Requests per hour per user.
    pub requests_per_hour: u32,
    /// Requests per hour per key on the free tier.
    pub free_per_hour: u32,
    /// Requests per hour per key on the pro tier.
    pub pro_per_hour: u32,
    /// Users on the pro tier.
    pub pro_users: Vec<String>,
    /// Failed-authentication limit, Redis and trusted proxies.
    pub limits: SharedLimits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests_per_hour: 200,
            free_per_hour: 100,
            pro_per_hour: 1000,
            pro_users: Vec::new(),
            limits: SharedLimits::new("keygate:pod"),
        }
    }
}

/// The pod's parts.
#[derive(Debug)]
pub struct Pod {
    /// Issues `sk_live_` keys into the store.
    pub issuer: KeyIssuer,
    /// Verifies them.
    pub verifier: Verifier,
    /// Every authenticated request, for the activity route.
    pub audit: Arc<dyn AuditLog>,
    /// The entities (in memory).
    pub entities: Arc<Entities>,
    protection: Protection,
}

impl Pod {
    /// The pod over `backend`.
    pub fn new(backend: &Backend, options: &Options) -> Result<Self, String> {
        let Keys {
            issuer, verifier, ..
        } = backend.keys(PREFIX);
        let auth = AuthLayer::builder(verifier.clone())
            .realm("pod")
            .workspace_resolver(workspace::Memberships);
        // Per user, and per key by the owner's tier (or the key's own
        // limit); usage-limited keys spend their credits.
        let plans = Plans::new(
            options.pro_users.iter().cloned(),
            Quota::per_hour(options.pro_per_hour.max(1)),
        );
        let limiter = options.limits.limiter_with(
            vec![
                Rule::per_user("default", Quota::per_hour(options.requests_per_hour.max(1))),
                Rule::per_key("tier", Quota::per_hour(options.free_per_hour.max(1))).key_quota(),
            ],
            |limiter| {
                limiter
                    .quota_resolver(plans, Duration::from_secs(60))
                    .credits(backend.keys.clone())
            },
        )?;
        let protection =
            Protection::new(auth, ErrorFormat::Flat, backend, &options.limits, limiter)?;
        Ok(Self {
            issuer,
            verifier,
            audit: backend.audit.clone(),
            entities: Arc::new(Entities::demo()),
            protection,
        })
    }

    /// The API's routes, not yet behind authentication and rate limits.
    pub fn routes(&self) -> Router {
        // The limiter in front holds keys to their own rate limit (the
        // "tier" rule takes key quotas) and spends their credits.
        let keys = KeyManager::new(self.issuer.clone(), self.audit.clone())
            .known_scopes(all_scopes())
            .describe_scopes(SCOPE_DESCRIPTIONS.iter().copied())
            .enforces(auth_axum::EnforcedPolicy::RateLimit)
            .enforces(auth_axum::EnforcedPolicy::Credits);
        let data = Router::new()
            .route("/trpc/entities.list", get(api::trpc_list))
            .route("/trpc/entities.create", post(api::trpc_create))
            .route(
                "/api/hub/entities",
                get(api::hub_list).post(api::hub_create),
            )
            .route("/mcp/resources", get(api::mcp_resources))
            .with_state(self.entities.clone());
        Router::new()
            .route("/api/me", get(me))
            .route("/api/external/skills", get(api::list_skills))
            .route("/api/external/skills/{id}/invoke", post(api::invoke_skill))
            .route("/api/external/chat/stream", post(api::chat_stream))
            .nest(
                "/api/keys",
                keys_router::<Auth, _>(keys.clone())
                    .route_layer(RequireScopeLayer::one("keys.manage")),
            )
            // The settings page's API: the same router, under the page.
            .nest(
                &format!("{SETTINGS}/api"),
                keys_router::<Auth, _>(keys).route_layer(RequireScopeLayer::one("keys.manage")),
            )
            .merge(data)
    }

    /// `routes` behind authentication (flat errors, workspaces, audit) and rate limits.
    pub fn protect(&self, routes: Router) -> Router {
        self.protection.protect(routes)
    }

    /// The whole app, with the settings page at [`SETTINGS`] (outside the
    /// `AuthLayer`: the page asks for a `keys.manage` key and sends it).
    pub fn router(&self) -> Router {
        let page = SettingsPage::new("Settings · API Keys")
            .bearer_sign_in()
            .pages();
        crate::support::ops::mount_with_audit(
            self.protect(self.routes()).nest(SETTINGS, page),
            &self.verifier,
            self.audit.clone(),
        )
        // The key API's description: public, like the health routes.
        .route(
            "/openapi.json",
            get(|| async { axum::Json(auth_axum::openapi::document("/api/keys", None)) }),
        )
    }
}
