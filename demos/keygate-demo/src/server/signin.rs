//! The server's settings page behind the demos' sign-in
//! ([`crate::support::signin`]): signed-in users manage their keys at
//! `/settings/tokens`, as the key router's owner [`SessionUser`]. Creating,
//! rotating or editing a key needs a recently entered password.

use auth_axum::{DefaultScopes, KeyManager, KeyOwner, SettingsPage};
use auth_core::{Principal, ScopeSet};
use axum::{
    extract::{FromRequestParts, Request},
    http::{request::Parts, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Extension, Router,
};
use tower_sessions::Session;

use crate::support::signin::{page_needs_sign_in, sign_in_first};
pub use crate::support::signin::{Accounts, SignInOptions, SignedIn, Site, MIN_PASSWORD};

use super::{all_scopes, Server, USERS};

/// Where the settings page is.
pub const SETTINGS: &str = "/settings/tokens";

/// Who signs in to the server: its demo users, to the settings page.
pub const SITE: Site = Site {
    name: "server",
    users: USERS,
    home: SETTINGS,
};

/// What each scope allows, for the "New key" dialog.
pub const SCOPE_DESCRIPTIONS: &[(&str, &str)] = &[
    ("nodes:read", "Read nodes you have access to"),
    (
        "nodes:write",
        "Create, change and delete nodes, and share them",
    ),
    ("tokens:manage", "Create, rotate and revoke API tokens"),
];

/// The signed-in user: the owner of the keys on the settings page, who may
/// grant every scope (a token has the same rights as its user).
#[derive(Debug)]
pub struct SessionUser {
    principal: Principal,
    scopes: ScopeSet,
}

impl<S: Send + Sync> FromRequestParts<S> for SessionUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Some(accounts) = parts.extensions.get::<Accounts>().cloned() else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match accounts.signed_in(&session).await {
            Ok(Some(record)) => Ok(Self {
                principal: Principal::user(record.user),
                scopes: all_scopes(),
            }),
            Ok(None) => Err(sign_in_first()),
            Err(res) => Err(res),
        }
    }
}

impl KeyOwner for SessionUser {
    fn principal(&self) -> &Principal {
        &self.principal
    }
    fn grantable_scopes(&self) -> &ScopeSet {
        &self.scopes
    }
}

/// `/`, `/login`, `/logout` and the settings page at [`SETTINGS`], behind
/// cookie sessions. Merge it with the API router.
pub async fn routes(server: &Server, accounts: &Accounts) -> Result<Router, String> {
    // As the API's router: per-key rate limits and credits are not enforced.
    let keys = KeyManager::new(server.issuer.clone(), server.audit.clone())
        .known_scopes(all_scopes())
        .default_scopes(DefaultScopes::OwnerGrantable)
        .describe_scopes(SCOPE_DESCRIPTIONS.iter().copied());
    let page = SettingsPage::new("Settings · API tokens")
        .sign_out("/logout")
        .router::<SessionUser, ()>(keys)
        .layer(middleware::from_fn(needs_recent_password))
        .layer(middleware::from_fn(page_needs_sign_in));
    accounts.mount(Router::new().nest(SETTINGS, page)).await
}

/// Whether `method path` (under the settings page) creates, rotates or
/// edits a key.
fn makes_or_changes_a_key(method: &Method, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    match *method {
        Method::POST => path == "/api" || (path.starts_with("/api/") && path.ends_with("/rotate")),
        Method::PATCH => path.starts_with("/api/"),
        _ => false,
    }
}

/// "Sudo mode": a key is created, rotated or edited only by a session whose
/// password was entered recently; older ones are sent to confirm it.
async fn needs_recent_password(
    Extension(accounts): Extension<Accounts>,
    session: Session,
    req: Request,
    next: Next,
) -> Response {
    if makes_or_changes_a_key(req.method(), req.uri().path()) {
        // Signed out: the key router's owner answers 401.
        if let Err(res) = accounts.require_recent_password(&session).await {
            return res;
        }
    }
    next.run(req).await
}

/// `server passwd --user <id>`: reads the new password from the first line
/// of standard input; the user's existing sessions end.
pub async fn passwd_command(db: &str, user: &str) -> Result<(), String> {
    crate::support::signin::passwd_command(SITE, db, user).await
}
