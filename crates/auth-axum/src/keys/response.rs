//! Responses of the key-management routes: their bodies, and how they are
//! sent. No body holds a hash; only a freshly issued key's holds its token.

use auth_core::{audit::KeyManaged, store::KeyMetadata, IssuedKey, KeyId};
use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use time::OffsetDateTime;

use super::error::{ErrorStyle, KeyApiError};

/// Answers `result`, or its refusal in the configured error format. Nothing
/// here may be cached: metadata is private and a token is shown once.
pub(crate) fn respond(style: &ErrorStyle, result: Result<Response, KeyApiError>) -> Response {
    let mut res = result.unwrap_or_else(|e| style.render(e));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `res`, marked as key management for the request's audit event (see
/// [`KeyManaged`]) whatever its outcome: a refused attempt at a key is kept
/// as surely as a change.
pub(crate) fn key_managed(mut res: Response) -> Response {
    res.extensions_mut().insert(KeyManaged);
    res
}

/// `body` as JSON with `status`.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (status, Json(body)).into_response()
}

/// A new key: its metadata and its token, shown this once.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct CreatedKey<'a> {
    #[serde(flatten)]
    pub(crate) key: KeyMetadata,
    /// The secret; never shown again.
    pub(crate) token: &'a str,
    /// For a rotation: the key it replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rotated_from: Option<KeyId>,
    /// For a rotation: when the replaced key stops working.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub(crate) previous_key_ends_at: Option<OffsetDateTime>,
}

impl<'a> CreatedKey<'a> {
    pub(crate) fn new(issued: &'a IssuedKey) -> Self {
        Self {
            key: issued.record.metadata(),
            token: issued.token.expose_secret(),
            rotated_from: None,
            previous_key_ends_at: None,
        }
    }
}

/// `GET /`: the owner's keys, newest first.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct KeyList {
    pub(crate) keys: Vec<KeyMetadata>,
}
