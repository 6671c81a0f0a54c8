//! The portal's demo organisations and users (in memory), their roles, and
//! who may act as whom.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use async_trait::async_trait;
use auth_core::{AuthContext, Principal, ScopeSet};
use auth_tower::{ResolveError, Subject, SubjectDecision, SubjectResolver};
use serde::Serialize;

/// A user's role in their organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the portal, its users and personal access tokens.
    Administrator,
    /// Teaches; may edit their own profile.
    Educator,
    /// Learns; may edit their own profile.
    Student,
}

impl Role {
    /// The scopes this role may use, directly or as a subject.
    pub fn ceiling(self) -> ScopeSet {
        let scopes: &[&str] = match self {
            Role::Administrator => super::SCOPES,
            Role::Educator | Role::Student => &["users:read", "users:write"],
        };
        ScopeSet::parse(scopes).expect("valid scopes")
    }

    /// `administrator`, `educator` or `student`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Educator => "educator",
            Role::Student => "student",
        }
    }
}

/// The organisations: id and portal name.
pub(super) const ORGS: &[(&str, &str)] = &[
    ("org_north", "North Academy"),
    ("org_south", "South College"),
];

/// The users: id, organisation, role at start (roles can change: see
/// `Directory::set_role`, in the unit tests).
pub const USERS: &[(&str, &str, Role)] = &[
    ("admin1", "org_north", Role::Administrator),
    ("edu1", "org_north", Role::Educator),
    ("stu1", "org_north", Role::Student),
    ("admin2", "org_south", Role::Administrator),
    ("stu2", "org_south", Role::Student),
];

/// A user's organisation and starting role.
pub(super) fn find(user: &str) -> Option<(&'static str, Role)> {
    USERS
        .iter()
        .find(|(u, _, _)| *u == user)
        .map(|(_, org, role)| (*org, *role))
}

/// Subject-User requests: the key's holder must *currently* be an
/// administrator (a PAT outlives its holder's role), and the subject a user
/// of the holder's organisation; the request then has at most the subject's
/// own scopes.
///
/// An unknown user and a user of another organisation get the same answer
/// (`Deny`: 403 "may not act on behalf of the requested user"), so a PAT
/// cannot be used to find out which user ids exist elsewhere.
pub(super) struct SameOrganisation {
    /// Where the current roles are.
    pub directory: Arc<Directory>,
}

#[async_trait]
impl SubjectResolver for SameOrganisation {
    async fn resolve(
        &self,
        actor: &AuthContext,
        user_id: &str,
    ) -> Result<SubjectDecision, ResolveError> {
        if self.directory.role_of(actor.actor()) != Some(Role::Administrator) {
            return Ok(SubjectDecision::Deny);
        }
        let subject = actor
            .actor()
            .org_id()
            .map(|org| Principal::in_org(user_id, org));
        match subject.and_then(|s| Some((self.directory.role_of(&s)?, s))) {
            Some((role, principal)) => Ok(SubjectDecision::Allow(Subject::new(
                principal,
                role.ceiling(),
            ))),
            // Unknown here, whether or not the user exists elsewhere.
            None => Ok(SubjectDecision::Deny),
        }
    }
}

/// A user's profile, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub id: String,
    pub org: String,
    pub role: Role,
    pub avatar_url: Option<String>,
}

/// What can change: avatars and portal names.
#[derive(Debug)]
pub struct Directory {
    avatars: RwLock<HashMap<String, String>>,
    portal_names: RwLock<HashMap<String, String>>,
    roles: RwLock<HashMap<String, Role>>,
}

impl Directory {
    /// The demo directory.
    pub fn demo() -> Self {
        Self {
            avatars: RwLock::new(HashMap::new()),
            portal_names: RwLock::new(
                ORGS.iter()
                    .map(|(o, n)| ((*o).to_owned(), (*n).to_owned()))
                    .collect(),
            ),
            roles: RwLock::new(
                USERS
                    .iter()
                    .map(|(u, _, r)| ((*u).to_owned(), *r))
                    .collect(),
            ),
        }
    }

    /// The current role of `who`, if they are a user of the portal in the
    /// organisation they claim.
    pub fn role_of(&self, who: &Principal) -> Option<Role> {
        let (org, _) = find(who.user_id())?;
        if Some(org) != who.org_id() {
            return None;
        }
        let roles = self.roles.read().unwrap_or_else(|e| e.into_inner());
        roles.get(who.user_id()).copied()
    }

    /// Changes a user's role (e.g. an administrator stepping down). The demo
    /// has no route for it; a real directory changes under the portal's feet.
    #[cfg(test)]
    pub fn set_role(&self, user: &str, role: Role) {
        let mut roles = self.roles.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = roles.get_mut(user) {
            *r = role;
        }
    }

    /// The profile of `user`.
    pub fn profile(&self, user: &str) -> Option<Profile> {
        let (org, _) = find(user)?;
        let role = self.role_of(&Principal::in_org(user, org))?;
        let avatars = self.avatars.read().unwrap_or_else(|e| e.into_inner());
        Some(Profile {
            id: user.to_owned(),
            org: org.to_owned(),
            role,
            avatar_url: avatars.get(user).cloned(),
        })
    }

    /// The profiles of an organisation.
    pub fn members(&self, org: &str) -> Vec<Profile> {
        USERS
            .iter()
            .filter(|(_, o, _)| *o == org)
            .filter_map(|(u, _, _)| self.profile(u))
            .collect()
    }

    /// Sets a user's avatar.
    pub fn set_avatar(&self, user: &str, url: String) {
        let mut avatars = self.avatars.write().unwrap_or_else(|e| e.into_inner());
        avatars.insert(user.to_owned(), url);
    }

    /// An organisation's portal name.
    pub fn portal_name(&self, org: &str) -> Option<String> {
        let names = self.portal_names.read().unwrap_or_else(|e| e.into_inner());
        names.get(org).cloned()
    }

    /// Renames an organisation's portal.
    pub fn rename_portal(&self, org: &str, name: String) {
        let mut names = self.portal_names.write().unwrap_or_else(|e| e.into_inner());
        names.insert(org.to_owned(), name);
    }
}
