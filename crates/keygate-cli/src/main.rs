//! `keygate`: the admin command line of a keygate deployment.
//!
//! It works on the database the services use (`--db` or `DATABASE_URL`: a
//! SQLite file or a `postgres://` URL), through the same key store and audit
//! log as they do, so a `keys revoke` reaches running servers at once (SQLite
//! change log / PostgreSQL `NOTIFY`). See `keygate --help` for the commands
//! and [`error::Exit`] for the exit codes.

mod audit;
mod cli;
mod db;
mod duration;
mod edit;
mod error;
mod follow;
mod keys;
mod operator;
mod output;
mod purge;
mod scan;
mod stats;

use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command, KeysCommand};
use error::CliError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's message without its blank line and `--help` hint: one line.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return report(CliError::usage(format!("{first} (see --help)")));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(CliError::io(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => report(e),
    }
}

fn report(e: CliError) -> ExitCode {
    // One line, whatever the message holds.
    let message = e.message.replace(['\n', '\r'], " ");
    eprintln!("error: {message}");
    ExitCode::from(e.exit as u8)
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let json = cli.json;
    let operator = || operator::Operator::resolve(cli.operator.as_deref());
    match cli.command {
        Command::Scan(args) => scan::run(&args, json),
        Command::Migrate => db::migrate(&cli.db, json).await,
        command => {
            let db = db::Db::open(&cli.db).await?;
            let result = match command {
                Command::Keys { command } => match command {
                    KeysCommand::List(a) => keys::list(&db, &a, json).await,
                    KeysCommand::Show(a) => keys::show(&db, &a, json).await,
                    command => match operator() {
                        Err(e) => Err(e),
                        Ok(op) => match command {
                            KeysCommand::Issue(a) => keys::issue(&db, &a, &op, json).await,
                            KeysCommand::Revoke(a) => keys::revoke(&db, &a, &op, json).await,
                            KeysCommand::Rotate(a) => keys::rotate(&db, &a, &op, json).await,
                            KeysCommand::Update(a) => edit::update(&db, &a, &op, json).await,
                            KeysCommand::Disable(a) => {
                                edit::set_enabled(&db, &a, false, &op, json).await
                            }
                            KeysCommand::Enable(a) => {
                                edit::set_enabled(&db, &a, true, &op, json).await
                            }
                            KeysCommand::List(_) | KeysCommand::Show(_) => {
                                unreachable!("handled above")
                            }
                        },
                    },
                },
                Command::Audit(a) => audit::run(&db, &a, json).await,
                Command::Stats(a) => stats::run(&db, &a, json).await,
                Command::Purge(a) => purge::run(&db, &a, json).await,
                Command::Scan(_) | Command::Migrate => unreachable!("handled above"),
            };
            db.close().await;
            result
        }
    }
}
