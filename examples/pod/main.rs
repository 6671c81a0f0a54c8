//! `cargo run --example pod`: the personal pod of seed 001.

use keygate_demo::{pod as app, support};

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
    let pod = app::Pod::new(&backend, &options)?;
    println!(
        "rate limits: {} requests/hour per user, {} per key on the free tier, {} on pro, in {}",
        options.requests_per_hour,
        options.free_per_hour,
        options.pro_per_hour,
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
    println!("issue a key: cargo run --example pod -- issue --user alice --scope skills.invoke");
    support::serve::serve(pod.router(), args.addr, &backend, &pod.verifier).await
}
