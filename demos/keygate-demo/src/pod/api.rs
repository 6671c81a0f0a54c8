//! The pod's routes: external skills and chat, tRPC entities, the Hub
//! Protocol and MCP. Each names the scope it needs.

use std::{convert::Infallible, sync::Arc};

use auth_axum::Scoped;
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{
        sse::{Event, Sse},
        IntoResponse,
    },
};
use serde::Deserialize;
use serde_json::json;

use super::workspace::{invoke, Entities, SKILLS};
use crate::support::http::{
    bad_request, json, not_found, scope, unprocessable, Answer, ApiError, JsonBody,
};

scope!(ReadEntities, "read:entities");
scope!(WriteEntities, "write:entities");
scope!(HubRead, "hub-protocol.read");
scope!(HubWrite, "hub-protocol.write");
scope!(InvokeSkills, "skills.invoke");
scope!(StreamChat, "chat.stream");
scope!(McpRead, "mcp.read");

/// Longest text accepted by skills, chat and entity titles.
const MAX_TEXT: usize = 4000;

fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    if text.len() > MAX_TEXT {
        return Err(unprocessable(format!(
            "{field} may be at most {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}

/// The workspace the `AuthLayer` selected: the header's, or the owner's default.
fn workspace(ctx: &auth_core::AuthContext) -> Result<String, ApiError> {
    ctx.workspace()
        .map(str::to_owned)
        .ok_or_else(|| bad_request("This user has no workspace"))
}

/// `GET /api/external/skills`.
pub(super) async fn list_skills(Scoped(ctx, _): Scoped<InvokeSkills>) -> Answer {
    Ok(json(
        StatusCode::OK,
        json!({ "workspace": workspace(&ctx)?, "skills": SKILLS }),
    ))
}

/// `POST /api/external/skills/{id}/invoke` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InvokeBody {
    #[serde(default)]
    input: String,
}

/// `POST /api/external/skills/{id}/invoke`.
pub(super) async fn invoke_skill(
    Scoped(ctx, _): Scoped<InvokeSkills>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<InvokeBody>,
) -> Answer {
    check_text("input", &body.input)?;
    let output = invoke(&id, &body.input).ok_or_else(|| not_found(format!("No skill {id}")))?;
    Ok(json(
        StatusCode::OK,
        json!({ "skill": id, "workspace": workspace(&ctx)?, "output": output }),
    ))
}

/// `POST /api/external/chat/stream` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChatBody {
    message: String,
}

/// `POST /api/external/chat/stream`: a server-sent event stream, one
/// `delta` event per word of the answer, then `done`.
pub(super) async fn chat_stream(
    Scoped(ctx, _): Scoped<StreamChat>,
    JsonBody(body): JsonBody<ChatBody>,
) -> Answer {
    check_text("message", &body.message)?;
    let ws = workspace(&ctx)?;
    let answer = format!("You said: {}", body.message);
    let mut events: Vec<Event> = answer
        .split_whitespace()
        .map(|word| {
            Event::default()
                .event("delta")
                .data(json!({ "text": word }).to_string())
        })
        .collect();
    events.push(
        Event::default()
            .event("done")
            .data(json!({ "workspace": ws }).to_string()),
    );
    let stream = futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
    Ok(Sse::new(stream).into_response())
}

/// tRPC calls name their workspace: 400 without the header. (The `AuthLayer`
/// has already refused a workspace the user is not in.)
fn require_workspace_header(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key("x-workspace-id") {
        Ok(())
    } else {
        Err(bad_request(
            "The x-workspace-id header is required for tRPC calls: name the workspace, e.g. x-workspace-id: ws_alpha",
        ))
    }
}

/// `GET /trpc/entities.list`.
pub(super) async fn trpc_list(
    Scoped(ctx, _): Scoped<ReadEntities>,
    State(entities): State<Arc<Entities>>,
    headers: HeaderMap,
) -> Answer {
    require_workspace_header(&headers)?;
    let ws = workspace(&ctx)?;
    Ok(json(
        StatusCode::OK,
        json!({ "result": { "data": entities.list(&ws) } }),
    ))
}

/// `POST /trpc/entities.create` and `POST /api/hub/entities` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEntity {
    title: String,
    #[serde(default = "note")]
    kind: String,
}

fn note() -> String {
    "note".into()
}

fn create(
    entities: &Entities,
    ws: &str,
    body: &NewEntity,
) -> Result<super::workspace::Entity, ApiError> {
    check_text("title", &body.title)?;
    if body.title.trim().is_empty() || body.kind.trim().is_empty() || body.kind.len() > 64 {
        return Err(unprocessable(
            "title must not be empty; kind must be 1-64 bytes",
        ));
    }
    Ok(entities.create(ws, &body.kind, &body.title))
}

/// `POST /trpc/entities.create`.
pub(super) async fn trpc_create(
    Scoped(ctx, _): Scoped<WriteEntities>,
    State(entities): State<Arc<Entities>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewEntity>,
) -> Answer {
    require_workspace_header(&headers)?;
    let entity = create(&entities, &workspace(&ctx)?, &body)?;
    Ok(json(
        StatusCode::OK,
        json!({ "result": { "data": entity } }),
    ))
}

/// `GET /api/hub/entities`: `hub-protocol.read` alone is enough.
pub(super) async fn hub_list(
    Scoped(ctx, _): Scoped<HubRead>,
    State(entities): State<Arc<Entities>>,
) -> Answer {
    let ws = workspace(&ctx)?;
    Ok(json(
        StatusCode::OK,
        json!({ "workspace": ws, "entities": entities.list(&ws) }),
    ))
}

/// `POST /api/hub/entities`.
pub(super) async fn hub_create(
    Scoped(ctx, _): Scoped<HubWrite>,
    State(entities): State<Arc<Entities>>,
    JsonBody(body): JsonBody<NewEntity>,
) -> Answer {
    let entity = create(&entities, &workspace(&ctx)?, &body)?;
    Ok(json(StatusCode::CREATED, entity))
}

/// `GET /mcp/resources`: the workspace's entities as MCP resources.
pub(super) async fn mcp_resources(
    Scoped(ctx, _): Scoped<McpRead>,
    State(entities): State<Arc<Entities>>,
) -> Answer {
    let ws = workspace(&ctx)?;
    let resources: Vec<_> = entities
        .list(&ws)
        .into_iter()
        .map(|e| json!({ "uri": format!("entity://{}/{}", e.workspace, e.id), "name": e.title, "mimeType": "application/json" }))
        .collect();
    Ok(json(StatusCode::OK, json!({ "resources": resources })))
}
