//! The education portal demo: personal access tokens (`p:`) held by
//! the administrators of an organisation, acting as the issuing
//! administrator, or as another user of the organisation with
//! `X-Subject-User` (the token needs the `sudo` scope; the subject must
//! themself be allowed the action).

mod api;
mod directory;

use std::sync::Arc;

use auth_axum::{admin_keys_router, keys_router, KeyManager, RequireScopeLayer, SettingsPage};
use auth_core::{audit::AuditLog, response::ErrorFormat, KeyIssuer, Keys, ScopeSet, Verifier};
use auth_ratelimit::{Quota, Rule};
use auth_tower::AuthLayer;
use axum::{routing::get, Extension, Router};

pub use self::directory::{Directory, Role, USERS};
use crate::support::{
    cli::CliSpec,
    commands::{unknown_user, Holder, KeyRules},
    http::me,
    limits::SharedLimits,
    stack::Protection,
    Backend,
};

/// The command line: name, help and defaults.
/// Where the settings page for PATs is ("Settings → Automations → API").
pub const SETTINGS: &str = "/settings/api";

pub const CLI: CliSpec = CliSpec {
    name: "portal",
    about: ABOUT,
    after_help: AFTER_HELP,
    default_addr: "127.0.0.1:3003",
    default_db: "./data/portal.db",
};

const ABOUT: &str =
    "Education portal demo: administrators' p: personal access tokens, acting as a Subject-User.";

const AFTER_HELP: &str = "\
Subcommands default to `serve`. org_north: admin1 (administrator), edu1 (educator), stu1 (student);
org_south: admin2 (administrator), stu2 (student). Only administrators hold PATs.
Scopes: users:read users:write portal:write tokens:manage sudo (sudo: act as a Subject-User).

Routes: GET /api/me; GET /api/users; GET|PATCH /api/users/{id} {\"avatar_url\"};
GET|PATCH /api/portal {\"name\"} (administrators); /api/tokens (PAT management, administrators);
GET /api/admin/keys?owner=&state=&last_used_before=&created_by= and DELETE /api/admin/keys/{id}
(every PAT of the administrator's organisation); GET /openapi.json (the key API's OpenAPI document).
Send X-Subject-User: <user id> to act as another user of the organisation.

Example:
  PAT=$(cargo run -q --example portal -- issue --user admin1 --name automation)
  cargo run --example portal &
  curl -X PATCH -H \"Authorization: Bearer $PAT\" -H 'X-Subject-User: stu1' \\
       -H 'content-type: application/json' -d '{\"avatar_url\":\"https://example.com/a.png\"}' \\
       http://127.0.0.1:3003/api/users/stu1";

/// Token prefix of the portal's personal access tokens.
pub const PREFIX: &str = "p:";
/// The portal's scopes; `sudo` lets a PAT act as a subject user.
pub const SCOPES: &[&str] = &[
    "users:read",
    "users:write",
    "portal:write",
    "tokens:manage",
    "sudo",
];

/// Who may hold PATs: administrators only; a PAT gets every scope by default.
pub const RULES: KeyRules = KeyRules {
    prefix: PREFIX,
    known_scopes: SCOPES,
    holder,
    scope_required: false,
};

fn holder(user: &str) -> Result<Holder, String> {
    let Some((org, role)) = directory::find(user) else {
        let users: Vec<&str> = USERS.iter().map(|(u, _, _)| *u).collect();
        return Err(unknown_user(user, &users));
    };
    if role != Role::Administrator {
        return Err(format!(
            "'{user}' is {} {} of {org}: only administrators hold personal access tokens",
            if role == Role::Educator { "an" } else { "a" },
            role.name()
        ));
    }
    Ok(Holder {
        principal: auth_core::Principal::in_org(user, org),
        ceiling: role.ceiling(),
    })
}

/// Limits and where they are kept.
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests per hour per effective user.
    pub requests_per_hour: u32,
    /// Failed-authentication limit, Redis and trusted proxies.
    pub limits: SharedLimits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests_per_hour: 200,
            limits: SharedLimits::new("keygate:portal"),
        }
    }
}

/// The portal's parts.
#[derive(Debug)]
pub struct Portal {
    /// Issues `p:` tokens into the store.
    pub issuer: KeyIssuer,
    /// Verifies them.
    pub verifier: Verifier,
    /// Every request, with the administrator and the subject.
    pub audit: Arc<dyn AuditLog>,
    /// Users and portal settings (in memory).
    pub directory: Arc<Directory>,
    protection: Protection,
}

impl Portal {
    /// The portal over `backend`.
    pub fn new(backend: &Backend, options: &Options) -> Result<Self, String> {
        let Keys {
            issuer, verifier, ..
        } = backend.keys(PREFIX);
        let directory = Arc::new(Directory::demo());
        let auth = AuthLayer::builder(verifier.clone())
            .realm("portal")
            .subject_resolver(directory::SameOrganisation {
                directory: directory.clone(),
            });
        let limiter = options.limits.limiter(vec![Rule::per_user(
            "default",
            Quota::per_hour(options.requests_per_hour.max(1)),
        )])?;
        let protection =
            Protection::new(auth, ErrorFormat::Flat, backend, &options.limits, limiter)?;
        Ok(Self {
            issuer,
            verifier,
            audit: backend.audit.clone(),
            directory,
            protection,
        })
    }

    /// The API's routes, not yet behind authentication and rate limits.
    pub fn routes(&self) -> Router {
        let scopes = ScopeSet::parse(SCOPES).expect("valid scopes");
        // Per-user limits only: keys asking for their own rate limit or for
        // credits are refused (nothing declared to `enforces`).
        let tokens = KeyManager::new(self.issuer.clone(), self.audit.clone()).known_scopes(scopes);
        let data = Router::new()
            .route("/api/users", get(api::list_users))
            .route(
                "/api/users/{id}",
                get(api::show_user).patch(api::update_user),
            )
            .route(
                "/api/portal",
                get(api::show_portal).patch(api::update_portal),
            )
            .with_state(self.directory.clone());
        // Every PAT of the administrator's organisation (PortalAdmin's
        // organisation), filtered and revocable.
        let org_keys = admin_keys_router::<api::PortalAdmin, _>(tokens.clone())
            .route_layer(RequireScopeLayer::one("tokens:manage"))
            .layer(Extension(self.directory.clone()));
        let tokens = keys_router::<api::PortalAdmin, _>(tokens)
            .route_layer(RequireScopeLayer::one("tokens:manage"))
            // PortalAdmin checks the current role here.
            .layer(Extension(self.directory.clone()));
        Router::new()
            .route("/api/me", get(me))
            .nest("/api/tokens", tokens.clone())
            .nest("/api/admin/keys", org_keys)
            // The settings page's API (the page is at SETTINGS, admins only).
            .nest(&format!("{SETTINGS}/api"), tokens)
            .merge(data)
    }

    /// `routes` behind authentication (flat errors, subject users, audit) and rate limits.
    pub fn protect(&self, routes: Router) -> Router {
        self.protection.protect(routes)
    }

    /// The whole app, with the settings page at [`SETTINGS`] (outside the
    /// `AuthLayer`: the page asks for an administrator's PAT and sends it).
    pub fn router(&self) -> Router {
        let page = SettingsPage::new("Settings · API").bearer_sign_in().pages();
        crate::support::ops::mount_with_audit(
            self.protect(self.routes()),
            &self.verifier,
            self.audit.clone(),
        )
        .nest(SETTINGS, page)
        // The key API's description: public, like the health routes.
        .route(
            "/openapi.json",
            get(|| async {
                axum::Json(auth_axum::openapi::document(
                    "/api/tokens",
                    Some("/api/admin/keys"),
                ))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use auth_core::{NewKey, Principal, SecretHasher};
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    async fn pat(portal: &Portal, user: &str, org: &str) -> String {
        let key = portal
            .issuer
            .issue(NewKey::new(
                Principal::in_org(user, org),
                "test",
                ScopeSet::parse(SCOPES).unwrap(),
            ))
            .await
            .unwrap();
        key.token.expose_secret().to_owned()
    }

    /// `GET /api/users/{subject}` as `subject`: status and body.
    async fn as_subject(app: &Router, token: &str, subject: &str) -> (u16, String) {
        let req = Request::get(format!("/api/users/{subject}"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-subject-user", subject)
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn unknown_and_foreign_subjects_get_the_same_answer() {
        let backend = Backend::memory(SecretHasher::for_tests());
        let portal = Portal::new(&backend, &Options::default()).unwrap();
        let app = portal.router();
        let admin1 = pat(&portal, "admin1", "org_north").await;
        assert_eq!(as_subject(&app, &admin1, "stu1").await.0, 200);
        let unknown = as_subject(&app, &admin1, "nobody").await;
        let foreign = as_subject(&app, &admin1, "stu2").await;
        assert_eq!(unknown.0, 403);
        assert_eq!(unknown, foreign, "an existing user elsewhere looks unknown");
        assert!(!unknown.1.contains("exist"), "{}", unknown.1);
    }

    #[tokio::test]
    async fn the_actor_must_still_be_an_administrator() {
        let backend = Backend::memory(SecretHasher::for_tests());
        let portal = Portal::new(&backend, &Options::default()).unwrap();
        let app = portal.router();
        let admin1 = pat(&portal, "admin1", "org_north").await;
        assert_eq!(as_subject(&app, &admin1, "stu1").await.0, 200);
        // admin1 steps down; their PAT (with `sudo`) still exists.
        portal.directory.set_role("admin1", Role::Educator);
        let (status, body) = as_subject(&app, &admin1, "stu1").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(as_subject(&app, &admin1, "nobody").await, (status, body));
        // Nor can the former administrator manage PATs any more.
        let req = Request::get("/api/tokens")
            .header("authorization", format!("Bearer {admin1}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 403);
    }
}

#[cfg(test)]
mod failed_auth_tests {
    use std::net::SocketAddr;

    use auth_core::SecretHasher;
    use axum::{body::Body, extract::ConnectInfo, http::Request};
    use tower::ServiceExt;

    use super::*;
    use crate::support::limits::FAILED_AUTH;

    fn from(ip: [u8; 4], token: &str) -> Request<Body> {
        let mut req = Request::get("/api/me")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 5000))));
        req
    }

    #[tokio::test]
    async fn the_failed_authentication_limit_is_on_by_default() {
        let backend = Backend::memory(SecretHasher::for_tests());
        let portal = Portal::new(&backend, &Options::default()).unwrap();
        let app = portal.router();
        for _ in 0..FAILED_AUTH.burst() {
            let res = app.clone().oneshot(from([203, 0, 113, 1], "p:nope")).await;
            assert_eq!(res.unwrap().status(), 401);
        }
        let res = app
            .clone()
            .oneshot(from([203, 0, 113, 1], "p:nope"))
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "6");
        let res = app.oneshot(from([203, 0, 113, 2], "p:nope")).await.unwrap();
        assert_eq!(res.status(), 401, "another address is unaffected");
    }
}
