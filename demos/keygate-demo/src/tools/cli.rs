//! The command line: `serve` (the default), `token --user`, `regenerate --user`.

use std::{
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use auth_core::{jwt::JwtAuthority, SecretHasher};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::{
    authority, check_user,
    master_key::{self, KeySource},
    store::{self, Opened},
    Options, Tools, USERS,
};
use crate::support::signin::{Accounts, SignInOptions};
use crate::support::{
    self,
    cli::{DbArgs, ServeArgs as HttpArgs},
};

/// The example's name.
pub const NAME: &str = "tools";
/// Default `--addr`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3002";
/// Default `--db`.
pub const DEFAULT_DB: &str = "./data/tools.db";

const ABOUT: &str = "Demo: a tools API authenticated by JWTs signed with per-user secrets.";

const AFTER_HELP: &str = "\
Subcommands default to `serve`. Users: u1 (apps tape, podio), u2 (app sharefile).

Tokens are HS256 JWTs with the claims sub, iat and iss (\"syncello\"), signed with
a secret of the user's own; they do not expire. `regenerate` replaces the secret:
every earlier token of that user is refused at once, also by servers running on
the same database.

Master key: each user's secret is stored sealed (XChaCha20-Poly1305) by a server
master key, taken from KEYGATE_MASTER_KEY (32 bytes, base64, e.g. from a secrets
manager) or --master-key-file. With neither, a SQLite demo generates
./data/tools-master.key on first use and says so: production must configure the
key, the same on every instance (never generated for PostgreSQL).

Routes: POST /v1/tools/{app}/{tool} (JSON body) -> {\"success\":true,\"data\":...};
GET /api/me. In a browser: /login, then /settings/account to regenerate your key (set a
password first: `tools passwd --user u1`, reads stdin). Errors: {\"success\":false,\"error\":{\"code\":\"UNAUTHORIZED\",...}} (401),
FORBIDDEN (403, no access to the app), NOT_FOUND, BAD_REQUEST, RATE_LIMITED.

Example:
  cargo run --example tools
  TOKEN=$(cargo run -q --example tools -- token --user u1)
  curl -X POST http://127.0.0.1:3002/v1/tools/tape/listApps \\
    -H \"Authorization: Bearer $TOKEN\" -H \"Content-Type: application/json\" \\
    -d '{\"workspace_id\": 12345}'";

/// The parsed command line.
#[derive(Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand: `serve` with these flags.
    #[command(flatten)]
    pub serve: ServeOptions,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (the default when no subcommand is given)
    Serve(ServeOptions),
    /// Print the user's current JWT on stdout, alone (valid until `regenerate`)
    Token(UserArgs),
    /// Replace the user's signing secret and print the new JWT: every earlier
    /// token of the user stops working at once, also in running servers
    Regenerate(UserArgs),
    /// Set the user's password for the account page (read from standard
    /// input); the user's existing sessions end
    Passwd(PasswdArgs),
}

/// `passwd`.
#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// The user (u1 or u2)
    #[arg(long, value_name = "USER")]
    pub user: String,
    #[command(flatten)]
    pub db: DbArgs,
}

/// Where the master key is.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// File holding the master key (32 bytes, base64) that seals users'
    /// secrets; default: $KEYGATE_MASTER_KEY, else ./data/tools-master.key
    #[arg(long, value_name = "PATH")]
    pub master_key_file: Option<PathBuf>,
}

/// `serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeOptions {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// `token` and `regenerate`.
#[derive(Args, Debug)]
pub struct UserArgs {
    /// The user (u1 or u2)
    #[arg(long, value_name = "USER")]
    pub user: String,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// The `clap` command, with this example's help and defaults.
pub fn command() -> clap::Command {
    let defaults = |c: clap::Command| {
        c.mut_arg("addr", |a| a.default_value(DEFAULT_ADDR))
            .mut_arg("db", db_arg)
            .mut_arg("rate_limit", |a| a.help("Tool calls per hour per user"))
    };
    let mut command = defaults(Cli::command())
        .name(NAME)
        .bin_name(NAME)
        .about(ABOUT)
        .after_help(AFTER_HELP)
        .mut_subcommand("serve", defaults);
    for sub in ["token", "regenerate", "passwd"] {
        command = command.mut_subcommand(sub, |s| s.mut_arg("db", db_arg));
    }
    command
}

fn db_arg(arg: clap::Arg) -> clap::Arg {
    arg.default_value(DEFAULT_DB).help(
        "Users' sealed secrets and the audit log: a SQLite file (created on first use) \
         or a postgres:// URL (several instances may share it)",
    )
}

/// Parses `args` (the program name first).
pub fn try_parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Parses the process's arguments; prints help or the error and exits when asked or wrong.
pub fn parse() -> Cli {
    try_parse(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Runs the command; `env_key` is the value of `KEYGATE_MASTER_KEY`.
pub async fn run(cli: Cli, env_key: Option<String>) -> ExitCode {
    let (mut out, mut log) = (std::io::stdout(), std::io::stderr());
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args, env_key).await,
        Command::Token(a) => token_command(&a, env_key, &mut out, &mut log).await,
        Command::Regenerate(a) => regenerate_command(&a, env_key, &mut out, &mut log).await,
        Command::Passwd(a) => {
            crate::support::signin::passwd_command(super::page::SITE, &a.db.db, &a.user).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens `db` and the master key; says so on `log` if the key was generated.
pub async fn open(
    db: &str,
    key: &KeyArgs,
    env_key: Option<String>,
    log: &mut dyn Write,
) -> Result<(Opened, auth_core::jwt::MasterKey, KeySource), String> {
    let may_generate = !store::is_postgres(db);
    let (master, source) = master_key::load(
        env_key,
        key.master_key_file.as_deref(),
        Path::new(master_key::DEFAULT_FILE),
        may_generate,
    )?;
    if let KeySource::Generated(path) = &source {
        let _ = writeln!(log, "{}", master_key::generated_notice(path));
    }
    let opened = store::open(db, SecretHasher::default()).await?;
    Ok((opened, master, source))
}

async fn user_authority(
    args: &UserArgs,
    env_key: Option<String>,
    log: &mut dyn Write,
) -> Result<(JwtAuthority, String), String> {
    check_user(&args.user)?;
    let (opened, master, _) = open(&args.db.db, &args.key, env_key, log).await?;
    Ok((authority(opened.secrets, master), opened.backend.location))
}

/// `token`: the user's current JWT, alone on `out` (so that
/// `TOKEN=$(... token --user u1)` works); what it is on `log`.
pub async fn token_command(
    args: &UserArgs,
    env_key: Option<String>,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<(), String> {
    print_token(args, env_key, false, out, log).await
}

/// `regenerate`: a new secret for the user; the new JWT, alone, on `out`.
pub async fn regenerate_command(
    args: &UserArgs,
    env_key: Option<String>,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<(), String> {
    print_token(args, env_key, true, out, log).await
}

/// The user's token on `out`, after a `regenerate`d secret or not; what
/// it is on `log`.
async fn print_token(
    args: &UserArgs,
    env_key: Option<String>,
    regenerate: bool,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<(), String> {
    let (jwt, location) = user_authority(args, env_key, log).await?;
    let user = &args.user;
    let token = if regenerate {
        let token = jwt
            .regenerate(user)
            .await
            .map_err(|e| format!("cannot regenerate the secret: {e}"))?;
        let _ = writeln!(
            log,
            "regenerated the secret of {user} in {location}: every earlier token of {user} is \
             refused from now on, also by running servers; the new token:"
        );
        token
    } else {
        let token = jwt
            .token_for(user)
            .await
            .map_err(|e| format!("cannot make the token: {e}"))?;
        let _ = writeln!(
            log,
            "token of {user} (secret in {location}); valid until `regenerate --user {user}`:"
        );
        token
    };
    writeln!(out, "{token}").map_err(|e| format!("cannot print the token: {e}"))
}

async fn serve(args: ServeOptions, env_key: Option<String>) -> Result<(), String> {
    let (opened, master, source) =
        open(&args.http.db.db, &args.key, env_key, &mut std::io::stderr()).await?;
    let defaults = Options::default();
    let options = Options {
        requests_per_hour: args.http.rate_limit,
        limits: args.http.limits(defaults.limits),
    };
    let tools = Tools::new(&opened.backend, opened.secrets, master, &options)?;
    let sign_in = SignInOptions {
        secure_cookies: !args.http.plain_http,
        redis: args.http.redis.clone(),
        trusted_proxies: args.http.proxies(),
        ..SignInOptions::default()
    };
    let accounts = Accounts::open(
        super::page::SITE,
        &args.http.db.db,
        opened.backend.audit.clone(),
        sign_in,
    )
    .await?;
    println!("master key:  {}", source.describe());
    let users: Vec<String> = USERS
        .iter()
        .map(|(u, apps)| format!("{u} ({})", apps.join(", ")))
        .collect();
    println!("users:       {}", users.join(", "));
    println!("a token:     cargo run -q --example tools -- token --user u1");
    println!(
        "account:     http{}://{}{} (sign in; set a password with `passwd --user u1`)",
        if args.http.plain_http { "" } else { "s" },
        args.http.addr,
        super::page::PATH
    );
    options.limits.print_banner(&format!(
        "{} tool calls/hour per user",
        options.requests_per_hour
    ));
    support::serve::serve(
        tools.router_with_sign_in(&accounts).await?,
        args.http.addr,
        args.http.metrics_addr,
        &opened.backend,
        &tools.verifier,
    )
    .await
}
