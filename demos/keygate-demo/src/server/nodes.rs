//! The demo server's nodes, in memory: per-node grants (Owner 0, Admin 1, Editor 2,
//! Viewer 3) and optimistic versioning (a stale `version` is 409
//! `version_conflict`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use async_trait::async_trait;
use auth_axum::{Access, GrantResolver, Match, ScopeRule, Scoped};
use auth_core::{AccessLevel, Principal};
use auth_tower::ResolveError;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};

use crate::support::http::{
    error, forbidden, json, not_found, unprocessable, Answer, ApiError, JsonBody,
};

/// Longest node title.
const MAX_TITLE: usize = 200;
/// Largest node content, in bytes.
const MAX_CONTENT: usize = 64 * 1024;

/// `nodes:read`: listing and reading nodes.
pub(super) struct ReadNodes;
impl ScopeRule for ReadNodes {
    const SCOPES: &'static [&'static str] = &["nodes:read"];
    const MATCH: Match = Match::All;
}

/// `nodes:write`: creating, editing, deleting nodes and managing grants.
pub(super) struct WriteNodes;
impl ScopeRule for WriteNodes {
    const SCOPES: &'static [&'static str] = &["nodes:write"];
    const MATCH: Match = Match::All;
}

/// One node.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Node {
    pub id: String,
    pub title: String,
    pub content: String,
    /// Bumped by every edit; an edit must name the version it read.
    pub version: u64,
    pub owner: String,
    /// Every user's level on this node.
    pub grants: BTreeMap<String, AccessLevel>,
}

/// A node as one user sees it: with their own level.
#[derive(Serialize)]
struct NodeView<'a> {
    #[serde(flatten)]
    node: &'a Node,
    level: AccessLevel,
}

/// All nodes. Users are the example's fixed demo users.
#[derive(Debug)]
pub struct Nodes {
    nodes: RwLock<HashMap<String, Node>>,
    next_id: AtomicU64,
    users: &'static [&'static str],
}

impl Nodes {
    /// An empty graph for `users`.
    pub fn new(users: &'static [&'static str]) -> Self {
        Self {
            nodes: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            users,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Node>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Node>> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Node> {
        self.read().get(id).cloned()
    }
}

/// Levels come from the nodes' grants.
pub(super) struct NodeGrants(pub Arc<Nodes>);

#[async_trait]
impl GrantResolver for NodeGrants {
    async fn level(
        &self,
        who: &Principal,
        node_id: &str,
    ) -> Result<Option<AccessLevel>, ResolveError> {
        Ok(self
            .0
            .read()
            .get(node_id)
            .and_then(|n| n.grants.get(who.user_id()).copied()))
    }
}

fn view(node: &Node, level: AccessLevel) -> NodeView<'_> {
    NodeView { node, level }
}

fn check_title(title: &str) -> Result<(), ApiError> {
    let n = title.chars().count();
    if title.trim().is_empty() || n > MAX_TITLE || title.chars().any(char::is_control) {
        return Err(unprocessable(format!(
            "title must be 1-{MAX_TITLE} characters with no control characters"
        )));
    }
    Ok(())
}

fn check_content(content: &str) -> Result<(), ApiError> {
    if content.len() > MAX_CONTENT {
        return Err(unprocessable(format!(
            "content may be at most {MAX_CONTENT} bytes"
        )));
    }
    Ok(())
}

/// `GET /api/nodes`: the nodes the effective user may view.
pub(super) async fn list(
    Scoped(ctx, _): Scoped<ReadNodes>,
    State(nodes): State<Arc<Nodes>>,
) -> Answer {
    let user = ctx.effective_user();
    let all = nodes.read();
    let mut mine: Vec<NodeView<'_>> = all
        .values()
        .filter_map(|n| n.grants.get(user).map(|l| view(n, *l)))
        .collect();
    mine.sort_by(|a, b| a.node.id.cmp(&b.node.id));
    Ok(json(StatusCode::OK, serde_json::json!({ "nodes": mine })))
}

/// `POST /api/nodes` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewNode {
    title: String,
    #[serde(default)]
    content: String,
}

/// `POST /api/nodes`: the creator becomes the Owner.
pub(super) async fn create(
    Scoped(ctx, _): Scoped<WriteNodes>,
    State(nodes): State<Arc<Nodes>>,
    JsonBody(body): JsonBody<NewNode>,
) -> Answer {
    check_title(&body.title)?;
    check_content(&body.content)?;
    let id = format!("n{}", nodes.next_id.fetch_add(1, Ordering::Relaxed));
    let owner = ctx.effective_user().to_owned();
    let node = Node {
        id: id.clone(),
        title: body.title,
        content: body.content,
        version: 1,
        owner: owner.clone(),
        grants: BTreeMap::from([(owner, AccessLevel::Owner)]),
    };
    let res = json(StatusCode::CREATED, view(&node, AccessLevel::Owner));
    nodes.write().insert(id, node);
    Ok(res)
}

/// The node, or 404; then the caller's level on it, or 403.
async fn node_with(
    nodes: &Nodes,
    access: &Access,
    id: &str,
    required: AccessLevel,
) -> Result<(Node, AccessLevel), ApiError> {
    let node = nodes
        .get(id)
        .ok_or_else(|| not_found(format!("No node {id}")))?;
    let level = access.require(id, required).await?;
    Ok((node, level))
}

/// `GET /api/nodes/{id}`: Viewer or better.
pub(super) async fn show(
    _: Scoped<ReadNodes>,
    access: Access,
    State(nodes): State<Arc<Nodes>>,
    Path(id): Path<String>,
) -> Answer {
    let (node, level) = node_with(&nodes, &access, &id, AccessLevel::Viewer).await?;
    Ok(json(StatusCode::OK, view(&node, level)))
}

/// `PATCH /api/nodes/{id}` body: the version read, and what to change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodePatch {
    version: u64,
    title: Option<String>,
    content: Option<String>,
}

/// `PATCH /api/nodes/{id}`: Editor or better; a stale version is 409.
pub(super) async fn update(
    _: Scoped<WriteNodes>,
    access: Access,
    State(nodes): State<Arc<Nodes>>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<NodePatch>,
) -> Answer {
    let (_, level) = node_with(&nodes, &access, &id, AccessLevel::Editor).await?;
    if let Some(t) = &patch.title {
        check_title(t)?;
    }
    if let Some(c) = &patch.content {
        check_content(c)?;
    }
    let mut all = nodes.write();
    let node = all
        .get_mut(&id)
        .ok_or_else(|| not_found(format!("No node {id}")))?;
    // Checked under the write lock: of two edits of one version, one wins.
    if node.version != patch.version {
        return Err(error(
            StatusCode::CONFLICT,
            "version_conflict",
            format!(
                "Node {id} is at version {}, not {}: reload it and apply your change again",
                node.version, patch.version
            ),
        ));
    }
    if let Some(t) = patch.title {
        node.title = t;
    }
    if let Some(c) = patch.content {
        node.content = c;
    }
    node.version += 1;
    Ok(json(StatusCode::OK, view(node, level)))
}

/// `DELETE /api/nodes/{id}`: Admin or better.
pub(super) async fn delete(
    _: Scoped<WriteNodes>,
    access: Access,
    State(nodes): State<Arc<Nodes>>,
    Path(id): Path<String>,
) -> Answer {
    node_with(&nodes, &access, &id, AccessLevel::Admin).await?;
    nodes.write().remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/nodes/{id}/grants/{user}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantBody {
    level: AccessLevel,
}

/// The grant target: a known user who is not the node's owner.
fn grantee(nodes: &Nodes, node: &Node, user: &str) -> Result<(), ApiError> {
    if !nodes.users.contains(&user) {
        return Err(not_found(format!("No user {user}")));
    }
    if node.owner == user {
        return Err(forbidden("The Owner's grant cannot be changed or revoked"));
    }
    Ok(())
}

/// `PUT /api/nodes/{id}/grants/{user}`: Admin or better; `level` 1-3.
pub(super) async fn put_grant(
    _: Scoped<WriteNodes>,
    access: Access,
    State(nodes): State<Arc<Nodes>>,
    Path((id, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<GrantBody>,
) -> Answer {
    let (node, _) = node_with(&nodes, &access, &id, AccessLevel::Admin).await?;
    grantee(&nodes, &node, &user)?;
    if body.level == AccessLevel::Owner {
        return Err(unprocessable(
            "A node has exactly one Owner: grant 1 (Admin), 2 (Editor) or 3 (Viewer)",
        ));
    }
    let mut all = nodes.write();
    let node = all
        .get_mut(&id)
        .ok_or_else(|| not_found(format!("No node {id}")))?;
    node.grants.insert(user.clone(), body.level);
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "node": id, "user": user, "level": body.level }),
    ))
}

/// `DELETE /api/nodes/{id}/grants/{user}`: Admin or better; never the Owner's.
pub(super) async fn delete_grant(
    _: Scoped<WriteNodes>,
    access: Access,
    State(nodes): State<Arc<Nodes>>,
    Path((id, user)): Path<(String, String)>,
) -> Answer {
    let (node, _) = node_with(&nodes, &access, &id, AccessLevel::Admin).await?;
    grantee(&nodes, &node, &user)?;
    let mut all = nodes.write();
    let removed = all.get_mut(&id).and_then(|n| n.grants.remove(&user));
    match removed {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(not_found(format!("{user} has no grant on node {id}"))),
    }
}
