//! Code shared by the examples (`server`, `pod`, `portal`): opening the key
//! store, the `issue`/`list`/`revoke` commands, rate limits, serving with a
//! graceful shutdown, and small HTTP helpers.
//!

pub mod backend;
pub mod cli;
pub mod commands;
pub mod http;
pub mod limits;
pub mod ops;
pub mod serve;
pub mod signin;
pub mod stack;

pub use backend::Backend;
