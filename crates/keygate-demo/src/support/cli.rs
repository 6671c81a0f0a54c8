//! The command line every example shares: `serve` (the default), `issue`,
//! `list` and `revoke`, with `--db` (a SQLite file or a `postgres://` URL).

use std::{ffi::OsString, future::Future, net::SocketAddr, process::ExitCode};

use auth_core::{client_ip::IpNet, client_ip::TrustedProxies, SecretHasher};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::{
    commands::{self, KeyRules},
    limits::SharedLimits,
    Backend,
};

/// What differs between the examples' command lines.
#[derive(Debug)]
pub struct CliSpec {
    /// The example's name.
    pub name: &'static str,
    /// One line on what it is.
    pub about: &'static str,
    /// Users, scopes, routes and a first request, after the options in `--help`.
    pub after_help: &'static str,
    /// Default `--addr`.
    pub default_addr: &'static str,
    /// Default `--db`: a file under `./data/`.
    pub default_db: &'static str,
}

/// The parsed command line.
#[derive(Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand: `serve` with these flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (the default when no subcommand is given)
    Serve(ServeArgs),
    /// Issue a key; prints the token, and nothing else, on stdout (shown once)
    Issue(IssueArgs),
    /// List a user's keys: id, name, hint, dates, scopes (never a secret)
    List(ListArgs),
    /// Revoke a key at once, also in servers running on the same database
    Revoke(RevokeArgs),
}

/// Where the keys are.
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// Key store and audit log: a SQLite file (created on first use) or a
    /// postgres:// URL (several instances may share it)
    #[arg(long, value_name = "PATH|URL", default_value = "./data/keys.db")]
    pub db: String,
}

/// `serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// Redis URL: keep rate limits there, shared by every instance using it
    /// (default: in memory, per instance)
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// REST requests per hour per user
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,
    /// Log format on stderr: text (colours only on a terminal) or one JSON
    /// object per line [env: KEYGATE_LOG_FORMAT]
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    pub log_format: super::ops::LogFormat,
    /// A reverse proxy (address or network) whose X-Forwarded-For names the
    /// client, for the audit log, rate limits and IP allowlists (repeat for
    /// more; default: none, the connecting address is the client)
    #[arg(long = "trusted-proxy", value_name = "CIDR",
          value_parser = TrustedProxies::parse_net)]
    pub trusted_proxies: Vec<IpNet>,
    /// Send sign-in cookies without `Secure`, for local use over plain HTTP
    /// (default: `Secure`, serve over TLS or behind a TLS proxy)
    #[arg(long)]
    pub plain_http: bool,
    /// Serve Prometheus metrics at /metrics on this address only (e.g.
    /// 127.0.0.1:9100; default: no metrics endpoint)
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
}

impl ServeArgs {
    /// The `--trusted-proxy` networks, for every layer that resolves the client.
    pub fn proxies(&self) -> TrustedProxies {
        TrustedProxies::from_nets(self.trusted_proxies.iter().copied())
    }

    /// `defaults` (the example's own) with `--redis` and `--trusted-proxy`.
    pub fn limits(&self, defaults: SharedLimits) -> SharedLimits {
        SharedLimits {
            redis: self.redis.clone(),
            trusted_proxies: self.proxies(),
            ..defaults
        }
    }
}

impl DbArgs {
    /// Opens `--db` with the default (production) argon2 parameters.
    pub async fn open(&self) -> Result<Backend, String> {
        Backend::open(&self.db, SecretHasher::default()).await
    }
}

/// `issue`.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The user who will own the key
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// A scope to grant (repeat for more)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A name to recognise the key by
    #[arg(long, default_value = "cli")]
    pub name: String,
    #[command(flatten)]
    pub db: DbArgs,
}

/// `list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Whose keys
    #[arg(long, value_name = "USER")]
    pub user: String,
    #[command(flatten)]
    pub db: DbArgs,
}

/// `revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The key's id, as `list` shows it
    pub key_id: String,
    #[command(flatten)]
    pub db: DbArgs,
}

/// The example's `clap` command, with its name, help and defaults.
pub fn command(spec: &CliSpec) -> clap::Command {
    let mut command = Cli::command()
        .name(spec.name)
        .bin_name(spec.name)
        .about(spec.about)
        .after_help(spec.after_help)
        .mut_arg("addr", |a| a.default_value(spec.default_addr))
        .mut_arg("db", |a| a.default_value(spec.default_db))
        .mut_subcommand("serve", |s| {
            s.mut_arg("addr", |a| a.default_value(spec.default_addr))
        });
    for sub in ["serve", "issue", "list", "revoke"] {
        command = command.mut_subcommand(sub, |s| {
            s.mut_arg("db", |a| a.default_value(spec.default_db))
        });
    }
    command
}

/// Parses `args` (the program name first).
pub fn try_parse<I, T>(spec: &CliSpec, args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command(spec).try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Parses the process's arguments; prints help or the error and exits when asked or wrong.
pub fn parse(spec: &CliSpec) -> Cli {
    try_parse(spec, std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// An example's `main`: logging, then its command line (see [`parse`]) run
/// by [`run`]; `serve` is the example's own.
pub async fn main<F, Fut>(spec: &CliSpec, rules: &KeyRules, serve: F) -> ExitCode
where
    F: FnOnce(ServeArgs) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    super::serve::init_tracing();
    run(parse(spec), rules, serve).await
}

/// Runs the command; `serve` is the example's own.
pub async fn run<F, Fut>(cli: Cli, rules: &KeyRules, serve: F) -> ExitCode
where
    F: FnOnce(ServeArgs) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let (mut out, mut log) = (std::io::stdout(), std::io::stderr());
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args).await,
        Command::Issue(a) => match a.db.open().await {
            Ok(b) => {
                commands::issue_command(&b, rules, &a.user, &a.scopes, &a.name, &mut out, &mut log)
                    .await
            }
            Err(e) => Err(e),
        },
        Command::List(a) => match a.db.open().await {
            Ok(b) => commands::list_command(&b, rules, &a.user, &mut out, &mut log).await,
            Err(e) => Err(e),
        },
        Command::Revoke(a) => match a.db.open().await {
            Ok(b) => commands::revoke_command(&b, rules, &a.key_id, &mut log).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
