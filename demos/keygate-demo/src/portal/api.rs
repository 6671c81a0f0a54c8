//! The portal's routes: users' profiles and the portal's settings, checked
//! against the *effective* user (the subject, when a PAT acts as one).

use std::sync::Arc;

use auth_axum::{Auth, AuthRejection, KeyAdmin, KeyOwner, Scoped};
use auth_core::{AuthContext, AuthError, ErrorCode, KeyId, Principal, RejectReason, ScopeSet};
use axum::{
    extract::{FromRequestParts, Path, State},
    http::{request::Parts, StatusCode},
};
use serde::Deserialize;
use serde_json::json;

use super::directory::{Directory, Role};
use crate::support::http::{
    forbidden, json, not_found, scope, unprocessable, Answer, ApiError, JsonBody,
};

scope!(ReadUsers, "users:read");
scope!(WriteUsers, "users:write");
scope!(WritePortal, "portal:write");

/// The effective user's organisation (every portal user has one).
fn org_of(ctx: &AuthContext) -> Result<&str, ApiError> {
    ctx.effective_principal()
        .org_id()
        .ok_or_else(|| forbidden("This token does not belong to an organisation"))
}

/// A user of the effective user's organisation, else 404.
fn same_org_user(
    directory: &Directory,
    ctx: &AuthContext,
    id: &str,
) -> Result<super::directory::Profile, ApiError> {
    let org = org_of(ctx)?;
    directory
        .profile(id)
        .filter(|p| p.org == org)
        .ok_or_else(|| not_found(format!("No user {id} in this organisation")))
}

/// `GET /api/users`: the organisation's users.
pub(super) async fn list_users(
    Scoped(ctx, _): Scoped<ReadUsers>,
    State(dir): State<Arc<Directory>>,
) -> Answer {
    Ok(json(
        StatusCode::OK,
        json!({ "users": dir.members(org_of(&ctx)?) }),
    ))
}

/// `GET /api/users/{id}`.
pub(super) async fn show_user(
    Scoped(ctx, _): Scoped<ReadUsers>,
    State(dir): State<Arc<Directory>>,
    Path(id): Path<String>,
) -> Answer {
    Ok(json(StatusCode::OK, same_org_user(&dir, &ctx, &id)?))
}

/// `PATCH /api/users/{id}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    avatar_url: String,
}

/// `PATCH /api/users/{id}`: the user themself, or an administrator of their
/// organisation (also when an administrator's PAT acts as that user).
pub(super) async fn update_user(
    Scoped(ctx, _): Scoped<WriteUsers>,
    State(dir): State<Arc<Directory>>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<UserPatch>,
) -> Answer {
    let target = same_org_user(&dir, &ctx, &id)?;
    let me = ctx.effective_principal();
    let my_role = dir.role_of(me);
    if me.user_id() != target.id && my_role != Some(Role::Administrator) {
        return Err(forbidden(format!(
            "Only {id} or an administrator may change this profile; {} is {}",
            me.user_id(),
            my_role.map_or("not a user here", Role::name)
        )));
    }
    let url = patch.avatar_url;
    if url.len() > 2048 || !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(unprocessable(
            "avatar_url must be an http(s) URL of at most 2048 bytes",
        ));
    }
    dir.set_avatar(&target.id, url);
    Ok(json(StatusCode::OK, dir.profile(&target.id)))
}

/// `GET /api/portal`.
pub(super) async fn show_portal(Auth(ctx): Auth, State(dir): State<Arc<Directory>>) -> Answer {
    let org = org_of(&ctx)?;
    Ok(json(
        StatusCode::OK,
        json!({ "org": org, "name": dir.portal_name(org) }),
    ))
}

/// `PATCH /api/portal` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PortalPatch {
    name: String,
}

/// `PATCH /api/portal`: administrators only.
pub(super) async fn update_portal(
    Scoped(ctx, _): Scoped<WritePortal>,
    State(dir): State<Arc<Directory>>,
    JsonBody(patch): JsonBody<PortalPatch>,
) -> Answer {
    let me = ctx.effective_principal();
    if dir.role_of(me) != Some(Role::Administrator) {
        return Err(forbidden(
            "Only administrators may change the portal's settings",
        ));
    }
    let n = patch.name.chars().count();
    if patch.name.trim().is_empty() || n > 100 || patch.name.chars().any(char::is_control) {
        return Err(unprocessable(
            "name must be 1-100 characters with no control characters",
        ));
    }
    let org = org_of(&ctx)?;
    dir.rename_portal(org, patch.name);
    Ok(json(
        StatusCode::OK,
        json!({ "org": org, "name": dir.portal_name(org) }),
    ))
}

/// The owner of personal access tokens: an administrator (the effective
/// user, by their current role in the [`Directory`] the router carries as an
/// extension), who may grant what the calling token holds.
pub(super) struct PortalAdmin {
    principal: Principal,
    scopes: ScopeSet,
    key: Option<KeyId>,
    impersonating: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for PortalAdmin {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthRejection> {
        let Auth(ctx) = Auth::from_request_parts(parts, state).await?;
        let role = parts
            .extensions
            .get::<Arc<Directory>>()
            .and_then(|dir| dir.role_of(ctx.effective_principal()));
        if role != Some(Role::Administrator) {
            let err = AuthError::new(ErrorCode::Forbidden, RejectReason::InsufficientAccess)
                .with_message("Only administrators hold and manage personal access tokens");
            return Err(AuthRejection::new(err, parts));
        }
        Ok(Self {
            principal: ctx.effective_principal().clone(),
            scopes: ctx.scopes().clone(),
            key: ctx.key_id(),
            impersonating: ctx.is_impersonating(),
        })
    }
}

impl KeyOwner for PortalAdmin {
    fn principal(&self) -> &Principal {
        &self.principal
    }

    fn grantable_scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    fn acting_key(&self) -> Option<KeyId> {
        self.key
    }

    fn is_impersonating(&self) -> bool {
        self.impersonating
    }
}

/// The administrators' key view for organisation administrators: every
/// key of their own organisation, never another's.
impl KeyAdmin for PortalAdmin {
    fn organisation(&self) -> Option<&str> {
        // Every portal user belongs to an organisation; a principal without
        // one would see nothing rather than everything.
        Some(self.principal.org_id().unwrap_or(""))
    }

    fn acting_key(&self) -> Option<KeyId> {
        self.key
    }
}
