//! `cargo run --example pod`: the personal pod (scoped keys, workspaces, tiers).

use std::process::ExitCode;

use keygate_demo::{pod as app, support::cli};

#[tokio::main]
async fn main() -> ExitCode {
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
    let pod = app::Pod::new(&backend, &options)?;
    options.limits.print_banner(&format!(
        "{} requests/hour per user, {} per key on the free tier, {} on pro",
        options.requests_per_hour, options.free_per_hour, options.pro_per_hour,
    ));
    println!("issue a key: cargo run --example pod -- issue --user alice --scope skills.invoke");
    keygate_demo::support::serve::serve(
        pod.router(),
        args.addr,
        args.metrics_addr,
        &backend,
        &pod.verifier,
    )
    .await
}
