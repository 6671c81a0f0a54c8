//! An OpenAPI 3.1 document of the key router ([`keys_router`](crate::keys_router)),
//! its usage route and the admin router ([`admin_keys_router`](crate::admin_keys_router)),
//! for an application to serve (e.g. at `/openapi.json`).
//!
//! The schemas describe the JSON the routers send and accept; the crate's
//! tests validate real responses against them, so the two cannot drift
//! apart unnoticed. Errors are described in the default (flat) error
//! format, `{"error": "<code>", "message": "..."}`.

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::{
    openapi::{
        path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder},
        request_body::RequestBodyBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
        PathsBuilder, Ref, Required, ResponseBuilder, Type,
    },
    ToSchema,
};

/// The document, with the key router mounted at `keys_prefix` (e.g.
/// `/api/tokens`) and, when given, the admin router at `admin_prefix`.
///
/// ```
/// let doc = auth_axum::openapi::document("/api/tokens", Some("/admin/keys"));
/// assert!(doc.paths.paths.contains_key("/api/tokens/{id}/usage"));
/// ```
pub fn document(keys_prefix: &str, admin_prefix: Option<&str>) -> OpenApi {
    let keys = keys_prefix.trim_end_matches('/');
    let mut paths = PathsBuilder::new()
        .path(
            root(keys),
            PathItemBuilder::new()
                .operation(HttpMethod::Get, list_keys())
                .operation(HttpMethod::Post, create_key())
                .build(),
        )
        .path(
            format!("{keys}/options"),
            PathItemBuilder::new()
                .operation(HttpMethod::Get, options())
                .build(),
        )
        .path(
            format!("{keys}/{{id}}"),
            PathItemBuilder::new()
                .operation(HttpMethod::Get, show_key("keys", "getKey"))
                .operation(HttpMethod::Patch, edit_key())
                .operation(HttpMethod::Delete, revoke_key("keys", "revokeKey"))
                .build(),
        )
        .path(
            format!("{keys}/{{id}}/rotate"),
            PathItemBuilder::new()
                .operation(HttpMethod::Post, rotate_key())
                .build(),
        )
        .path(
            format!("{keys}/{{id}}/activity"),
            PathItemBuilder::new()
                .operation(HttpMethod::Get, activity())
                .build(),
        )
        .path(
            format!("{keys}/{{id}}/usage"),
            PathItemBuilder::new()
                .operation(HttpMethod::Get, usage())
                .build(),
        );
    if let Some(admin) = admin_prefix {
        let admin = admin.trim_end_matches('/');
        paths = paths
            .path(
                root(admin),
                PathItemBuilder::new()
                    .operation(HttpMethod::Get, admin_list())
                    .build(),
            )
            .path(
                format!("{admin}/{{id}}"),
                PathItemBuilder::new()
                    .operation(HttpMethod::Get, show_key("admin", "adminGetKey"))
                    .operation(HttpMethod::Delete, revoke_key("admin", "adminRevokeKey"))
                    .build(),
            );
    }
    let components = ComponentsBuilder::new()
        .schema_from::<Error>()
        .schema_from::<Key>()
        .schema_from::<CreatedKey>()
        .schema_from::<KeyList>()
        .schema_from::<AdminKeyList>()
        .schema_from::<KeyOptions>()
        .schema_from::<ScopeOption>()
        .schema_from::<CreateKey>()
        .schema_from::<EditKey>()
        .schema_from::<RotateKey>()
        .schema_from::<RateLimit>()
        .schema_from::<Credits>()
        .schema_from::<Refill>()
        .schema_from::<ActivityPage>()
        .schema_from::<AuditEvent>()
        .schema_from::<Usage>()
        .schema_from::<UsageCount>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key")
                    .description(Some(
                        "An API key, `Authorization: Bearer <token>` (or the \
                         application's session, as its KeyOwner decides)",
                    ))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("keygate key API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Create, list, edit, rotate and revoke API keys; read their activity \
                     and usage; administer every key. Every answer carries \
                     `Cache-Control: no-store`.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .security(Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]))
        .build()
}

/// The prefix itself names the router's `/` (`/` when mounted at the root).
fn root(prefix: &str) -> String {
    if prefix.is_empty() {
        "/".to_owned()
    } else {
        prefix.to_owned()
    }
}

/// Example values shared by the operations.
const KEY_ID: &str = "4gfFC3mPy2q";

fn key_example() -> Value {
    json!({
        "id": KEY_ID,
        "state": "active",
        "name": "ci",
        "owner": "alice",
        "scopes": ["nodes:read"],
        "hint": "st_…x7Qa",
        "created_at": "2030-01-01T00:00:00Z",
        "last_used_at": null,
        "expires_at": "2030-04-01T00:00:00Z",
        "revoked_at": null,
        "created_by": null,
        "meta": {},
        "external_id": null,
        "disabled_at": null,
        "ip_allowlist": [],
        "last_used_ip": null,
        "rate_limit": null,
        "credits": null
    })
}

fn created_example() -> Value {
    let mut v = key_example();
    v["token"] = json!("st_4Vb9xQ2mZk7Lr1Tn8Yc3Hd6Wf0Ps5Ja9x7Qa");
    v
}

/// A JSON body of component `schema`.
fn json_content(schema: &str, example: Value) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .example(Some(example))
        .build()
}

fn ok(status: &str, description: &str, schema: &str, example: Value) -> (String, ResponseBuilder) {
    (
        status.to_owned(),
        ResponseBuilder::new()
            .description(description)
            .content("application/json", json_content(schema, example)),
    )
}

/// A refusal: `status`, with the `error` codes it may carry.
fn refusal(status: &str, codes: &[&str]) -> (String, ResponseBuilder) {
    let list = codes
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    (
        status.to_owned(),
        ResponseBuilder::new()
            .description(format!("Refused; `error` is one of {list}"))
            .content(
                "application/json",
                json_content(
                    "Error",
                    json!({"error": codes[0], "message": "A sentence for people"}),
                ),
            ),
    )
}

/// 401, 403 and 503: what every route may answer before it looks at the
/// request itself.
fn common(op: OperationBuilder, forbidden: &[&str]) -> OperationBuilder {
    let mut forbidden_codes = vec!["forbidden", "cross_origin_request"];
    forbidden_codes.extend_from_slice(forbidden);
    let mut op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    for (status, r) in [
        refusal("401", &["unauthorized"]),
        refusal("403", &forbidden_codes),
        refusal("500", &["internal"]),
        refusal("503", &["service_unavailable"]),
    ] {
        op = op.response(status, r.build());
    }
    op
}

fn id_param() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The key's id"))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .examples([json!(KEY_ID)]),
        ))
        .build()
}

fn query_param(name: &str, ty: Type, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(ty)))
        .build()
}

fn json_body(
    schema: &str,
    example: Value,
    required: bool,
) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .content("application/json", json_content(schema, example))
        .required(Some(if required {
            Required::True
        } else {
            Required::False
        }))
        .build()
}

fn op(tag: &str, id: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(id))
        .summary(Some(summary))
}

fn with(op: OperationBuilder, responses: Vec<(String, ResponseBuilder)>) -> OperationBuilder {
    responses
        .into_iter()
        .fold(op, |op, (status, r)| op.response(status, r.build()))
}

const BODY_422: &[&str] = &[
    "unprocessable_entity",
    "meta_too_large",
    "invalid_ip_allowlist",
    "invalid_rate_limit",
    "invalid_credits",
    "policy_not_enforced",
    "field_not_settable",
    "null_not_allowed",
    "expiry_required",
    "lifetime_exceeded",
];

fn list_keys() -> OperationBuilder {
    let op = common(
        op("keys", "listKeys", "The owner's keys, newest first"),
        &[],
    );
    with(
        op,
        vec![ok(
            "200",
            "The keys this caller may act on",
            "KeyList",
            json!({"keys": [key_example()]}),
        )],
    )
}

fn create_key() -> OperationBuilder {
    let op = common(
        op(
            "keys",
            "createKey",
            "Create a key; its token is shown this once",
        ),
        &["policy_exceeds_caller"],
    )
    .request_body(Some(json_body(
        "CreateKey",
        json!({"name": "ci", "scopes": ["nodes:read"], "expires_at": "2030-04-01T00:00:00Z"}),
        true,
    )));
    with(
        op,
        vec![
            ok(
                "201",
                "The new key and its token",
                "CreatedKey",
                created_example(),
            ),
            refusal("400", &["bad_request"]),
            refusal("415", &["unsupported_media_type"]),
            refusal("422", BODY_422),
        ],
    )
}

fn options() -> OperationBuilder {
    let op = common(
        op(
            "keys",
            "keyOptions",
            "What a \"New key\" form offers this owner",
        ),
        &[],
    );
    with(
        op,
        vec![ok(
            "200",
            "The scopes this owner may see and grant",
            "KeyOptions",
            json!({
                "owner": "alice",
                "scopes": [{"name": "nodes:read", "description": "Read nodes", "grantable": true}],
                "max_grace_seconds": 86400
            }),
        )],
    )
}

fn show_key(tag: &str, id: &str) -> OperationBuilder {
    let op = common(
        op(tag, id, "One key's metadata"),
        &["policy_exceeds_caller"],
    )
    .parameter(id_param());
    with(
        op,
        vec![
            ok("200", "The key", "Key", key_example()),
            refusal("404", &["not_found"]),
        ],
    )
}

fn edit_key() -> OperationBuilder {
    let op = common(
        op(
            "keys",
            "editKey",
            "Edit a key in place: rename, narrow, shorten, disable",
        ),
        &["policy_exceeds_caller"],
    )
    .parameter(id_param())
    .request_body(Some(json_body(
        "EditKey",
        json!({"scopes": ["nodes:read"], "enabled": false}),
        true,
    )));
    let mut codes = BODY_422.to_vec();
    codes.extend([
        "scopes_not_narrowed",
        "expiry_not_shortened",
        "nothing_to_change",
    ]);
    with(
        op,
        vec![
            ok("200", "The key after the edit", "Key", key_example()),
            refusal("400", &["bad_request"]),
            refusal("404", &["not_found"]),
            refusal("409", &["conflict"]),
            refusal("415", &["unsupported_media_type"]),
            refusal("422", &codes),
        ],
    )
}

fn revoke_key(tag: &str, id: &str) -> OperationBuilder {
    let op = common(
        op(tag, id, "Revoke a key, effective on its next request"),
        &["policy_exceeds_caller"],
    )
    .parameter(id_param())
    .response("204", ResponseBuilder::new().description("Revoked").build());
    with(op, vec![refusal("404", &["not_found"])])
}

fn rotate_key() -> OperationBuilder {
    let op = common(
        op(
            "keys",
            "rotateKey",
            "Replace a key; the old one works for the grace period",
        ),
        &["policy_exceeds_caller"],
    )
    .parameter(id_param())
    .request_body(Some(json_body(
        "RotateKey",
        json!({"grace_seconds": 3600}),
        false,
    )));
    let mut created = created_example();
    created["rotated_from"] = json!("2Xk9bTq0LmR");
    created["previous_key_ends_at"] = json!("2030-01-01T01:00:00Z");
    with(
        op,
        vec![
            ok(
                "201",
                "The replacement key and its token",
                "CreatedKey",
                created,
            ),
            refusal("400", &["bad_request"]),
            refusal("404", &["not_found"]),
            refusal("409", &["conflict"]),
            refusal("415", &["unsupported_media_type"]),
            refusal(
                "422",
                &[
                    "unprocessable_entity",
                    "grace_not_allowed_with_credits",
                    "lifetime_exceeded",
                ],
            ),
        ],
    )
}

fn activity() -> OperationBuilder {
    let op = common(
        op("usage", "keyActivity", "A key's audit events, newest first"),
        &["policy_exceeds_caller"],
    )
    .parameter(id_param())
    .parameter(query_param("limit", Type::Integer, "1-200 (default 50)"))
    .parameter(query_param(
        "before",
        Type::Integer,
        "A `next_cursor` from the previous page",
    ));
    with(
        op,
        vec![
            ok(
                "200",
                "A page of events",
                "ActivityPage",
                json!({"events": [{
                    "id": 42, "at": "2030-01-01T00:00:00Z", "key_id": KEY_ID, "actor": "alice",
                    "subject": null, "outcome": "success", "reason": null, "method": "GET",
                    "path": "/api/nodes", "status": 200, "client_ip": "203.0.113.7"
                }], "next_cursor": null}),
            ),
            refusal("400", &["bad_request"]),
            refusal("404", &["not_found"]),
        ],
    )
}

fn usage() -> OperationBuilder {
    let op = common(
        op("usage", "keyUsage", "Requests per bucket and outcome"),
        &["policy_exceeds_caller"],
    )
    .parameter(id_param())
    .parameter(query_param(
        "bucket",
        Type::String,
        "`hour` (default) or `day`",
    ))
    .parameter(query_param(
        "since",
        Type::String,
        "RFC 3339; default 7 days of hours, 30 of days",
    ));
    with(
        op,
        vec![
            ok(
                "200",
                "Every bucket from `since` to now, oldest first",
                "Usage",
                json!({"bucket": "hour", "buckets": [
                    {"start": "2030-01-01T00:00:00Z", "success": 12, "refused": 1, "rate_limited": 0}
                ]}),
            ),
            refusal("400", &["bad_request"]),
            refusal("404", &["not_found"]),
            refusal("422", &["unprocessable_entity"]),
        ],
    )
}

fn admin_list() -> OperationBuilder {
    let op = common(
        op(
            "admin",
            "adminListKeys",
            "Every key (or one organisation's), filtered and paged",
        ),
        &[],
    )
    .parameter(query_param("owner", Type::String, "Only this user's keys"))
    .parameter(query_param(
        "org",
        Type::String,
        "Only this organisation's keys",
    ))
    .parameter(query_param(
        "state",
        Type::String,
        "`active`, `disabled`, `revoked` or `expired`",
    ))
    .parameter(query_param(
        "last_used_before",
        Type::String,
        "RFC 3339; keys never used included",
    ))
    .parameter(query_param("created_by", Type::String, "A key id"))
    .parameter(query_param("limit", Type::Integer, "1-500 (default 100)"))
    .parameter(query_param(
        "after",
        Type::String,
        "A `next_cursor` from the previous page",
    ));
    with(
        op,
        vec![
            ok(
                "200",
                "A page of keys, newest first",
                "AdminKeyList",
                json!({"keys": [key_example()], "next_cursor": null}),
            ),
            refusal("400", &["bad_request"]),
            refusal("422", &["unprocessable_entity"]),
        ],
    )
}

// The schemas. Field docs are the descriptions in the document.

/// A refusal in the default (flat) error format.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Error {
    /// The machine-readable code, e.g. `unauthorized`, `not_found`, `meta_too_large`.
    error: String,
    /// A sentence for people; not to be parsed.
    message: String,
}

/// A key's metadata; never its secret or hash.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Key {
    id: String,
    /// `active`, `expiring`, `expired`, `revoked`, `disabled` or `replaced`.
    state: String,
    name: String,
    /// The owner's user id.
    owner: String,
    /// The owner's organisation, if any.
    #[schema(required = false)]
    org: Option<String>,
    scopes: Vec<String>,
    /// Prefix and last four characters of the token.
    hint: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// The replacement after a rotation.
    #[schema(required = false)]
    replaced_by: Option<String>,
    /// The key that made this one; `null` from the command line or a session.
    created_by: Option<String>,
    /// The key holder's metadata: user input, not vouched for.
    #[schema(value_type = Object)]
    meta: Value,
    /// The application's own id for the key.
    external_id: Option<String>,
    #[schema(format = DateTime)]
    disabled_at: Option<String>,
    /// CIDR blocks the key may be used from (`[]`: any).
    ip_allowlist: Vec<String>,
    last_used_ip: Option<String>,
    rate_limit: Option<RateLimit>,
    credits: Option<Credits>,
}

/// A new key: its metadata and its token, shown this once.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct CreatedKey {
    #[schema(inline)]
    #[serde(flatten)]
    key: Key,
    /// The secret; never shown again.
    token: String,
    /// For a rotation: the key it replaces.
    #[schema(required = false)]
    rotated_from: Option<String>,
    /// For a rotation: when the replaced key stops working.
    #[schema(required = false, format = DateTime)]
    previous_key_ends_at: Option<String>,
}

/// `GET /` of the key router.
#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyList {
    keys: Vec<Key>,
}

/// `GET /` of the admin router.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AdminKeyList {
    keys: Vec<Key>,
    /// Pass as `after` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// What a "New key" form offers this owner.
#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyOptions {
    owner: String,
    scopes: Vec<ScopeOption>,
    max_grace_seconds: u64,
}

/// A scope the form may offer.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ScopeOption {
    name: String,
    description: Option<String>,
    /// Whether this owner may grant it.
    grantable: bool,
}

/// `POST /`: only `name` is required; `null` is refused for every field but `expires_at`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct CreateKey {
    name: String,
    /// Absent: the service's default scopes; `[]`: none.
    #[schema(required = false)]
    scopes: Vec<String>,
    /// RFC 3339, or `null` for a key that does not expire.
    #[schema(required = false, format = DateTime)]
    expires_at: Option<String>,
    /// A JSON object of at most 4 KiB.
    #[schema(required = false, value_type = Object)]
    meta: Value,
    /// CIDR blocks or addresses, at most 64.
    #[schema(required = false)]
    ip_allowlist: Vec<String>,
    #[schema(required = false)]
    rate_limit: RateLimit,
    /// Uses the key starts with.
    #[schema(required = false)]
    remaining: u64,
    #[schema(required = false)]
    refill: Refill,
}

/// `PATCH /{id}`: at least one field.
#[derive(ToSchema)]
#[allow(dead_code)]
struct EditKey {
    #[schema(required = false)]
    name: String,
    /// Only narrows.
    #[schema(required = false)]
    scopes: Vec<String>,
    /// Only moves earlier, and stays in the future.
    #[schema(required = false, format = DateTime)]
    expires_at: String,
    /// `null` clears.
    #[schema(required = false, value_type = Option<Object>)]
    meta: Option<Value>,
    /// `false` disables; `true` enables again (not by a key-backed caller).
    #[schema(required = false)]
    enabled: bool,
    /// `[]` clears.
    #[schema(required = false)]
    ip_allowlist: Vec<String>,
}

/// `POST /{id}/rotate` (body optional).
#[derive(ToSchema)]
#[allow(dead_code)]
struct RotateKey {
    /// How long the old key keeps working (default 0).
    #[schema(required = false)]
    grace_seconds: u64,
}

/// A key's own quota: at most `limit` requests at once and no faster on average.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct RateLimit {
    #[schema(minimum = 1)]
    limit: u32,
    #[schema(minimum = 1)]
    period_seconds: u32,
}

/// A usage-limited key's credits.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Credits {
    remaining: u64,
    refill: Option<Refill>,
    #[schema(format = DateTime)]
    refilled_at: String,
}

/// Credits restored every period.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Refill {
    amount: u64,
    /// `hour`, `day`, `week` or `month`.
    every: String,
}

/// A page of a key's audit events.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ActivityPage {
    events: Vec<AuditEvent>,
    /// Pass as `before` for the next page; `null` on the last.
    next_cursor: Option<i64>,
}

/// One recorded use of a key.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AuditEvent {
    #[schema(required = false)]
    id: Option<i64>,
    #[schema(format = DateTime)]
    at: String,
    key_id: Option<String>,
    actor: Option<String>,
    subject: Option<String>,
    outcome: String,
    reason: Option<String>,
    method: String,
    path: String,
    status: Option<u16>,
    client_ip: Option<String>,
}

/// Requests per bucket and outcome.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Usage {
    /// `hour` or `day`.
    bucket: String,
    buckets: Vec<UsageCount>,
}

/// One bucket's counts.
#[derive(ToSchema)]
#[allow(dead_code)]
struct UsageCount {
    #[schema(format = DateTime)]
    start: String,
    success: u64,
    refused: u64,
    rate_limited: u64,
}
