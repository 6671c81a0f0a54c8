//! Small HTTP helpers the examples' handlers share.

use auth_axum::Auth;
use auth_core::{response::ErrorFormat, AuthContext, AuthError};
use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;

/// `scope!(Name, "a:scope")`: a unit type whose [`ScopeRule`](auth_axum::ScopeRule)
/// asks for that one scope, for `Scoped<Name>` in a handler's arguments.
macro_rules! scope {
    ($name:ident, $scope:literal) => {
        #[doc = concat!("`", $scope, "`.")]
        pub(crate) struct $name;
        impl auth_axum::ScopeRule for $name {
            const SCOPES: &'static [&'static str] = &[$scope];
            const MATCH: auth_axum::Match = auth_axum::Match::All;
        }
    };
}
pub(crate) use scope;

/// `GET /api/me`: the authenticated context: `key_id`, `actor` (the key's
/// owner), `user` (the effective user), `scopes`, `workspace`, …
pub async fn me(Auth(ctx): Auth) -> Json<AuthContext> {
    Json(ctx)
}

/// What a handler answers.
pub type Answer = Result<Response, ApiError>;

/// A refusal: in the flat format of the examples (`{"error": code,
/// "message": ...}`), or one already rendered by an extractor.
#[derive(Debug)]
pub enum ApiError {
    /// `{"error": code, "message": message}` with `status`.
    Flat {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// A response made elsewhere (e.g. an `AuthRejection`), boxed: it is large.
    Rendered(Box<Response>),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Flat {
                status,
                code,
                message,
            } => {
                // The same renderer as the auth layer's refusals.
                let err = AuthError::custom(code, status, message);
                ErrorFormat::Flat.render(&err).map(axum::body::Body::from)
            }
            Self::Rendered(res) => *res,
        }
    }
}

impl From<auth_axum::AuthRejection> for ApiError {
    fn from(rejection: auth_axum::AuthRejection) -> Self {
        Self::Rendered(Box::new(rejection.into_response()))
    }
}

/// An error in the flat format of the examples: `{"error": code, "message": ...}`.
pub fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Flat {
        status,
        code,
        message: message.into(),
    }
}

/// 404 `not_found`.
pub fn not_found(message: impl Into<String>) -> ApiError {
    error(StatusCode::NOT_FOUND, "not_found", message)
}

/// 403 `forbidden`.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    error(StatusCode::FORBIDDEN, "forbidden", message)
}

/// 400 `bad_request`.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// 422 `unprocessable_entity`.
pub fn unprocessable(message: impl Into<String>) -> ApiError {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
        message,
    )
}

/// `status` with a JSON body.
pub fn json(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, Json(body)).into_response()
}

/// A JSON request body whose refusals are JSON too: 400 when the body is not
/// JSON, 422 (naming the field) when it has the wrong shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::Rendered(Box::new(e.into_response())))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.classify() == serde_json::error::Category::Data {
                unprocessable(format!("Invalid request body: {e}"))
            } else {
                bad_request("The request body must be a JSON object")
            }
        })
    }
}
