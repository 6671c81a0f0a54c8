//! Errors: a limiter that cannot be built, a store that cannot answer.

/// A limiter configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two rules share a name (names key the buckets and label the headers).
    #[error("two rules are named {0:?}")]
    DuplicateRule(String),
    /// A rule name is empty or has characters other than ASCII letters,
    /// digits, `-`, `_`, `.` and `:`.
    #[error("rule name {0:?} must be 1-64 ASCII letters, digits, '-', '_', '.' or ':'")]
    InvalidRuleName(String),
    /// A quota of zero requests, or over a zero period.
    #[error("a quota needs {0}")]
    InvalidQuota(&'static str),
}

/// What [`LimitStoreError::Backend`] holds: the backend's own error, or a message.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A rate-limit store that could not answer (Redis down, slow or refusing).
///
/// ```
/// use std::error::Error;
/// use auth_ratelimit::LimitStoreError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = LimitStoreError::backend(io);
/// assert!(err.source().unwrap().downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitStoreError {
    /// The store did not answer in time.
    #[error("rate-limit store timed out")]
    Timeout,
    /// The store failed recently and is not retried yet.
    #[error("rate-limit store is down; not retried yet")]
    Down,
    /// The store answered with an error, or the connection failed; the
    /// cause (e.g. the `redis::RedisError`) is the error's `source`.
    #[error("rate-limit store failed")]
    Backend(#[source] Cause),
}

impl LimitStoreError {
    /// A [`Backend`](Self::Backend) error caused by `cause`: the backend's
    /// own error, or a message (`&str`, `String`) saying what went wrong.
    pub fn backend(cause: impl Into<Cause>) -> Self {
        Self::Backend(cause.into())
    }
}

/// `err` and its causes, outermost first, for the logs.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

pub(crate) fn check_rule_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidRuleName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn backend_keeps_its_cause() {
        let err = LimitStoreError::backend(std::fmt::Error);
        assert!(err.source().unwrap().is::<std::fmt::Error>());
        let err = LimitStoreError::backend(format!("unexpected reply {}", 3));
        assert_eq!(err.source().unwrap().to_string(), "unexpected reply 3");
        assert_eq!(chain(&err), "rate-limit store failed: unexpected reply 3");
        assert!(LimitStoreError::Timeout.source().is_none());
    }
}
