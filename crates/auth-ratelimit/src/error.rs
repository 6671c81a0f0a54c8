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

/// A rate-limit store that could not answer (Redis down, slow or refusing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("rate-limit store timed out")]
    Timeout,
    /// The store failed recently and is not retried yet.
    #[error("rate-limit store is down; not retried yet")]
    Down,
    /// The store answered with an error, or the connection failed.
    #[error("rate-limit store error: {0}")]
    Backend(String),
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
