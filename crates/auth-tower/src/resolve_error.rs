//! The error an application's resolver returns when it cannot answer.

use std::fmt;

/// A resolver (subject, workspace, grant) could not answer, e.g. its database
/// is down. The request is refused with 503 `unavailable` (fail closed); the
/// message goes to the logs only, never to the client.
///
/// ```
/// let e = auth_tower::ResolveError::new("users table unreachable");
/// assert_eq!(e.to_string(), "users table unreachable");
/// ```
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(String);

impl ResolveError {
    /// An error described by `message` (for logs).
    pub fn new(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }
}

impl fmt::Debug for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResolveError({:?})", self.0)
    }
}

impl From<auth_core::store::StoreError> for ResolveError {
    fn from(e: auth_core::store::StoreError) -> Self {
        Self::new(e)
    }
}
