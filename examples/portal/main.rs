//! `cargo run --example portal`: the education portal of seed 003.

use keygate_demo::{portal as app, support};

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
        trusted_proxies: args.proxies(),
        ..app::Options::default()
    };
    let portal = app::Portal::new(&backend, &options)?;
    println!(
        "rate limits: {} requests/hour per user, in {}",
        options.requests_per_hour,
        if options.redis.is_some() {
            "Redis"
        } else {
            "memory"
        }
    );
    println!(
        "{}",
        support::limits::describe_failed_auth(options.failed_auth)
    );
    println!("issue a PAT: cargo run --example portal -- issue --user admin1");
    support::serve::serve(portal.router(), args.addr, &backend, &portal.verifier).await
}
