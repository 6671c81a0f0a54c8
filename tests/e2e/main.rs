//! End-to-end tests of the demos and examples: real HTTP, WebSockets,
//! Socket.IO, browsers, nginx, PostgreSQL and Redis. One test binary with a
//! module per area, so CI links it once; run one area with a filter, e.g.
//! `cargo test --all-features --test e2e signin::`.

mod client;

mod browser;
mod demo_key_policies;
mod demo_openapi;
mod examples;
mod forward_auth_nginx;
mod ops;
mod signin;
mod socketio;
mod teaching_examples;
mod tls;
mod tools;
