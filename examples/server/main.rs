//! `cargo run --example server`: the demo server (access levels, WebSockets).
//!
//! Starts on 127.0.0.1:3000 with a SQLite file under ./data/; on the first
//! start it prints a token for `admin` with every scope, once.

use std::process::ExitCode;

use keygate_demo::{server as app, support, support::cli};

/// `server passwd --user <id> [--db <PATH|URL>]`: sets a demo user's
/// password, read from standard input.
#[derive(clap::Parser, Debug)]
#[command(name = "server passwd")]
struct PasswdArgs {
    /// The demo user (admin, alice or bob)
    #[arg(long, value_name = "USER")]
    user: String,
    /// The key store the server uses: a SQLite file or a postgres:// URL
    #[arg(long, value_name = "PATH|URL", default_value = app::CLI.default_db)]
    db: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("passwd") {
        support::serve::init_tracing();
        let args = <PasswdArgs as clap::Parser>::parse_from(std::env::args().skip(1));
        return match app::signin::passwd_command(&args.db, &args.user).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    cli::main(&app::CLI, &app::RULES, serve).await
}

async fn serve(args: cli::ServeArgs) -> Result<(), String> {
    let backend = args.db.open().await?;
    let defaults = app::Options::default();
    let options = app::Options {
        requests_per_hour: args.rate_limit,
        limits: args.limits(defaults.limits),
        ..defaults
    };
    let server = app::Server::new(&backend, &options)?;
    let sign_in = app::signin::SignInOptions {
        secure_cookies: !args.plain_http,
        redis: args.redis.clone(),
        trusted_proxies: args.proxies(),
        ..Default::default()
    };
    let accounts = app::signin::Accounts::open(
        app::signin::SITE,
        &args.db.db,
        backend.audit.clone(),
        sign_in,
    )
    .await?;
    if let Some(key) = server.bootstrap_admin().await? {
        println!(
            "First start: created user `{}` with a token holding every scope.",
            app::ADMIN
        );
        println!("This token is shown once and will not be shown again; store it now:");
        println!();
        println!("    {}", key.token.expose_secret());
        println!();
    }
    options.limits.print_banner(&format!(
        "{} requests/hour per user, {} WebSocket connects/minute per IP",
        options.requests_per_hour, options.ws_connects_per_minute
    ));
    #[cfg(feature = "socketio")]
    println!("socket.io:   path /ext-socket.io, auth: {{ api_token }}; events whoami, echo");
    println!(
        "settings:    http{}://{}/ (sign in; set a password with `passwd --user alice`)",
        if args.plain_http { "" } else { "s" },
        args.addr
    );
    if !args.plain_http {
        println!("             cookies are Secure: serve behind TLS, or start with --plain-http for local use");
    }
    let router = server.router_with_sign_in(&accounts).await?;
    support::serve::serve(
        router,
        args.addr,
        args.metrics_addr,
        &backend,
        &server.verifier,
    )
    .await
}
