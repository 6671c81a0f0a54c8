//! `cargo run --example portal`: the education portal (impersonation).

use std::process::ExitCode;

use keygate_demo::{portal as app, support::cli};

#[tokio::main]
async fn main() -> ExitCode {
    cli::main(&app::CLI, &app::RULES, serve).await
}

async fn serve(args: cli::ServeArgs) -> Result<(), String> {
    let backend = args.db.open().await?;
    let options = app::Options {
        requests_per_hour: args.rate_limit,
        limits: args.limits(app::Options::default().limits),
    };
    let portal = app::Portal::new(&backend, &options)?;
    options.limits.print_banner(&format!(
        "{} requests/hour per user",
        options.requests_per_hour
    ));
    println!("issue a PAT: cargo run --example portal -- issue --user admin1");
    keygate_demo::support::serve::serve(
        portal.router(),
        args.addr,
        args.metrics_addr,
        &backend,
        &portal.verifier,
    )
    .await
}
