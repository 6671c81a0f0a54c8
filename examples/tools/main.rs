//! `cargo run --example tools`: JWTs signed with per-user secrets.
//!
//! Starts on 127.0.0.1:3002 with a SQLite file under ./data/. Get a user's
//! token with `token --user u1`, call `POST /v1/tools/{app}/{tool}` with
//! it, and invalidate every token of the user with `regenerate --user u1`.

use keygate_demo::{support, tools as app};

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    support::serve::init_tracing();
    let cli = app::cli::parse();
    let env_key = std::env::var(app::master_key::ENV).ok();
    app::cli::run(cli, env_key).await
}
