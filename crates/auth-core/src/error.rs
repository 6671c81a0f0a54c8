//! Authentication errors: a stable public code, and an internal reason for logs.

use std::{borrow::Cow, fmt, time::Duration};

use http::StatusCode;

/// The machine-readable code sent to clients. Stable: clients match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 401: missing or invalid credential.
    Unauthorized,
    /// 403: valid credential, not allowed to do this.
    Forbidden,
    /// 429: too many requests.
    RateLimited,
    /// 503: the key store (or another dependency) is unreachable; fail closed.
    Unavailable,
    /// 400: the request itself is malformed (e.g. a missing required header).
    BadRequest,
    /// 404: no such resource (or not visible to this principal).
    NotFound,
    /// 422: well-formed but invalid input.
    Unprocessable,
    /// 409: the request conflicts with the resource's state.
    Conflict,
    /// 403: the key may not be used from the client's address.
    IpNotAllowed,
    /// 500: an unexpected server error.
    Internal,
    /// An application's own code and status, e.g. `version_conflict` / 409.
    Custom(&'static str, StatusCode),
}

impl ErrorCode {
    /// The code as sent in error bodies, e.g. `unauthorized`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Unprocessable => "unprocessable_entity",
            Self::Conflict => "conflict",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::Internal => "internal",
            Self::Custom(code, _) => code,
        }
    }

    /// The HTTP status for this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict => StatusCode::CONFLICT,
            Self::IpNotAllowed => StatusCode::FORBIDDEN,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Custom(_, status) => status,
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            Self::Unauthorized => "Invalid or missing API token",
            Self::Forbidden => "Token valid but insufficient access level",
            Self::RateLimited => "Rate limit exceeded",
            Self::Unavailable => "Authentication service temporarily unavailable",
            Self::BadRequest => "Bad request",
            Self::NotFound => "Not found",
            Self::Unprocessable => "Invalid request",
            Self::Conflict => "Conflict",
            Self::IpNotAllowed => "This token may not be used from this address",
            Self::Internal => "Internal server error",
            Self::Custom(..) => "Request failed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares [`RejectReason`] with its audit names, so that the enum, its
/// names and the reverse lookup cannot drift apart (as axum-core declares
/// its rejections with a macro).
macro_rules! reject_reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident => $name:literal,)+) => {
        /// Why a request was refused. For logs and audit only: never sent to clients,
        /// since telling "unknown key" from "wrong secret" would help an attacker.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(
            feature = "utoipa",
            derive(utoipa::ToSchema),
            schema(rename_all = "snake_case")
        )]
        #[non_exhaustive]
        pub enum RejectReason {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl RejectReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [RejectReason] = &[$(Self::$variant,)+];

            /// A short snake_case name for logs and audit rows.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }

            /// The reason named by [`RejectReason::as_str`].
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

reject_reasons! {
    /// No credential in the request.
    Missing => "missing",
    /// Not a well-formed token (length, characters, duplicate headers, …).
    Malformed => "malformed",
    /// A well-formed token with a prefix this service does not issue.
    WrongPrefix => "wrong_prefix",
    /// The checksum does not match.
    BadChecksum => "bad_checksum",
    /// No key with this id.
    UnknownKey => "unknown_key",
    /// The key was revoked (or rotated and its grace period is over).
    Revoked => "revoked",
    /// The key expired.
    Expired => "expired",
    /// The key is disabled by its owner (answered like an unknown key).
    Disabled => "disabled",
    /// The key exists but the secret is wrong.
    WrongSecret => "wrong_secret",
    /// Too many wrong secrets for this key id lately; not checked.
    Throttled => "throttled",
    /// The credential lacks a required scope.
    InsufficientScope => "insufficient_scope",
    /// The principal's access level on the resource is too low.
    InsufficientAccess => "insufficient_access",
    /// The key may not act on behalf of another user, or not of this one.
    ImpersonationDenied => "impersonation_denied",
    /// The subject user named in the request does not exist.
    UnknownSubject => "unknown_subject",
    /// The principal does not belong to the requested workspace.
    WorkspaceDenied => "workspace_denied",
    /// The key has an IP allowlist and the client address is not on it
    /// (or is unknown).
    IpNotAllowed => "ip_not_allowed",
    /// A rate limit was exceeded.
    RateLimited => "rate_limited",
    /// A usage-limited key has no credits left.
    UsageExceeded => "usage_exceeded",
    /// The store or another dependency failed.
    StoreUnavailable => "store_unavailable",
    /// The server failed in a way it did not expect (a misconfiguration,
    /// a hashing failure): answered 500.
    Internal => "internal",
    /// The request is invalid in another way.
    InvalidRequest => "invalid_request",
    /// The resource does not exist.
    NotFound => "not_found",
    /// The key was revoked because its token was reported leaked (e.g. by
    /// a secret scanner): the reason of the revocation's own audit event.
    Leaked => "leaked",
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: public code and message, internal reason.
///
/// `Display` shows the code and the public message only; neither ever
/// contains the credential.
///
/// ```
/// use auth_core::{AuthError, ErrorCode, RejectReason};
/// let e = AuthError::unauthorized(RejectReason::WrongSecret);
/// assert_eq!(e.code(), ErrorCode::Unauthorized);
/// assert_eq!(e.message(), "Invalid or missing API token");
/// assert_eq!(e.status(), 401);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AuthError(Box<Details>);

// Boxed: a `Result<AuthContext, AuthError>` is then two words, which the hot
// path returns in registers. At 88 bytes it went through memory at every
// step, and the reads back stalled on store forwarding. An error pays one
// allocation; its response makes several.
#[derive(Clone, PartialEq, Eq)]
struct Details {
    code: ErrorCode,
    reason: RejectReason,
    message: Cow<'static, str>,
    scope: Option<Box<str>>,
    retry_after: Option<Duration>,
}

impl AuthError {
    /// An error with `code`, `reason` and the code's default message.
    pub fn new(code: ErrorCode, reason: RejectReason) -> Self {
        Self(Box::new(Details {
            code,
            reason,
            message: Cow::Borrowed(code.default_message()),
            scope: None,
            retry_after: None,
        }))
    }

    /// 401 for `reason` with the generic message.
    pub fn unauthorized(reason: RejectReason) -> Self {
        Self::new(ErrorCode::Unauthorized, reason)
    }

    /// 403 with a message for the client.
    pub fn forbidden(reason: RejectReason, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Forbidden, reason).with_message(message)
    }

    /// 403 naming the scope the credential lacks.
    pub fn missing_scope(scope: &str) -> Self {
        let mut e = Self::forbidden(
            RejectReason::InsufficientScope,
            format!("Token lacks the required scope '{scope}'"),
        );
        e.0.scope = Some(scope.into());
        e
    }

    /// 429, to be retried after `retry_after`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut e = Self::new(ErrorCode::RateLimited, RejectReason::RateLimited);
        e.0.retry_after = Some(retry_after);
        e
    }

    /// 429 `usage_exceeded`: the key has used up its credits. `retry_after`
    /// is when they are refilled, if they are.
    pub fn usage_exceeded(retry_after: Option<Duration>) -> Self {
        let mut e = Self::new(
            ErrorCode::Custom("usage_exceeded", StatusCode::TOO_MANY_REQUESTS),
            RejectReason::UsageExceeded,
        )
        .with_message("Usage limit of this API key exceeded");
        e.0.retry_after = retry_after;
        e
    }

    /// 503: a dependency is down, so the request is refused (fail closed).
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unavailable, RejectReason::StoreUnavailable).with_message(message)
    }

    /// 400 with a message for the client.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, RejectReason::InvalidRequest).with_message(message)
    }

    /// 404 with a message for the client.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, RejectReason::NotFound).with_message(message)
    }

    /// 422 with a message for the client.
    pub fn unprocessable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unprocessable, RejectReason::InvalidRequest).with_message(message)
    }

    /// 409 with a message for the client.
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Conflict, RejectReason::InvalidRequest).with_message(message)
    }

    /// An application-defined code and status, rendered like every other error.
    ///
    /// ```
    /// use auth_core::{AuthError, response::ErrorFormat};
    /// use http::StatusCode;
    /// let e = AuthError::custom("version_conflict", StatusCode::CONFLICT, "Stale version");
    /// let res = ErrorFormat::Flat.render(&e);
    /// assert_eq!(res.status(), 409);
    /// assert_eq!(res.body().as_ref(), br#"{"error":"version_conflict","message":"Stale version"}"#);
    /// ```
    pub fn custom(
        code: &'static str,
        status: StatusCode,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(
            ErrorCode::Custom(code, status),
            RejectReason::InvalidRequest,
        )
        .with_message(message)
    }

    /// Tells the client when to retry (`Retry-After`), e.g. on a 503 for a
    /// full argon2 queue.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// Replaces the public message.
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.0.message = message.into();
        self
    }

    /// The public code.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.code.status()
    }

    /// The internal reason (logs and audit only).
    pub fn reason(&self) -> RejectReason {
        self.0.reason
    }

    /// The public message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The missing scope, for a 403 `insufficient_scope`.
    pub fn scope(&self) -> Option<&str> {
        self.0.scope.as_deref()
    }

    /// When to retry, for a 429 or a busy 503.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// Whether the request carried a credential (drives `WWW-Authenticate`).
    pub fn credential_presented(&self) -> bool {
        self.0.reason != RejectReason::Missing
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        f.debug_struct("AuthError")
            .field("code", &d.code)
            .field("reason", &d.reason)
            .field("message", &d.message)
            .field("scope", &d.scope)
            .field("retry_after", &d.retry_after)
            .finish()
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_unique_name_that_reads_back() {
        let mut names = std::collections::HashSet::new();
        for &reason in RejectReason::ALL {
            assert!(names.insert(reason.as_str()), "{reason:?} repeats a name");
            assert_eq!(RejectReason::from_name(reason.as_str()), Some(reason));
        }
        assert_eq!(RejectReason::from_name("no_such_reason"), None);
        assert_eq!(RejectReason::Internal.as_str(), "internal");
    }
}
