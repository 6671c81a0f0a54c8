//! `stats`: keys by state, and authentication attempts per day (UTC).

use std::{collections::BTreeMap, process::ExitCode};

use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::{
    cli::StatsArgs,
    db::{Db, Pool},
    error::CliError,
    keys, operator,
    output::{self, Table},
};

#[derive(Serialize, Default)]
struct KeyCounts {
    total: usize,
    active: usize,
    rotating: usize,
    revoked: usize,
    expired: usize,
    disabled: usize,
}

#[derive(Serialize)]
struct Day {
    date: String,
    success: i64,
    refused: i64,
}

#[derive(Serialize)]
struct Stats {
    keys: KeyCounts,
    days: Vec<Day>,
}

const DAY_SECONDS: i64 = 86_400;

/// `stats`.
pub(crate) async fn run(db: &Db, a: &StatsArgs, json: bool) -> Result<ExitCode, CliError> {
    let now = OffsetDateTime::now_utc();
    let mut counts = KeyCounts::default();
    for k in keys::all_keys(db).await? {
        counts.total += 1;
        match keys::state(&k, now) {
            "active" => counts.active += 1,
            "rotating" => counts.rotating += 1,
            "expired" => counts.expired += 1,
            "disabled" => counts.disabled += 1,
            _ => counts.revoked += 1,
        }
    }
    let today = now.date().midnight().assume_utc();
    let first = today - time::Duration::days(i64::from(a.days) - 1);
    let first_day = first.unix_timestamp() / DAY_SECONDS;
    // (day number since the epoch, successes, refusals), from the time index.
    // Requests only: the command line's own changes are not attempts.
    let rows: Vec<(i64, i64, i64)> = match &db.pool {
        Pool::Sqlite(p) => {
            sqlx::query_as(
                "SELECT at / 86400000000 AS day, \
                 sum(outcome = 'success'), sum(outcome = 'failure') \
                 FROM audit_events WHERE at >= ? AND method <> ? GROUP BY day ORDER BY day",
            )
            .bind(first.unix_timestamp() * 1_000_000)
            .bind(operator::METHOD)
            .fetch_all(p)
            .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_as(
                "SELECT floor(extract(epoch FROM at) / 86400)::bigint AS day, \
                 count(*) FILTER (WHERE outcome = 'success'), \
                 count(*) FILTER (WHERE outcome = 'failure') \
                 FROM audit_events WHERE at >= $1 AND method <> $2 GROUP BY day ORDER BY day",
            )
            .bind(first)
            .bind(operator::METHOD)
            .fetch_all(p)
            .await?
        }
    };
    let by_day: BTreeMap<i64, (i64, i64)> = rows.into_iter().map(|(d, s, r)| (d, (s, r))).collect();
    let days: Vec<Day> = (0..i64::from(a.days))
        .map(|i| {
            let day = first_day + i;
            let date = OffsetDateTime::from_unix_timestamp(day * DAY_SECONDS)
                .map(|t| t.date())
                .unwrap_or(Date::MIN);
            let (success, refused) = by_day.get(&day).copied().unwrap_or((0, 0));
            Day {
                date: date.to_string(),
                success,
                refused,
            }
        })
        .collect();
    let stats = Stats { keys: counts, days };
    if json {
        output::print_json(&stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    let k = &stats.keys;
    let mut t = Table::new(["keys", "count"]);
    for (state, n) in [
        ("active", k.active),
        ("rotating", k.rotating),
        ("revoked", k.revoked),
        ("expired", k.expired),
        ("disabled", k.disabled),
        ("total", k.total),
    ] {
        t.row([state.to_owned(), n.to_string()]);
    }
    let mut d = Table::new(["day (UTC)", "success", "refused"]);
    for day in &stats.days {
        d.row([
            day.date.clone(),
            day.success.to_string(),
            day.refused.to_string(),
        ]);
    }
    output::print(&format!("{}\n{}", t.render(), d.render()))?;
    Ok(ExitCode::SUCCESS)
}
