//! Errors and the exit codes scripts can rely on.

use auth_core::{store::StoreError, IssueError};

/// Exit codes. Documented in `--help` and the README; never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Exit {
    /// `scan` found at least one well-formed token.
    Found = 1,
    /// Usage error or invalid argument (clap uses 2 as well).
    Usage = 2,
    /// No such key.
    NotFound = 3,
    /// The key is not in a state that allows the operation.
    Conflict = 4,
    /// The database is unreachable or failed.
    Unavailable = 5,
    /// A file could not be read or written.
    Io = 6,
}

/// A failed command: what to print (one line) and how to exit.
#[derive(Debug)]
pub(crate) struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub(crate) fn io(message: impl Into<String>) -> Self {
        Self::new(Exit::Io, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Exit::Unavailable, message)
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        let exit = match e {
            StoreError::NotFound => Exit::NotFound,
            StoreError::Conflict(_) => Exit::Conflict,
            // `Unavailable`, `Corrupt` and any failure added later.
            _ => Exit::Unavailable,
        };
        Self::new(exit, e.to_string())
    }
}

impl From<IssueError> for CliError {
    fn from(e: IssueError) -> Self {
        let exit = match e {
            IssueError::InvalidName | IssueError::InvalidExpiry => Exit::Usage,
            IssueError::NotFound => Exit::NotFound,
            IssueError::Conflict(_) => Exit::Conflict,
            // `Hash`, `Unavailable` and any failure added later.
            _ => Exit::Unavailable,
        };
        Self::new(exit, e.to_string())
    }
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        Self::unavailable(format!("database error: {e}"))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::io(e.to_string())
    }
}
