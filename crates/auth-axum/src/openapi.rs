//! An OpenAPI 3.1 document of the key router ([`keys_router`](crate::keys_router)),
//! its usage route and the admin router ([`admin_keys_router`](crate::admin_keys_router)),
//! for an application to serve (e.g. at `/openapi.json`).
//!
//! The component schemas are derived (`utoipa::ToSchema`) from the very
//! types the routers serialize and parse, auth-core's among them (its
//! `utoipa` feature), so a field added to a type is in the document; the
//! crate's tests validate real responses against them. Errors are described
//! in the default (flat) error format, `{"error": "<code>", "message": "..."}`.

#[cfg(feature = "openapi-ui")]
mod swagger_ui;

#[cfg(feature = "openapi-ui")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi-ui")))]
pub use swagger_ui::{swagger_ui, CONTENT_SECURITY_POLICY};

use auth_core::{audit::AuditPage, store::KeyMetadata};
use serde_json::{json, Value};
use utoipa::{
    openapi::{
        path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder},
        request_body::RequestBodyBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
        PathsBuilder, Ref, Required, ResponseBuilder, Type,
    },
    IntoParams, ToSchema,
};

use crate::keys::{
    ActivityQuery, AdminKeyList, CreateKey, CreatedKey, EditKey, KeyList, KeyOptions, ListParams,
    RotateKey, Usage, UsageParams,
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
    let mut schemas = Vec::new();
    collect::<Error>(&mut schemas);
    collect::<KeyList>(&mut schemas);
    collect::<CreatedKey<'_>>(&mut schemas);
    collect::<AdminKeyList>(&mut schemas);
    collect::<KeyOptions<'_>>(&mut schemas);
    collect::<CreateKey>(&mut schemas);
    collect::<EditKey>(&mut schemas);
    collect::<RotateKey>(&mut schemas);
    collect::<AuditPage>(&mut schemas);
    collect::<Usage>(&mut schemas);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
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

/// `T`'s schema and those it refers to, by name.
fn collect<T: ToSchema>(
    schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>,
) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
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

/// A JSON body of component `T`.
fn json_content<T: ToSchema>(example: Value) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(T::name())))
        .example(Some(example))
        .build()
}

fn ok<T: ToSchema>(status: &str, description: &str, example: Value) -> (String, ResponseBuilder) {
    (
        status.to_owned(),
        ResponseBuilder::new()
            .description(description)
            .content("application/json", json_content::<T>(example)),
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
                json_content::<Error>(
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

/// The query parameters `T` parses.
fn query_params<T: IntoParams>(op: OperationBuilder) -> OperationBuilder {
    T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .fold(op, OperationBuilder::parameter)
}

fn json_body<T: ToSchema>(
    example: Value,
    required: bool,
) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .content("application/json", json_content::<T>(example))
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
        vec![ok::<KeyList>(
            "200",
            "The keys this caller may act on",
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
    .request_body(Some(json_body::<CreateKey>(
        json!({"name": "ci", "scopes": ["nodes:read"], "expires_at": "2030-04-01T00:00:00Z"}),
        true,
    )));
    with(
        op,
        vec![
            ok::<CreatedKey<'_>>("201", "The new key and its token", created_example()),
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
        vec![ok::<KeyOptions<'_>>(
            "200",
            "The scopes this owner may see and grant",
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
            ok::<KeyMetadata>("200", "The key", key_example()),
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
    .request_body(Some(json_body::<EditKey>(
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
            ok::<KeyMetadata>("200", "The key after the edit", key_example()),
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
    .request_body(Some(json_body::<RotateKey>(
        json!({"grace_seconds": 3600}),
        false,
    )));
    let mut created = created_example();
    created["rotated_from"] = json!("2Xk9bTq0LmR");
    created["previous_key_ends_at"] = json!("2030-01-01T01:00:00Z");
    with(
        op,
        vec![
            ok::<CreatedKey<'_>>("201", "The replacement key and its token", created),
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
    .parameter(id_param());
    let op = query_params::<ActivityQuery>(op);
    with(
        op,
        vec![
            ok::<AuditPage>(
                "200",
                "A page of events",
                json!({"events": [{
                    "id": 42, "at": "2030-01-01T00:00:00Z", "key_id": KEY_ID, "actor": "alice",
                    "subject": null, "outcome": "success", "reason": null, "method": "GET",
                    "path": "/api/nodes", "status": 200, "client_ip": "203.0.113.7",
                    "user_agent": "curl/8.5.0"
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
    .parameter(id_param());
    let op = query_params::<UsageParams>(op);
    with(
        op,
        vec![
            ok::<Usage>(
                "200",
                "Every bucket from `since` to now, oldest first",
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
    );
    let op = query_params::<ListParams>(op);
    with(
        op,
        vec![
            ok::<AdminKeyList>(
                "200",
                "A page of keys, newest first",
                json!({"keys": [key_example()], "next_cursor": null}),
            ),
            refusal("400", &["bad_request"]),
            refusal("422", &["unprocessable_entity"]),
        ],
    )
}

/// A refusal in the default (flat) error format (auth-core renders it;
/// the real refusals the tests send validate against this).
#[derive(ToSchema)]
#[allow(dead_code)]
struct Error {
    /// The machine-readable code, e.g. `unauthorized`, `not_found`, `meta_too_large`.
    error: String,
    /// A sentence for people; not to be parsed.
    message: String,
}
