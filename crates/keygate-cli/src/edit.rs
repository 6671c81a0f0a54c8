//! `keys update|disable|enable`: what the key router's `PATCH` does, from
//! the command line, through the store's own edit (announced to every
//! running server at once, as a revocation is).
//!
//! The rules are the key router's: scopes only narrowed, the expiry only
//! brought forward, metadata and allowlists bounded. The operator may do
//! what a signed-in owner may: widen an allowlist, and enable a disabled
//! key (which an API key may not).

use std::{net::IpAddr, process::ExitCode};

use auth_core::{
    policy::Credits, policy::Refill, policy::RefillEvery, policy::MAX_CREDITS,
    policy::MAX_EXTERNAL_ID_LEN, policy::MAX_META_BYTES, store::KeyRecord, store::KeyUpdate,
    ScopeSet,
};
use ipnet::IpNet;
use serde_json::{Map, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    cli::{IdArgs, UpdateArgs},
    db::Db,
    duration::Span,
    error::{CliError, Exit},
    keys::{get, print_key},
    operator::Operator,
    output,
};

/// Most entries one key's allowlist may hold (the key router's bound).
const MAX_ALLOWLIST_ENTRIES: usize = 64;

/// A revoked, expired or replaced key stays as it ended.
fn editable(k: &KeyRecord, now: OffsetDateTime) -> Result<(), CliError> {
    let ended = k.revoked_at.is_some_and(|t| t <= now) || k.expires_at.is_some_and(|t| t <= now);
    if ended || k.replaced_by.is_some() {
        return Err(CliError::new(
            Exit::Conflict,
            format!(
                "key {} is revoked, expired or replaced: it cannot be edited",
                k.id
            ),
        ));
    }
    Ok(())
}

/// Stores keep microseconds: compare what will be stored.
fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

fn narrowed(asked: &[String], k: &KeyRecord) -> Result<ScopeSet, CliError> {
    let scopes = ScopeSet::parse(asked).map_err(|e| CliError::usage(e.to_string()))?;
    if let Some(wider) = scopes.iter().find(|s| !k.scopes.has(s)) {
        return Err(CliError::usage(format!(
            "--scope can only remove scopes: key {} does not hold '{wider}' (issue a new key instead)",
            k.id
        )));
    }
    Ok(scopes)
}

fn earlier_expiry(
    asked: &str,
    k: &KeyRecord,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, CliError> {
    let at = match asked.parse::<Span>() {
        Ok(span) => now.checked_add(span.0),
        Err(_) => OffsetDateTime::parse(asked.trim(), &Rfc3339).ok(),
    }
    .ok_or_else(|| {
        CliError::usage(
            "--expires takes a duration (7d) or an RFC 3339 time (2030-01-01T00:00:00Z)",
        )
    })?;
    let at = to_micros(at);
    if at <= now {
        return Err(CliError::usage("--expires must be in the future"));
    }
    match k.expires_at {
        Some(current) if at > current => Err(CliError::usage(format!(
            "--expires can only bring the expiry forward: key {} expires at {}",
            k.id,
            output::when(Some(current))
        ))),
        _ => Ok(at),
    }
}

fn allowlist(entries: &[String]) -> Result<Vec<IpNet>, CliError> {
    if entries.len() > MAX_ALLOWLIST_ENTRIES {
        return Err(CliError::usage(format!(
            "--ip-allow may be given at most {MAX_ALLOWLIST_ENTRIES} times"
        )));
    }
    let mut nets: Vec<IpNet> = Vec::with_capacity(entries.len());
    for entry in entries {
        let net = entry
            .trim()
            .parse::<IpNet>()
            .or_else(|_| entry.trim().parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                CliError::usage(format!(
                    "--ip-allow {:?} is not an IP address or CIDR block such as 203.0.113.0/24",
                    entry.chars().take(64).collect::<String>()
                ))
            })?
            .trunc();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

fn meta(text: &str) -> Result<Map<String, Value>, CliError> {
    let Ok(Value::Object(meta)) = serde_json::from_str::<Value>(text) else {
        return Err(CliError::usage(
            "--meta must be a JSON object, e.g. '{\"plan\":\"pro\"}'",
        ));
    };
    let size = Value::Object(meta.clone()).to_string().len();
    if size > MAX_META_BYTES {
        return Err(CliError::usage(format!(
            "--meta may be at most {MAX_META_BYTES} bytes of JSON ({size} given)"
        )));
    }
    Ok(meta)
}

fn external_id(id: &str) -> Result<String, CliError> {
    if id.is_empty() || id.len() > MAX_EXTERNAL_ID_LEN || id.chars().any(char::is_control) {
        return Err(CliError::usage(format!(
            "--external-id must be 1-{MAX_EXTERNAL_ID_LEN} bytes with no control characters"
        )));
    }
    Ok(id.to_owned())
}

/// `--remaining N [--refill AMOUNT/PERIOD]`, counted from `now`.
fn credits(remaining: u64, refill: Option<&str>, now: OffsetDateTime) -> Result<Credits, CliError> {
    let too_many = |n: u64| {
        (n > MAX_CREDITS).then(|| {
            CliError::usage(format!(
                "--remaining and the refill amount may be at most {MAX_CREDITS}"
            ))
        })
    };
    if let Some(e) = too_many(remaining) {
        return Err(e);
    }
    let credits = Credits::new(remaining, now);
    let Some(refill) = refill else {
        return Ok(credits);
    };
    let bad = || {
        CliError::usage("--refill takes AMOUNT/PERIOD, e.g. 1000/day (hour, day, week or month)")
    };
    let (amount, every) = refill.split_once('/').ok_or_else(bad)?;
    let amount: u64 = amount.trim().parse().map_err(|_| bad())?;
    let every = RefillEvery::from_name(every.trim()).ok_or_else(bad)?;
    if let Some(e) = too_many(amount) {
        return Err(e);
    }
    Ok(credits.with_refill(Refill::new(amount, every)))
}

/// The store update `a` asks for on `k`, every rule checked.
fn update_for(a: &UpdateArgs, k: &KeyRecord, now: OffsetDateTime) -> Result<KeyUpdate, CliError> {
    let mut update = KeyUpdate::default();
    if let Some(name) = &a.name {
        auth_core::policy::validate_name(name).map_err(CliError::from)?;
        update.name = Some(name.clone());
    }
    if !a.scopes.is_empty() || a.no_scopes {
        update.scopes = Some(narrowed(&a.scopes, k)?);
    }
    if let Some(expires) = &a.expires {
        update.expires_at = Some(Some(earlier_expiry(expires, k, now)?));
    }
    if !a.ip_allow.is_empty() {
        update.ip_allowlist = Some(allowlist(&a.ip_allow)?);
    } else if a.ip_allow_any {
        update.ip_allowlist = Some(Vec::new());
    }
    if let Some(text) = &a.meta {
        update.meta = Some(meta(text)?);
    }
    if let Some(id) = &a.external_id {
        update.external_id = Some(Some(external_id(id)?));
    } else if a.no_external_id {
        update.external_id = Some(None);
    }
    if let Some(remaining) = a.remaining {
        update.credits = Some(Some(credits(remaining, a.refill.as_deref(), now)?));
    } else if a.unlimited {
        update.credits = Some(None);
    }
    if update.is_empty() {
        return Err(CliError::usage(
            "nothing to change: give at least one option (see keys update --help)",
        ));
    }
    Ok(update)
}

/// `keys update`.
pub(crate) async fn update(
    db: &Db,
    a: &UpdateArgs,
    operator: &Operator,
    json: bool,
) -> Result<ExitCode, CliError> {
    let before = get(db, &a.id).await?;
    let now = to_micros(OffsetDateTime::now_utc());
    editable(&before, now)?;
    let change = update_for(a, &before, now)?;
    let after = db.keys.update(before.id, &change).await?;
    operator
        .record(db, "keys update", Some(after.id), None)
        .await?;
    if !json {
        output::note(&format!("updated key {} \"{}\"", after.id, after.name));
    }
    print_key(&after, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `keys disable` and `keys enable`.
pub(crate) async fn set_enabled(
    db: &Db,
    a: &IdArgs,
    enabled: bool,
    operator: &Operator,
    json: bool,
) -> Result<ExitCode, CliError> {
    let before = get(db, &a.id).await?;
    let now = to_micros(OffsetDateTime::now_utc());
    editable(&before, now)?;
    let verb = if enabled { "enable" } else { "disable" };
    if before.disabled_at.is_none() == enabled {
        return Err(CliError::new(
            Exit::Conflict,
            format!("key {} is already {verb}d", before.id),
        ));
    }
    let change = KeyUpdate::default().disabled_at((!enabled).then_some(now));
    let after = db.keys.update(before.id, &change).await?;
    operator
        .record(db, &format!("keys {verb}"), Some(after.id), None)
        .await?;
    if !json {
        output::note(&format!(
            "{verb}d key {} \"{}\" of {}",
            after.id,
            after.name,
            after.owner.user_id()
        ));
    }
    print_key(&after, json)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_and_allowlists_parse() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let c = credits(5, Some("100/day"), now).unwrap();
        assert_eq!(c.remaining, 5);
        assert_eq!(c.refill.unwrap().amount, 100);
        for bad in ["100", "x/day", "100/fortnight"] {
            assert_eq!(credits(5, Some(bad), now).unwrap_err().exit, Exit::Usage);
        }
        let nets = allowlist(&["203.0.113.7/24".into(), "198.51.100.7".into()]).unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["203.0.113.0/24", "198.51.100.7/32"]);
        assert!(allowlist(&["10.0.0.0/33".into()]).is_err());
        assert!(meta("[1]").is_err());
        assert!(meta(&format!("{{\"x\":\"{}\"}}", "y".repeat(MAX_META_BYTES))).is_err());
        assert!(external_id("a\nb").is_err());
    }
}
