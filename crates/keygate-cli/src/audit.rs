//! `audit`: the newest matching events, oldest first, then (with
//! `--follow`) new ones as the services write them.

use std::{process::ExitCode, time::Duration};

use auth_core::{AuditEvent, AuditOutcome, AuditQuery, KeyId};
use time::OffsetDateTime;

use crate::{
    cli::{AuditArgs, Outcome},
    db::Db,
    error::CliError,
    output::{self, Table},
};

const PAGE: usize = 1000;
const POLL: Duration = Duration::from_secs(1);

struct Filter {
    query: AuditQuery,
    since: Option<OffsetDateTime>,
    outcome: Option<AuditOutcome>,
}

impl Filter {
    fn keeps(&self, e: &AuditEvent) -> bool {
        self.since.is_none_or(|s| e.at >= s) && self.outcome.is_none_or(|o| e.outcome == o)
    }
}

/// Newest-first pages until `limit` matches, an event older than `since`,
/// an event at or below `after`, or the end. Also the newest id read.
async fn newest(
    db: &Db,
    f: &Filter,
    limit: usize,
    after: Option<i64>,
) -> Result<(Vec<AuditEvent>, Option<i64>), CliError> {
    let mut found = Vec::new();
    let mut top = None;
    let mut query = f.query.clone().limit(PAGE);
    loop {
        let page = db.audit.query(&query).await?;
        for e in page.events {
            top = top.max(e.id);
            if after.is_some_and(|a| e.id.is_some_and(|id| id <= a))
                || f.since.is_some_and(|s| e.at < s)
            {
                return Ok((found, top));
            }
            if f.keeps(&e) {
                found.push(e);
                if found.len() >= limit {
                    return Ok((found, top));
                }
            }
        }
        match page.next_cursor {
            Some(c) => query.before = Some(c),
            None => return Ok((found, top)),
        }
    }
}

fn render(events: &[AuditEvent], json: bool, header: bool) -> Result<(), CliError> {
    if json {
        for e in events {
            output::print_json_line(e)?;
        }
        return Ok(());
    }
    let mut t = if header {
        Table::new([
            "time", "outcome", "reason", "status", "method", "path", "key", "actor", "client",
        ])
    } else {
        Table::new([])
    };
    for e in events {
        t.row([
            output::when(Some(e.at)),
            match e.outcome {
                AuditOutcome::Success => "success".into(),
                AuditOutcome::Failure => "refused".into(),
            },
            e.reason
                .map_or_else(|| "-".into(), |r| r.as_str().to_owned()),
            e.status.map_or_else(|| "-".into(), |s| s.to_string()),
            e.method.clone(),
            e.path.chars().take(60).collect(),
            e.key_id.map_or_else(|| "-".into(), |k| k.to_string()),
            e.actor.clone().unwrap_or_else(|| "-".into()),
            e.client_ip.map_or_else(|| "-".into(), |ip| ip.to_string()),
        ]);
    }
    let text = t.render();
    // Without a header the first line of the table is empty.
    output::print(if header {
        &text
    } else {
        text.trim_start_matches('\n')
    })
}

/// `audit`.
pub(crate) async fn run(db: &Db, a: &AuditArgs, json: bool) -> Result<ExitCode, CliError> {
    let key_id = a
        .key
        .as_deref()
        .map(|k| {
            k.trim().parse::<KeyId>().map_err(|_| {
                CliError::usage(format!(
                    "'{}' is not a key id (11 letters and digits)",
                    k.chars().take(32).collect::<String>()
                ))
            })
        })
        .transpose()?;
    let filter = Filter {
        query: {
            let mut query = AuditQuery::default();
            query.key_id = key_id;
            query.actor.clone_from(&a.user);
            query
        },
        since: a.since.map(|s| s.ago(OffsetDateTime::now_utc())),
        outcome: a.outcome.map(|o| match o {
            Outcome::Success => AuditOutcome::Success,
            Outcome::Refused => AuditOutcome::Failure,
        }),
    };
    let (mut events, top) = newest(db, &filter, a.limit.max(1), None).await?;
    events.reverse();
    if events.is_empty() && !a.follow && !json {
        output::note("no audit events match");
    } else if !events.is_empty() {
        render(&events, json, true)?;
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // The newest matching id read so far: later ones are new, none is
    // printed twice and none written since the first read is missed.
    let mut last = top.unwrap_or(0);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut header = events.is_empty();
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            _ = tick.tick() => {}
        }
        let (mut fresh, top) = newest(db, &filter, usize::MAX, Some(last)).await?;
        last = last.max(top.unwrap_or(0));
        fresh.reverse();
        if !fresh.is_empty() {
            render(&fresh, json, header)?;
            header = false;
        }
    }
}
