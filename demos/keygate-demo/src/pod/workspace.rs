//! The pod's demo data: users, their workspaces, entities and skills (in memory).

use std::{collections::HashMap, sync::RwLock};

use async_trait::async_trait;
use auth_core::AuthContext;
use auth_tower::{ResolveError, WorkspaceResolver};
use serde::Serialize;

/// Users, their workspaces, and the default one (the first).
pub const MEMBERSHIPS: &[(&str, &[&str])] =
    &[("alice", &["ws_alpha", "ws_beta"]), ("bob", &["ws_gamma"])];

/// The workspaces of `user`, default first.
pub(super) fn workspaces_of(user: &str) -> Option<&'static [&'static str]> {
    MEMBERSHIPS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, ws)| *ws)
}

/// Membership checks for the `AuthLayer`: the header's workspace must be
/// one of the effective user's; without the header, the user's default.
pub(super) struct Memberships;

#[async_trait]
impl WorkspaceResolver for Memberships {
    async fn is_member(&self, ctx: &AuthContext, workspace_id: &str) -> Result<bool, ResolveError> {
        Ok(workspaces_of(ctx.effective_user()).is_some_and(|ws| ws.contains(&workspace_id)))
    }

    async fn default_workspace(&self, ctx: &AuthContext) -> Result<Option<String>, ResolveError> {
        Ok(workspaces_of(ctx.effective_user())
            .and_then(|ws| ws.first())
            .map(|w| (*w).to_owned()))
    }
}

/// An entity of a workspace.
#[derive(Clone, Debug, Serialize)]
pub struct Entity {
    pub id: String,
    pub workspace: String,
    pub kind: String,
    pub title: String,
}

/// Entities by workspace.
#[derive(Debug)]
pub struct Entities {
    by_workspace: RwLock<HashMap<String, Vec<Entity>>>,
}

impl Entities {
    /// The demo entities.
    pub fn demo() -> Self {
        let seed = [
            ("ws_alpha", "note", "Quarterly plan"),
            ("ws_alpha", "task", "Call the bank"),
            ("ws_beta", "note", "Reading list"),
            ("ws_gamma", "contact", "Dr. Smith"),
        ];
        let mut by_workspace: HashMap<String, Vec<Entity>> = HashMap::new();
        for (i, (ws, kind, title)) in seed.into_iter().enumerate() {
            by_workspace.entry(ws.to_owned()).or_default().push(Entity {
                id: format!("ent_{}", i + 1),
                workspace: ws.to_owned(),
                kind: kind.to_owned(),
                title: title.to_owned(),
            });
        }
        Self {
            by_workspace: RwLock::new(by_workspace),
        }
    }

    /// The entities of `workspace`.
    pub fn list(&self, workspace: &str) -> Vec<Entity> {
        let map = self.by_workspace.read().unwrap_or_else(|e| e.into_inner());
        map.get(workspace).cloned().unwrap_or_default()
    }

    /// Adds an entity to `workspace`.
    pub fn create(&self, workspace: &str, kind: &str, title: &str) -> Entity {
        let mut map = self.by_workspace.write().unwrap_or_else(|e| e.into_inner());
        let n: usize = map.values().map(Vec::len).sum();
        let entity = Entity {
            id: format!("ent_{}", n + 1),
            workspace: workspace.to_owned(),
            kind: kind.to_owned(),
            title: title.to_owned(),
        };
        map.entry(workspace.to_owned())
            .or_default()
            .push(entity.clone());
        entity
    }
}

/// A skill that can be invoked through the external API.
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct Skill {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
}

/// The pod's skills.
pub(super) const SKILLS: &[Skill] = &[
    Skill {
        id: "summarize",
        name: "Summarize",
        description: "Shortens a text to its first sentence",
    },
    Skill {
        id: "shout",
        name: "Shout",
        description: "Upper-cases a text",
    },
];

/// Runs skill `id` on `input`.
pub(super) fn invoke(id: &str, input: &str) -> Option<String> {
    match id {
        "summarize" => Some(
            input
                .split_inclusive(['.', '!', '?'])
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        ),
        "shout" => Some(input.to_uppercase()),
        _ => None,
    }
}
