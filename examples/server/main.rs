//! `cargo run --example server`: the demo of seed 000.
//!
//! Starts on 127.0.0.1:3000 with a SQLite file under ./data/; on the first
//! start it prints a token for `admin` with every scope, once.

#[path = "../support/mod.rs"]
mod support;

#[path = "app.rs"]
mod app;

use std::process::ExitCode;

use auth_core::SecretHasher;

use support::cli;

#[tokio::main]
async fn main() -> ExitCode {
    support::serve::init_tracing();
    let cli = cli::parse(&app::CLI);
    cli::run(cli, &app::RULES, serve).await
}

async fn serve(args: cli::ServeArgs) -> Result<(), String> {
    let backend = support::Backend::open(&args.db.db, SecretHasher::default()).await?;
    let options = app::Options {
        requests_per_hour: args.rate_limit,
        redis: args.redis.clone(),
        ..app::Options::default()
    };
    let server = app::Server::new(&backend, &options)?;
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
    println!(
        "rate limits: {} requests/hour per user, 10 WebSocket connects/minute per IP, in {}",
        options.requests_per_hour,
        if options.redis.is_some() {
            "Redis"
        } else {
            "memory"
        }
    );
    #[cfg(feature = "socketio")]
    println!("socket.io:   path /ext-socket.io, auth: {{ api_token }}; events whoami, echo");
    support::serve::serve(server.router(), args.addr, &backend, &server.verifier).await
}
