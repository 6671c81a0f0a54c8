//! `purge --audit-older-than`: deletes old audit events through the audit
//! log's own (chunked) purge, in time slices so a long run shows progress.

use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;

use crate::{
    cli::PurgeArgs,
    db::{Db, Pool},
    error::CliError,
    output,
};

/// Fewer events than this go in one call, without a progress bar.
const BAR_FROM: i64 = 20_000;
/// A long run is cut into this many time slices.
const SLICES: i64 = 100;

/// `purge`.
pub(crate) async fn run(db: &Db, a: &PurgeArgs, json: bool) -> Result<ExitCode, CliError> {
    let cutoff = a.audit_older_than.ago(OffsetDateTime::now_utc());
    let (count, oldest): (i64, Option<OffsetDateTime>) = match &db.pool {
        Pool::Sqlite(p) => {
            let (n, min): (i64, Option<i64>) =
                sqlx::query_as("SELECT count(*), min(at) FROM audit_events WHERE at < ?")
                    .bind(cutoff.unix_timestamp_nanos().div_euclid(1000) as i64)
                    .fetch_one(p)
                    .await?;
            let min = min.and_then(|us| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok()
            });
            (n, min)
        }
        Pool::Postgres(p) => {
            sqlx::query_as("SELECT count(*), min(at) FROM audit_events WHERE at < $1")
                .bind(cutoff)
                .fetch_one(p)
                .await?
        }
    };
    let deleted = match oldest {
        Some(oldest) if count >= BAR_FROM => {
            let bar = ProgressBar::new(count as u64).with_style(
                ProgressStyle::with_template(
                    "{spinner} purging audit events [{bar:40}] {pos}/{len} ({eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let span = cutoff - oldest;
            let mut deleted = 0u64;
            for i in 1..=SLICES {
                let until = if i == SLICES {
                    cutoff
                } else {
                    oldest + span * (i as f64 / SLICES as f64)
                };
                let n = db.audit.purge_before(until).await?;
                deleted += n;
                bar.inc(n);
            }
            bar.finish_and_clear();
            deleted
        }
        Some(_) => db.audit.purge_before(cutoff).await?,
        None => 0,
    };
    if json {
        output::print_json(&serde_json::json!({
            "deleted": deleted,
            "older_than": output::when(Some(cutoff)),
        }))?;
    } else {
        output::note(&format!(
            "deleted {deleted} audit event(s) older than {}",
            output::when(Some(cutoff))
        ));
    }
    Ok(ExitCode::SUCCESS)
}
