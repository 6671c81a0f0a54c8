//! The error an application's resolver returns when it cannot answer.

use std::error::Error;

/// What [`ResolveError`] holds: the resolver's own error, or a message.
type Cause = Box<dyn Error + Send + Sync + 'static>;

/// A resolver (subject, workspace, grant) could not answer, e.g. its database
/// is down. The request is refused with 503 `unavailable` (fail closed); the
/// cause goes to the logs only, never to the client.
///
/// The cause is the error's [`source`](Error::source): the resolver's own
/// error ([`ResolveError::new`] takes any error), or a message.
///
/// ```
/// use std::error::Error;
///
/// let e = auth_tower::ResolveError::new("users table unreachable");
/// assert_eq!(e.to_string(), "resolver could not answer");
/// assert_eq!(e.source().unwrap().to_string(), "users table unreachable");
///
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "directory timed out");
/// let e = auth_tower::ResolveError::new(io);
/// assert!(e.source().unwrap().downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("resolver could not answer")]
pub struct ResolveError {
    #[source]
    cause: Cause,
}

impl ResolveError {
    /// An error caused by `cause`: the resolver's own error, or a message
    /// (`&str`, `String`) describing what failed, for the logs.
    pub fn new(cause: impl Into<Cause>) -> Self {
        Self {
            cause: cause.into(),
        }
    }
}

impl From<auth_core::store::StoreError> for ResolveError {
    fn from(e: auth_core::store::StoreError) -> Self {
        Self::new(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_the_cause() {
        let e = ResolveError::from(auth_core::store::StoreError::NotFound);
        let source = e.source().expect("a source");
        assert!(matches!(
            source.downcast_ref::<auth_core::store::StoreError>(),
            Some(auth_core::store::StoreError::NotFound)
        ));

        let e = ResolveError::new(format!("shard {} unreachable", 3));
        assert_eq!(e.source().unwrap().to_string(), "shard 3 unreachable");
    }
}
