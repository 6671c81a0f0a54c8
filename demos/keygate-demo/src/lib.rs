//! The four demo applications of keygate, one per product it was built for,
//! and the code they share. `examples/<name>/main.rs` runs each one; the
//! end-to-end tests (`tests/e2e/`) drive the same routers.
//!
//! - [`server`]: a node-graph task API (`st_` tokens, per-node access levels,
//!   WebSocket and Socket.IO, sign-in and the settings page).
//! - [`pod`]: pod-scoped keys with workspace headers and per-tier limits.
//! - [`portal`]: an organisation portal with subject-user impersonation.
//! - [`tools`]: per-user JWT credentials for tool calls.
//! - [`support`]: opening the store, the key commands, limits, serving.
//!
//! Not published: it is the examples' code, kept in a library so that the
//! examples and the tests share it without `#[path]` includes.

pub mod pod;
pub mod portal;
pub mod server;
pub mod support;
pub mod tools;
