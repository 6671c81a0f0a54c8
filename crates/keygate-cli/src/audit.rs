//! `audit`: the newest matching events, oldest first, then (with
//! `--follow`) new ones as the services write them, none missed even when
//! instances commit out of id order (see [`crate::follow`]).

use std::{process::ExitCode, time::Duration};

use auth_core::{audit::AuditOutcome, audit::AuditQuery, AuditEvent, KeyId};
use time::OffsetDateTime;

use crate::{
    cli::{AuditArgs, Outcome},
    db::Db,
    error::CliError,
    follow::{Cursor, Horizon},
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

/// What a newest-first read found.
#[derive(Default)]
struct Read {
    /// The matching events, newest first.
    found: Vec<AuditEvent>,
    /// Every id read above the floor, matching or not.
    ids: Vec<i64>,
}

/// How far a newest-first read goes.
#[derive(Clone, Copy)]
struct Reach {
    /// Ids at or below this one are not collected.
    floor: i64,
    /// Matching events below the floor are wanted too (the first read):
    /// until `limit` of them, or one older than `--since`.
    below_floor: Option<usize>,
}

/// Newest-first pages, keeping the matching events and every id above the
/// floor, until the floor (and, for the first read, `limit` matches or an
/// event older than `--since`) or the end.
async fn newest(db: &Db, f: &Filter, reach: Reach) -> Result<Read, CliError> {
    let mut read = Read::default();
    // Still collecting matches below the floor.
    let mut below = reach.below_floor.is_some();
    let limit = reach.below_floor.unwrap_or(usize::MAX);
    let mut query = f.query.clone().limit(PAGE);
    loop {
        let page = db.audit.query(&query).await?;
        for e in page.events {
            let id = e.id.unwrap_or(0);
            if id > reach.floor {
                read.ids.push(id);
            } else if !below {
                return Ok(read);
            }
            if reach.below_floor.is_some() && f.since.is_some_and(|s| e.at < s) {
                below = false;
                if id <= reach.floor {
                    return Ok(read);
                }
                continue;
            }
            if (id > reach.floor || below) && f.keeps(&e) && read.found.len() < limit {
                read.found.push(e);
                if read.found.len() >= limit {
                    below = false;
                }
            }
        }
        match page.next_cursor {
            Some(c) => query.before = Some(c),
            None => return Ok(read),
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
            e.method.as_str().to_owned(),
            e.path.chars().take(60).collect(),
            e.key_id.map_or_else(|| "-".into(), |k| k.to_string()),
            e.actor.as_deref().unwrap_or("-").to_owned(),
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
    if !a.follow {
        let reach = Reach {
            floor: i64::MAX,
            below_floor: Some(a.limit.max(1)),
        };
        let mut events = newest(db, &filter, reach).await?.found;
        events.reverse();
        if events.is_empty() && !json {
            output::note("no audit events match");
        } else if !events.is_empty() {
            render(&events, json, true)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Every id at or below the start mark is visible once the transactions
    // open at the start have ended; ids above it are tracked one by one.
    let horizon = Horizon::of(&db.pool);
    let start = horizon.mark().await?;
    horizon.wait(&start).await?;
    let reach = Reach {
        floor: start.upto,
        below_floor: Some(a.limit.max(1)),
    };
    let first = newest(db, &filter, reach).await?;
    let mut cursor = Cursor::new(start.upto, first.ids);
    let mut events = first.found;
    events.reverse();
    if !events.is_empty() {
        render(&events, json, true)?;
    }
    output::note("following new events (Ctrl-C to stop)");
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
        let ready = cursor.ready(&horizon).await?;
        let reach = Reach {
            floor: cursor.settled(),
            below_floor: None,
        };
        let read = newest(db, &filter, reach).await?;
        let mut fresh: Vec<AuditEvent> = read
            .found
            .into_iter()
            .filter(|e| e.id.is_some_and(|id| cursor.first_time(id)))
            .collect();
        for id in read.ids {
            cursor.first_time(id);
        }
        cursor.advance(ready, &horizon).await?;
        fresh.reverse();
        if !fresh.is_empty() {
            render(&fresh, json, header)?;
            header = false;
        }
    }
}
