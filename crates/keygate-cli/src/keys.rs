//! `keys issue|list|show|revoke|rotate`, through the services' own issuer,
//! so a revocation is announced to running servers exactly as theirs are.
//! Each change is written to the audit log in the operator's name.

use std::process::ExitCode;

use auth_core::{
    store::KeyMetadata, store::KeyRecord, IssuedKey, KeyId, KeyIssuer, NewKey, Principal, ScopeSet,
    SecretHasher, TokenPrefix,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    cli::{IdArgs, IssueArgs, ListArgs, RotateArgs, State},
    db::{Db, Pool},
    error::{CliError, Exit},
    operator::Operator,
    output::{self, Table},
};

/// The key router's body for a new key (same field names), so scripts read
/// one shape from the API and from here.
#[derive(Serialize)]
struct CreatedKey<'a> {
    #[serde(flatten)]
    key: KeyMetadata,
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotated_from: Option<KeyId>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    previous_key_ends_at: Option<OffsetDateTime>,
}

/// The key router's listing body: `{"keys": [...]}`.
#[derive(Serialize)]
struct KeyList {
    keys: Vec<KeyMetadata>,
}

/// The prefix to issue with: `--prefix`, else the one the services on this
/// database recorded. Never a guess: a token with a prefix the service does
/// not accept is refused by it.
async fn issuing_prefix(db: &Db, given: Option<&str>) -> Result<String, CliError> {
    let recorded = db.keys.issuing_prefixes().await?;
    if let Some(given) = given {
        if !recorded.is_empty() && !recorded.iter().any(|p| p.prefix == given) {
            output::note(&format!(
                "warning: the services on this database issue {}; a {given} token works only                  where the verifier also accepts {given}",
                joined(&recorded)
            ));
        }
        return Ok(given.to_owned());
    }
    match recorded.as_slice() {
        [only] => Ok(only.prefix.clone()),
        [] => Err(CliError::usage(
            "no service has recorded its token prefix in this database yet (services record it              when they start): pass --prefix as the service's verifier expects it",
        )),
        several => Err(CliError::usage(format!(
            "the services on this database issue {}: pass --prefix to choose",
            joined(several)
        ))),
    }
}

fn joined(prefixes: &[auth_core::store::IssuingPrefix]) -> String {
    prefixes
        .iter()
        .map(|p| p.prefix.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

fn issuer(db: &Db, prefix: &str) -> Result<KeyIssuer, CliError> {
    let prefix = TokenPrefix::new(prefix).map_err(|e| CliError::usage(e.to_string()))?;
    Ok(KeyIssuer::new(
        db.keys.clone(),
        SecretHasher::default(),
        prefix,
    ))
}

fn parse_id(id: &str) -> Result<KeyId, CliError> {
    id.trim().parse().map_err(|_| {
        CliError::usage(format!(
            "'{}' is not a key id (11 letters and digits, as `keys list` shows it)",
            id.chars().take(32).collect::<String>()
        ))
    })
}

fn not_found(id: KeyId) -> CliError {
    CliError::new(Exit::NotFound, format!("no key with id {id}"))
}

/// Where a key stands at `now`.
pub(crate) fn state(k: &KeyRecord, now: OffsetDateTime) -> &'static str {
    match k.check_active(now) {
        Err(auth_core::RejectReason::Expired) => "expired",
        Err(auth_core::RejectReason::Disabled) => "disabled",
        Err(_) => "revoked",
        Ok(()) if k.revoked_at.is_some() => "rotating",
        Ok(()) => "active",
    }
}

fn matches_state(k: &KeyRecord, wanted: State, now: OffsetDateTime) -> bool {
    matches!(
        (wanted, state(k, now)),
        (State::Active, "active" | "rotating")
            | (State::Revoked, "revoked")
            | (State::Expired, "expired")
            | (State::Disabled, "disabled")
    )
}

/// Every key in the store, newest first: one indexed listing per owner.
pub(crate) async fn all_keys(db: &Db) -> Result<Vec<KeyRecord>, CliError> {
    let owners: Vec<String> = match &db.pool {
        Pool::Sqlite(p) => {
            sqlx::query_scalar("SELECT DISTINCT owner_id FROM api_keys")
                .fetch_all(p)
                .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_scalar("SELECT DISTINCT owner_id FROM api_keys")
                .fetch_all(p)
                .await?
        }
    };
    let mut keys = Vec::new();
    for owner in owners {
        keys.extend(db.keys.list_by_owner(&owner).await?);
    }
    keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(keys)
}

fn table(keys: &[KeyRecord], now: OffsetDateTime) -> String {
    let mut t = Table::new([
        "id",
        "owner",
        "name",
        "hint",
        "state",
        "created",
        "last used",
        "expires",
        "scopes",
    ]);
    for k in keys {
        let scopes: Vec<&str> = k.scopes.iter().collect();
        t.row([
            k.id.to_string(),
            match k.owner.org_id() {
                Some(org) => format!("{}@{org}", k.owner.user_id()),
                None => k.owner.user_id().to_owned(),
            },
            k.name.chars().take(30).collect(),
            k.hint.clone(),
            state(k, now).to_owned(),
            output::when(Some(k.created_at)),
            output::when(k.last_used_at),
            output::when(k.expires_at),
            scopes.join(" "),
        ]);
    }
    t.render()
}

fn print_created(
    issued: &IssuedKey,
    rotated: Option<(KeyId, OffsetDateTime)>,
    json: bool,
) -> Result<(), CliError> {
    if json {
        return output::print_json(&CreatedKey {
            key: issued.record.metadata(),
            token: issued.token.expose_secret(),
            rotated_from: rotated.map(|r| r.0),
            previous_key_ends_at: rotated.map(|r| r.1),
        });
    }
    output::note("the token below is shown once and cannot be recovered:");
    output::print(&format!("{}\n", issued.token.expose_secret()))
}

/// `keys issue`.
pub(crate) async fn issue(
    db: &Db,
    a: &IssueArgs,
    operator: &Operator,
    json: bool,
) -> Result<ExitCode, CliError> {
    let scopes = ScopeSet::parse(&a.scopes).map_err(|e| CliError::usage(e.to_string()))?;
    let owner = match &a.org {
        Some(org) => Principal::in_org(a.user.clone(), org.clone()),
        None => Principal::user(a.user.clone()),
    };
    if a.user.trim().is_empty() {
        return Err(CliError::usage("--user must not be empty"));
    }
    let mut new = NewKey::new(owner, a.name.clone(), scopes);
    if let Some(span) = a.expires {
        if span.0 <= time::Duration::ZERO {
            return Err(CliError::usage("--expires must be longer than 0s"));
        }
        new = new.expires_at(OffsetDateTime::now_utc() + span.0);
    }
    let prefix = issuing_prefix(db, a.prefix.as_deref()).await?;
    let issued = issuer(db, &prefix)?.issue(new).await?;
    operator
        .record(db, "keys issue", None, Some(issued.record.id))
        .await?;
    output::note(&format!(
        "issued key {} \"{}\" for {} with scopes [{}]",
        issued.record.id,
        issued.record.name,
        a.user,
        issued.record.scopes.iter().collect::<Vec<_>>().join(", ")
    ));
    print_created(&issued, None, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `keys list`.
pub(crate) async fn list(db: &Db, a: &ListArgs, json: bool) -> Result<ExitCode, CliError> {
    let now = OffsetDateTime::now_utc();
    let mut keys = match &a.user {
        Some(user) => db.keys.list_by_owner(user).await?,
        None => all_keys(db).await?,
    };
    if let Some(wanted) = a.state {
        keys.retain(|k| matches_state(k, wanted, now));
    }
    if let Some(span) = a.last_used_before {
        let cutoff = span.ago(now);
        keys.retain(|k| k.last_used_at.unwrap_or(k.created_at) < cutoff);
    }
    if json {
        output::print_json(&KeyList {
            keys: keys.iter().map(KeyRecord::metadata).collect(),
        })?;
    } else if keys.is_empty() {
        output::note("no keys match");
    } else {
        output::print(&table(&keys, now))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn get(db: &Db, id: &str) -> Result<KeyRecord, CliError> {
    let id = parse_id(id)?;
    db.keys.get(id).await?.ok_or_else(|| not_found(id))
}

/// `keys show`.
pub(crate) async fn show(db: &Db, a: &IdArgs, json: bool) -> Result<ExitCode, CliError> {
    print_key(&get(db, &a.id).await?, json)?;
    Ok(ExitCode::SUCCESS)
}

/// One key: the key router's JSON object, or a table of its fields.
pub(crate) fn print_key(k: &KeyRecord, json: bool) -> Result<(), CliError> {
    if json {
        return output::print_json(&k.metadata());
    }
    let now = OffsetDateTime::now_utc();
    let mut t = Table::new(["field", "value"]);
    let scopes: Vec<&str> = k.scopes.iter().collect();
    for (field, value) in [
        ("id", k.id.to_string()),
        ("owner", k.owner.user_id().to_owned()),
        ("org", k.owner.org_id().unwrap_or("-").to_owned()),
        ("name", k.name.clone()),
        ("hint", k.hint.clone()),
        ("state", state(k, now).to_owned()),
        (
            "disabled",
            k.disabled_at
                .map_or_else(|| "-".into(), |t| output::when(Some(t))),
        ),
        ("scopes", scopes.join(" ")),
        ("created", output::when(Some(k.created_at))),
        ("last used", output::when(k.last_used_at)),
        ("expires", output::when(k.expires_at)),
        ("revoked", output::when(k.revoked_at)),
        (
            "replaced by",
            k.replaced_by.map_or_else(|| "-".into(), |r| r.to_string()),
        ),
        ("ip allowlist", {
            let nets: Vec<String> = k.ip_allowlist.iter().map(ToString::to_string).collect();
            if nets.is_empty() {
                "any".into()
            } else {
                nets.join(" ")
            }
        }),
        (
            "credits",
            k.credits.map_or_else(
                || "unlimited".into(),
                |c| match c.refill {
                    Some(r) => format!(
                        "{} (refilled to {} every {})",
                        c.remaining,
                        r.amount,
                        r.every.as_str()
                    ),
                    None => c.remaining.to_string(),
                },
            ),
        ),
        (
            "external id",
            k.external_id.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "meta",
            if k.meta.is_empty() {
                "-".into()
            } else {
                serde_json::Value::Object(k.meta.clone()).to_string()
            },
        ),
    ] {
        t.row([field.to_owned(), value]);
    }
    output::print(&t.render())
}

/// `keys revoke`: takes effect at once here and, through the store's change
/// announcement, in every server on the same database.
pub(crate) async fn revoke(
    db: &Db,
    a: &IdArgs,
    operator: &Operator,
    json: bool,
) -> Result<ExitCode, CliError> {
    let before = get(db, &a.id).await?;
    let now = OffsetDateTime::now_utc();
    if before.revoked_at.is_some_and(|t| t <= now) {
        return Err(CliError::new(
            Exit::Conflict,
            format!("key {} is already revoked", before.id),
        ));
    }
    if !db.keys.revoke(before.id, now).await? {
        return Err(not_found(before.id));
    }
    operator
        .record(db, "keys revoke", Some(before.id), None)
        .await?;
    let after = db
        .keys
        .get(before.id)
        .await?
        .ok_or_else(|| not_found(before.id))?;
    if json {
        output::print_json(&after.metadata())?;
    } else {
        output::note(&format!(
            "revoked key {} \"{}\" of {}",
            after.id,
            after.name,
            after.owner.user_id()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `keys rotate`.
pub(crate) async fn rotate(
    db: &Db,
    a: &RotateArgs,
    operator: &Operator,
    json: bool,
) -> Result<ExitCode, CliError> {
    let old = get(db, &a.id).await?;
    // The old key's prefix is the part of its hint before the ellipsis.
    let prefix = match &a.prefix {
        Some(p) => p.clone(),
        None => old
            .hint
            .split_once('…')
            .map(|(p, _)| p.to_owned())
            .ok_or_else(|| CliError::usage("cannot tell the key's prefix: pass --prefix"))?,
    };
    let issued = issuer(db, &prefix)?.rotate(old.id, a.grace.std()).await?;
    operator
        .record(db, "keys rotate", Some(old.id), Some(issued.record.id))
        .await?;
    let old_now = db
        .keys
        .get(old.id)
        .await?
        .ok_or_else(|| not_found(old.id))?;
    let ends = old_now.revoked_at.unwrap_or_else(OffsetDateTime::now_utc);
    output::note(&format!(
        "rotated key {} into {}; the old key stops working at {}",
        old.id,
        issued.record.id,
        output::when(Some(ends))
    ));
    print_created(&issued, Some((old.id, ends)), json)?;
    Ok(ExitCode::SUCCESS)
}
