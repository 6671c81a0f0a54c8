//! Who runs a command that changes keys, and the audit event naming them.
//!
//! Every change the command line makes is written to the services' own
//! audit log, with the operator as the actor: `keygate audit --key ID`
//! shows who issued, edited, disabled, enabled, revoked or rotated a key
//! from here, next to the key's requests.

use auth_core::{audit::AuditOutcome, AuditEvent, KeyId};
use http::Method;
use time::OffsetDateTime;

use crate::{db::Db, error::CliError};

/// The method column of the command line's audit events (requests have an
/// HTTP method there).
pub(crate) const METHOD: &str = "CLI";

/// Longest operator name kept.
const MAX_NAME: usize = 128;

/// The person (or automation) running the command.
#[derive(Clone, Debug)]
pub(crate) struct Operator(String);

impl Operator {
    /// `--as NAME` (or `KEYGATE_OPERATOR`), else the OS user.
    pub(crate) fn resolve(given: Option<&str>) -> Result<Self, CliError> {
        let name = match given {
            Some(name) => name.trim().to_owned(),
            None => os_user().ok_or_else(|| {
                CliError::usage("cannot tell which OS user is running this: pass --as NAME")
            })?,
        };
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(CliError::usage(format!(
                "--as must be 1-{MAX_NAME} bytes with no control characters"
            )));
        }
        Ok(Self(name))
    }

    /// Writes the event for `action` (e.g. `keys disable`) on `key` and
    /// waits until it is stored: the command reports a failure rather than
    /// exit with the change unrecorded.
    pub(crate) async fn record(
        &self,
        db: &Db,
        action: &str,
        key: Option<KeyId>,
        created: Option<KeyId>,
    ) -> Result<(), CliError> {
        let mut event = AuditEvent::new(
            OffsetDateTime::now_utc(),
            AuditOutcome::Success,
            Method::from_bytes(METHOD.as_bytes()).expect("CLI is a method token"),
            match key {
                Some(id) => format!("{action} {id}"),
                None => action.to_owned(),
            },
        );
        event.key_id = key;
        event.created_key = created;
        // Every change the command line makes is key management.
        event.key_management = true;
        event.actor = Some(self.0.as_str().into());
        event.user_agent = Some(concat!("keygate/", env!("CARGO_PKG_VERSION")).into());
        db.audit.record(event);
        db.audit.flush().await.map_err(|e| {
            CliError::unavailable(format!(
                "{action} done, but its audit event could not be written: {e}"
            ))
        })
    }
}

/// The login name of the user running the process.
fn os_user() -> Option<String> {
    for var in ["USER", "LOGNAME", "USERNAME"] {
        if let Some(name) = std::env::var(var).ok().filter(|n| !n.trim().is_empty()) {
            return Some(name);
        }
    }
    uid_name()
}

/// The name of the process's user id in `/etc/passwd` (containers often
/// set no `USER`), else `uid:N`.
#[cfg(unix)]
fn uid_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse() == Ok(uid)).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid:{uid}")))
}

#[cfg(not(unix))]
fn uid_name() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(Operator::resolve(Some(" ops ")).unwrap().0, "ops");
        for bad in ["", "a\nb", &"x".repeat(MAX_NAME + 1)] {
            assert_eq!(Operator::resolve(Some(bad)).unwrap_err().exit as u8, 2);
        }
    }
}
