//! The skip rule for tests that need a service: PostgreSQL
//! (`DATABASE_URL`), Redis (`REDIS_URL`), or a program such as `node` or
//! `chromedriver`.
//!
//! Under `CI=true` a missing service fails the test: CI provides them all,
//! so a test that did not run is a failure there. Elsewhere the test prints
//! `skipping <test>: <reason>` on stderr and returns; the reason names the
//! variable or program to provide.
//!
//! ```no_run
//! # async fn t() {
//! use keygate_test_support::services;
//!
//! let Some(url) = services::database_url("my_test") else {
//!     return; // skipped, and said so
//! };
//! # let _ = url;
//! # }
//! ```

use std::{io::Write, path::PathBuf};

/// Whether the tests run under CI (`CI=true`), where no service may be
/// missing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `test` cannot run because of `reason`: fails under CI, else prints
/// `skipping <test>: <reason>`.
///
/// Written to the stderr handle directly: libtest captures `eprintln!` of
/// passing tests, and a skip must be seen.
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    assert!(!in_ci(), "{test}: CI=true and {reason}");
    let _ = writeln!(std::io::stderr(), "skipping {test}: {reason}");
}

/// The value of the environment variable `var`, or `None` after [`skip`]
/// when it is unset or empty.
#[track_caller]
pub fn env_or_skip(test: &str, var: &str, service: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            skip(test, &format!("{var} is not set (a {service} server)"));
            None
        }
    }
}

/// `DATABASE_URL` (PostgreSQL), or `None` after [`skip`].
#[track_caller]
pub fn database_url(test: &str) -> Option<String> {
    env_or_skip(test, "DATABASE_URL", "PostgreSQL")
}

/// `REDIS_URL`, or `None` after [`skip`].
#[track_caller]
pub fn redis_url(test: &str) -> Option<String> {
    env_or_skip(test, "REDIS_URL", "Redis")
}

/// Where `program` is on `PATH`, if it is.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The paths of `programs`, or `None` after [`skip`] naming the missing
/// ones and `hint` (how to install them).
#[track_caller]
pub fn programs<const N: usize>(
    test: &str,
    programs: [&str; N],
    hint: &str,
) -> Option<[PathBuf; N]> {
    let found = programs.map(find_program);
    let missing: Vec<&str> = programs
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        skip(
            test,
            &format!("{} not found on PATH ({hint})", missing.join(" and ")),
        );
        return None;
    }
    Some(found.map(Option::unwrap))
}
