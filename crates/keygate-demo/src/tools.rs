//! The tools API demo: JWTs signed with per-user
//! secrets (`sub`, `iat`, `iss`, no expiry), `POST /v1/tools/{app}/{tool}`,
//! errors in the envelope format `{"success":false,"error":{"code","message"}}`.
//!
//! Each user's secret is sealed by a master key from configuration and kept
//! in the same database as everything else; `regenerate` replaces it, and
//! every token signed with the old one is refused at once, also by servers
//! running on the same database. Users regenerate their key on the "API
//! Access" page after signing in with a password ([`page`]); the token
//! alone cannot.

mod catalog;
pub mod cli;
pub mod master_key;
pub mod page;
pub mod store;

use std::sync::Arc;

use auth_axum::Auth;
use auth_core::{
    jwt::{JwtAuthority, MasterKey, UserSecretStore},
    response::ErrorFormat,
    AuthError, ErrorCode, RejectReason, ScopeSet, Verifier,
};
use auth_ratelimit::{Quota, RateLimiter, Rule};
use auth_tower::AuthLayer;
use axum::{
    body::{Body, Bytes},
    extract::Path,
    http::Response,
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use serde_json::Value;

pub use self::catalog::{may_use, USERS};
use crate::support::{http::me, limits::SharedLimits, stack::Protection, Backend};

/// The `iss` claim of every token.
pub const ISSUER: &str = "syncello";
/// The scope every token grants: per-platform access is the user's.
pub const SCOPE: &str = "tools";

/// The message for a missing or bad credential.
pub const UNAUTHORIZED_MESSAGE: &str = "Missing or invalid Authorization header";
/// The message for a valid token without access.
pub const FORBIDDEN_MESSAGE: &str = "Token does not have access to this resource";

/// Limits and where they are kept.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tool calls per hour per user.
    pub requests_per_hour: u32,
    /// Failed-authentication limit, Redis and trusted proxies.
    pub limits: SharedLimits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests_per_hour: 200,
            limits: SharedLimits::new("keygate:tools"),
        }
    }
}

/// The service's parts.
#[derive(Debug)]
pub struct Tools {
    /// Signs and verifies the users' JWTs.
    pub jwt: JwtAuthority,
    /// The verifier behind the `AuthLayer`: JWTs go to `jwt`, by their shape.
    pub verifier: Verifier,
    protection: Protection,
}

impl Tools {
    /// The service over `backend`, with the users' sealed secrets in `secrets`.
    pub fn new(
        backend: &Backend,
        secrets: Arc<dyn UserSecretStore>,
        master: MasterKey,
        options: &Options,
    ) -> Result<Self, String> {
        let jwt = authority(secrets, master);
        let verifier = Verifier::builder(backend.keys.clone())
            .hasher(backend.hasher.clone())
            .jwt(jwt.clone())
            .build();
        let auth = AuthLayer::builder(verifier.clone()).realm(ISSUER);
        let limiter = limiter(options)?;
        let protection = Protection::new(auth, error_format(), backend, &options.limits, limiter)?;
        Ok(Self {
            jwt,
            verifier,
            protection,
        })
    }

    /// The API's routes, not yet behind authentication and rate limits.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/api/me", get(me))
            .route("/v1/tools/{app}/{tool}", post(run_tool))
    }

    /// `routes` behind authentication (envelope errors, audit) and rate limits.
    pub fn protect(&self, routes: Router) -> Router {
        self.protection.protect(routes)
    }

    /// The API, behind authentication and rate limits, with the operations
    /// routes.
    pub fn router(&self) -> Router {
        crate::support::ops::mount(self.protect(self.routes()), &self.verifier)
    }

    /// [`Tools::router`] plus the browser side: `/login`, `/logout` and the
    /// "API Access" page at [`page::PATH`] behind cookie sessions, where a
    /// signed-in user regenerates their key (a token alone cannot).
    pub async fn router_with_sign_in(
        &self,
        accounts: &crate::support::signin::Accounts,
    ) -> Result<Router, String> {
        Ok(self
            .router()
            .merge(accounts.mount(page::routes(self.jwt.clone())).await?))
    }
}

/// The authority of this service: issuer `syncello`, scope `tools`, no expiry.
pub fn authority(secrets: Arc<dyn UserSecretStore>, master: MasterKey) -> JwtAuthority {
    JwtAuthority::builder(secrets, master, ISSUER)
        .scopes(ScopeSet::parse([SCOPE]).expect("a valid scope"))
        .build()
}

/// A demo user, or why not.
pub fn check_user(user: &str) -> Result<(), String> {
    if catalog::is_user(user) {
        return Ok(());
    }
    let users: Vec<&str> = USERS.iter().map(|(u, _)| *u).collect();
    Err(format!(
        "unknown user '{user}'; users: {}",
        users.join(", ")
    ))
}

/// The envelope format with the tools API's messages for 401 and 403.
pub fn error_format() -> ErrorFormat {
    ErrorFormat::custom(render)
}

fn render(err: &AuthError) -> Response<Bytes> {
    let err = match err.code() {
        ErrorCode::Unauthorized => err.clone().with_message(UNAUTHORIZED_MESSAGE),
        ErrorCode::Forbidden if err.reason() != RejectReason::InsufficientScope => {
            err.clone().with_message(FORBIDDEN_MESSAGE)
        }
        _ => err.clone(),
    };
    ErrorFormat::Envelope.render_in_realm(&err, ISSUER)
}

fn refuse(err: AuthError) -> Response<Body> {
    render(&err).map(Body::from)
}

fn limiter(options: &Options) -> Result<RateLimiter, String> {
    options.limits.limiter_with(
        vec![Rule::per_user(
            "tools",
            Quota::per_hour(options.requests_per_hour.max(1)),
        )],
        // 429s in the same envelope as every other error.
        |builder| builder.error_format(error_format()),
    )
}

/// `POST /v1/tools/{app}/{tool}` with a JSON object body: `{"success":true,"data":…}`.
async fn run_tool(
    Auth(ctx): Auth,
    Path((app, tool)): Path<(String, String)>,
    body: Bytes,
) -> Response<Body> {
    let Some(found) = catalog::app(&app) else {
        return refuse(AuthError::not_found(format!("Unknown app '{app}'")));
    };
    if !may_use(ctx.effective_user(), found.name) {
        return refuse(AuthError::forbidden(
            RejectReason::InsufficientAccess,
            FORBIDDEN_MESSAGE,
        ));
    }
    let Some(run) = found.tool(&tool) else {
        return refuse(AuthError::not_found(format!(
            "Unknown tool '{tool}' for app '{app}'"
        )));
    };
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(input)) => input,
            _ => {
                return refuse(AuthError::bad_request(
                    "The request body must be a JSON object",
                ))
            }
        }
    };
    Json(Success {
        success: true,
        data: run(&input),
    })
    .into_response()
}

/// `{"success":true,"data":…}`, in the documented order.
#[derive(serde::Serialize)]
struct Success {
    success: bool,
    data: Value,
}
