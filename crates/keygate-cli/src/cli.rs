//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::Span;

const AFTER_HELP: &str = "\
Exit codes:
  0  done
  1  scan: a well-formed token was found
  2  usage error or invalid argument
  3  no such key
  4  the key is not in a state that allows it (revoked, expired, already rotated)
  5  the database is unreachable or failed
  6  a file could not be read or written
Errors are one line on stderr, starting with `error:`.

Durations: a number and a unit, e.g. 90s, 15m, 1h, 30d, 2w.

Examples:
  keygate --db ./data/keys.db keys issue --user alice --scope nodes:read --expires 30d
  keygate keys update 3hTz8pQ1wXa --scope nodes:read --expires 7d --as ops-oncall
  keygate keys disable 3hTz8pQ1wXa
  DATABASE_URL=postgres://keygate@db/keys keygate keys list --state active --json
  keygate audit --user alice --since 1h --outcome refused --follow
  keygate scan src/ config/";

/// Manage the API keys of a keygate deployment.
#[derive(Parser, Debug)]
#[command(name = "keygate", version, about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Machine-readable output: JSON (`audit`: one object per line)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbArgs,
    /// Who is acting, as audit events name them (default: the OS user)
    #[arg(
        long = "as",
        global = true,
        env = "KEYGATE_OPERATOR",
        value_name = "NAME"
    )]
    pub operator: Option<String>,
}

/// Where the keys are.
#[derive(Args, Debug, Clone)]
pub(crate) struct DbArgs {
    /// The key store: a SQLite file or a postgres:// URL (sslmode and
    /// sslrootcert in the URL are honoured)
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub db: Option<String>,
    /// PostgreSQL schema holding the tables (default: the connection's search_path)
    #[arg(long, global = true, env = "KEYGATE_PG_SCHEMA", value_name = "NAME")]
    pub schema: Option<String>,
    /// PostgreSQL: trust only this CA (PEM) for the server's certificate;
    /// implies sslmode=verify-full unless the URL says otherwise
    #[arg(long, global = true, env = "KEYGATE_PG_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Issue, list, show, edit, disable, enable, revoke and rotate keys
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Read the audit log: one event per authentication attempt
    Audit(AuditArgs),
    /// Keys by state and uses per day
    Stats(StatsArgs),
    /// Apply the schema migrations (services also migrate on open)
    Migrate,
    /// Delete old audit events
    Purge(PurgeArgs),
    /// Find tokens in files; exits 1 when a well-formed one is found
    Scan(ScanArgs),
}

/// `keys …`.
#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Issue a key; prints the token alone on stdout (shown once)
    Issue(IssueArgs),
    /// List keys (never a secret: the hint shows prefix and last four characters)
    List(ListArgs),
    /// Show one key
    Show(IdArgs),
    /// Revoke a key at once, also in servers running on the same database
    Revoke(IdArgs),
    /// Replace a key; prints the new token alone on stdout
    Rotate(RotateArgs),
    /// Edit a key: rename it, narrow its scopes, bring its expiry forward,
    /// set its address allowlist, metadata, external id or credits
    Update(UpdateArgs),
    /// Disable a key at once, also in servers running on the same database
    Disable(IdArgs),
    /// Enable a disabled key again
    Enable(IdArgs),
}

/// `keys issue`.
#[derive(Args, Debug)]
pub(crate) struct IssueArgs {
    /// The user who will own the key
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// The owner's organisation
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// A scope to grant (repeat for more)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A name to recognise the key by
    #[arg(long, default_value = "cli")]
    pub name: String,
    /// Stop working after this long (default: never)
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<Span>,
    /// Token prefix (default: the one the services on this database
    /// recorded when they started)
    #[arg(long, env = "KEYGATE_PREFIX")]
    pub prefix: Option<String>,
}

/// Key states for `keys list --state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum State {
    /// Works now (including a rotated key in its grace period)
    Active,
    /// Revoked (or its rotation grace is over)
    Revoked,
    /// Past its expiry
    Expired,
    /// Disabled (`keys enable` brings it back)
    Disabled,
}

/// `keys list`.
#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// Only this user's keys
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only keys in this state
    #[arg(long, value_enum)]
    pub state: Option<State>,
    /// Only keys not used for this long (never-used keys count from their creation)
    #[arg(long, value_name = "DURATION")]
    pub last_used_before: Option<Span>,
}

/// A key id.
#[derive(Args, Debug)]
pub(crate) struct IdArgs {
    /// The key's id (11 letters and digits, as `keys list` shows it)
    pub id: String,
}

/// `keys rotate`.
#[derive(Args, Debug)]
pub(crate) struct RotateArgs {
    /// The key's id
    pub id: String,
    /// How long the old key keeps working (never past its expiry)
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub grace: Span,
    /// Token prefix of the new key (default: the old key's)
    #[arg(long)]
    pub prefix: Option<String>,
}

/// `keys update`: every option given is changed, the others are kept.
#[derive(Args, Debug)]
pub(crate) struct UpdateArgs {
    /// The key's id
    pub id: String,
    /// A new name
    #[arg(long)]
    pub name: Option<String>,
    /// The scopes the key keeps (repeat for more): only ones it holds
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Remove every scope
    #[arg(long, conflicts_with = "scopes")]
    pub no_scopes: bool,
    /// Expire after this long from now, or at this RFC 3339 time; never
    /// later than the key's current expiry
    #[arg(long, value_name = "DURATION|TIME")]
    pub expires: Option<String>,
    /// Accept the key only from this address or CIDR block (repeat for
    /// more; replaces the list)
    #[arg(long = "ip-allow", value_name = "NET")]
    pub ip_allow: Vec<String>,
    /// Accept the key from any address again
    #[arg(long, conflicts_with = "ip_allow")]
    pub ip_allow_any: bool,
    /// Metadata: a JSON object (at most 4 KiB), replacing the key's; `{}` clears it
    #[arg(long, value_name = "JSON")]
    pub meta: Option<String>,
    /// The application's own id for the key
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
    /// Remove the external id
    #[arg(long, conflicts_with = "external_id")]
    pub no_external_id: bool,
    /// Uses left before the key is refused (counted from now)
    #[arg(long, value_name = "N")]
    pub remaining: Option<u64>,
    /// Refill the uses to AMOUNT every hour, day, week or month (with --remaining)
    #[arg(long, value_name = "AMOUNT/PERIOD", requires = "remaining")]
    pub refill: Option<String>,
    /// Remove the usage limit (unlimited uses)
    #[arg(long, conflicts_with_all = ["remaining", "refill"])]
    pub unlimited: bool,
}

/// Outcomes for `audit --outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Outcome {
    /// Let through
    Success,
    /// Refused
    Refused,
}

/// `audit`.
#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Only this key's events
    #[arg(long = "key", value_name = "ID")]
    pub key: Option<String>,
    /// Only events of keys owned by this user
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only events this recent
    #[arg(long, value_name = "DURATION")]
    pub since: Option<Span>,
    /// Only successes or refusals
    #[arg(long, value_enum)]
    pub outcome: Option<Outcome>,
    /// At most this many events (the newest), before following
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Keep printing new events as they are written (Ctrl-C to stop)
    #[arg(long)]
    pub follow: bool,
}

/// `stats`.
#[derive(Args, Debug)]
pub(crate) struct StatsArgs {
    /// Uses per day over this many days (today included)
    #[arg(long, default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
}

/// `purge`.
#[derive(Args, Debug)]
pub(crate) struct PurgeArgs {
    /// Delete audit events older than this
    #[arg(long, value_name = "DURATION", required = true)]
    pub audit_older_than: Span,
}

/// `scan`.
#[derive(Args, Debug)]
pub(crate) struct ScanArgs {
    /// Files or directories (searched recursively; .git and target skipped)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Look for tokens with this prefix (repeat for more; default: any valid prefix)
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,
}
