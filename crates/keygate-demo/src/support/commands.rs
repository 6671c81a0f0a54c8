//! The command-line key commands every example has: `issue`, `list`, `revoke`.
//! They work on the store directly, so they run while the server runs.

use std::io::Write;

use auth_core::{store::KeyRecord, IssuedKey, KeyId, NewKey, Principal, ScopeSet};
use time::format_description::well_known::Rfc3339;

use super::Backend;

/// A user who may hold keys, and the most their keys may be granted.
#[derive(Clone, Debug)]
pub struct Holder {
    /// The user (and organisation).
    pub principal: Principal,
    /// The scopes their keys may hold.
    pub ceiling: ScopeSet,
}

/// The refusal for a user the example does not know, naming those it does.
pub fn unknown_user(user: &str, users: &[&str]) -> String {
    format!("unknown user '{user}'; users: {}", users.join(", "))
}

/// An example's key rules.
#[derive(Debug)]
pub struct KeyRules {
    /// The token prefix, e.g. `st_`.
    pub prefix: &'static str,
    /// Every scope the example knows.
    pub known_scopes: &'static [&'static str],
    /// The key holder a user id names, or why that user cannot hold keys.
    pub holder: fn(&str) -> Result<Holder, String>,
    /// Whether `issue` needs `--scope` (otherwise a key gets the holder's ceiling).
    pub scope_required: bool,
}

impl KeyRules {
    /// The known scopes as a set.
    pub fn known(&self) -> ScopeSet {
        ScopeSet::parse(self.known_scopes).expect("example scopes are valid")
    }

    /// The scopes a key for `holder` gets when asked for `asked`: each must
    /// be known and within the holder's ceiling.
    pub fn grant(&self, holder: &Holder, asked: &[String]) -> Result<ScopeSet, String> {
        if asked.is_empty() {
            if self.scope_required {
                return Err(format!(
                    "name at least one --scope; known scopes: {}",
                    self.known_scopes.join(", ")
                ));
            }
            return Ok(holder.ceiling.clone());
        }
        let known = self.known();
        for scope in asked {
            if !known.has(scope) {
                return Err(format!(
                    "unknown scope '{scope}'; known scopes: {}",
                    self.known_scopes.join(", ")
                ));
            }
            if !holder.ceiling.has(scope) {
                return Err(format!(
                    "user '{}' may not hold the scope '{scope}'",
                    holder.principal.user_id()
                ));
            }
        }
        ScopeSet::parse(asked).map_err(|e| e.to_string())
    }
}

/// `issue`: a new key for `user`.
pub async fn issue(
    backend: &Backend,
    rules: &KeyRules,
    user: &str,
    scopes: &[String],
    name: &str,
) -> Result<IssuedKey, String> {
    let holder = (rules.holder)(user)?;
    let scopes = rules.grant(&holder, scopes)?;
    backend
        .issuer(rules.prefix)
        .issue(NewKey::new(holder.principal, name, scopes))
        .await
        .map_err(|e| format!("cannot issue the key: {e}"))
}

/// `list`: the user's keys, newest first.
pub async fn list(
    backend: &Backend,
    rules: &KeyRules,
    user: &str,
) -> Result<Vec<KeyRecord>, String> {
    let holder = (rules.holder)(user)?;
    let keys = backend
        .issuer(rules.prefix)
        .list(holder.principal.user_id())
        .await
        .map_err(|e| format!("cannot list keys: {e}"))?;
    Ok(keys
        .into_iter()
        .filter(|k| k.owner == holder.principal)
        .collect())
}

/// `revoke`: the key stops working at once, here and in running servers.
pub async fn revoke(backend: &Backend, rules: &KeyRules, id: &str) -> Result<KeyRecord, String> {
    let id: KeyId = id
        .parse()
        .map_err(|_| format!("'{id}' is not a key id (11 letters and digits, see `list`)"))?;
    let issuer = backend.issuer(rules.prefix);
    let missing = || format!("no key with id {id}");
    issuer
        .get(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(missing)?;
    if !issuer.revoke(id).await.map_err(|e| e.to_string())? {
        return Err(missing());
    }
    issuer
        .get(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(missing)
}

/// Keys as a table for `list`. Never a secret: the table shows the hint.
pub fn format_keys(keys: &[KeyRecord]) -> String {
    let when = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| t.replace_nanosecond(0).ok())
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "{:<11}  {:<20}  {:<16}  {:<20}  {:<20}  {:<20}  scopes\n",
        "id", "name", "hint", "created", "last used", "revoked"
    );
    for k in keys {
        let scopes: Vec<&str> = k.scopes.iter().collect();
        out.push_str(&format!(
            "{:<11}  {:<20}  {:<16}  {:<20}  {:<20}  {:<20}  {}\n",
            k.id.to_string(),
            k.name.chars().take(20).collect::<String>(),
            k.hint,
            when(Some(k.created_at)),
            when(k.last_used_at),
            when(k.revoked_at),
            scopes.join(" "),
        ));
    }
    out
}

/// The `issue` command: the token, alone, on `out` (so that
/// `TOKEN=$(... issue ...)` works); what was issued on `log`.
pub async fn issue_command(
    backend: &Backend,
    rules: &KeyRules,
    user: &str,
    scopes: &[String],
    name: &str,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<(), String> {
    let key = issue(backend, rules, user, scopes, name).await?;
    let granted: Vec<&str> = key.record.scopes.iter().collect();
    let _ = writeln!(
        log,
        "issued key {} \"{}\" for {user} with scopes [{}] in {}",
        key.record.id,
        key.record.name,
        granted.join(", "),
        backend.location
    );
    let _ = writeln!(
        log,
        "the token below is shown once and cannot be recovered:"
    );
    writeln!(out, "{}", key.token.expose_secret())
        .map_err(|e| format!("cannot print the token: {e}"))
}

/// The `list` command: a table on `out`, or a note on `log` when there are no keys.
pub async fn list_command(
    backend: &Backend,
    rules: &KeyRules,
    user: &str,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<(), String> {
    let keys = list(backend, rules, user).await?;
    if keys.is_empty() {
        let _ = writeln!(log, "{user} has no keys in {}", backend.location);
        return Ok(());
    }
    write!(out, "{}", format_keys(&keys)).map_err(|e| e.to_string())
}

/// The `revoke` command: what was revoked, on `log`.
pub async fn revoke_command(
    backend: &Backend,
    rules: &KeyRules,
    id: &str,
    log: &mut dyn Write,
) -> Result<(), String> {
    let key = revoke(backend, rules, id).await?;
    let _ = writeln!(
        log,
        "revoked key {} \"{}\" of {}",
        key.id,
        key.name,
        key.owner.user_id()
    );
    Ok(())
}
