//! The demo server's Socket.IO endpoint (`/ext-socket.io`) driven
//! by the real JavaScript client: `socket.io-client`, pinned in
//! `tests/js/package.json` and installed with `npm ci`, connecting with
//! `transports: ["websocket"]` and `auth: { api_token }` as the demo's clients do.
//!
//! Needs `node` and `npm`; without them every test says it is skipped (and
//! fails under `CI=true`).
#![cfg(feature = "socketio")]

use keygate_demo::support;

use keygate_demo::server;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use auth_core::SecretHasher;
use serde_json::Value;
use support::{commands, serve::spawn, Backend};

/// How long one run of the client may take before the test fails.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Installs the pinned client once per test binary. `false` (after saying
/// the test is skipped; a failure under `CI=true`) when `node` or `npm` is
/// missing; a failed install
/// with both present fails the test.
fn client_installed(test: &str) -> bool {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    // node and npm run socket.io-client.
    if keygate_test_support::services::programs(test, ["node", "npm"], "install Node.js and npm")
        .is_none()
    {
        return false;
    }
    let installed = INSTALLED.get_or_init(|| {
        let out = Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--prefer-offline",
                "--prefix",
            ])
            .arg(js_dir())
            .output()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "npm ci failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = installed {
        panic!("{e}");
    }
    true
}

/// Runs `tests/js/socketio.mjs` against the server at `base` and returns
/// the JSON line it prints.
async fn client(base: &str, token: &str, scenario: &str, count: u32) -> Value {
    let run = tokio::process::Command::new("node")
        .arg(js_dir().join("socketio.mjs"))
        .args([base, token, scenario, &count.to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CLIENT_DEADLINE, run)
        .await
        .expect("the JavaScript client finished in time")
        .expect("node ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

struct Demo {
    backend: Backend,
    base: String,
}

impl Demo {
    async fn start(ws_connects_per_minute: u32) -> Self {
        let backend = Backend::memory(SecretHasher::for_tests());
        let options = server::Options {
            ws_connects_per_minute,
            ..server::Options::default()
        };
        let app = server::Server::new(&backend, &options).unwrap();
        let addr = spawn(app.router()).await;
        Self {
            backend,
            base: format!("http://{addr}"),
        }
    }

    async fn token(&self, user: &str) -> (String, String) {
        let key = commands::issue(&self.backend, &server::RULES, user, &[], "socket.io")
            .await
            .unwrap();
        (
            key.token.expose_secret().to_owned(),
            key.record.id.to_string(),
        )
    }
}

/// Asserts a `connect_error` carrying the flat error `code`.
#[track_caller]
fn assert_refused(reply: &Value, code: &str, message: &str) {
    assert_eq!(reply["connected"], false, "{reply}");
    assert_eq!(reply["error"]["error"], code, "{reply}");
    assert_eq!(reply["error"]["message"], message, "{reply}");
}

#[tokio::test]
async fn a_good_token_connects_from_the_payload_or_either_header() {
    if !client_installed("a_good_token_connects_from_the_payload_or_either_header") {
        return;
    }
    let demo = Demo::start(10).await;
    let (token, key_id) = demo.token("alice").await;
    for scenario in ["payload", "header", "protocol"] {
        let reply = client(&demo.base, &token, scenario, 0).await;
        assert_eq!(reply["connected"], true, "{scenario}: {reply}");
        let me = &reply["whoami"];
        assert_eq!(me["user"], "alice", "{scenario}: {reply}");
        assert_eq!(me["credential"], "api_key");
        assert_eq!(me["key_id"], key_id.as_str());
        assert!(
            me["scopes"]
                .as_array()
                .unwrap()
                .contains(&Value::from("nodes:read")),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn bad_missing_and_revoked_tokens_get_connect_error() {
    if !client_installed("bad_missing_and_revoked_tokens_get_connect_error") {
        return;
    }
    let demo = Demo::start(10).await;
    let generic = "Invalid or missing API token";
    let reply = client(&demo.base, "st_not_a_real_token", "payload", 0).await;
    assert_refused(&reply, "unauthorized", generic);
    let reply = client(&demo.base, "-", "payload", 0).await;
    assert_refused(&reply, "unauthorized", generic);

    let (token, key_id) = demo.token("bob").await;
    let reply = client(&demo.base, &token, "payload", 0).await;
    assert_eq!(reply["connected"], true, "{reply}");
    // Revoked while its verification is cached: refused at once.
    commands::revoke(&demo.backend, &server::RULES, &key_id)
        .await
        .unwrap();
    let reply = client(&demo.base, &token, "payload", 0).await;
    assert_refused(&reply, "unauthorized", generic);
    assert!(
        !reply.to_string().contains(&token),
        "the token is never echoed"
    );
}

#[tokio::test]
async fn events_over_the_connection_quota_get_rate_limited() {
    if !client_installed("events_over_the_connection_quota_get_rate_limited") {
        return;
    }
    let demo = Demo::start(10).await;
    let (token, _) = demo.token("alice").await;
    // About one event per second per connection: of 5 sent at once, the
    // first is echoed and the other 4 answered with `rate_limited`.
    let reply = client(&demo.base, &token, "flood", 5).await;
    assert_eq!(reply["connected"], true, "{reply}");
    assert_eq!(reply["timed_out"], false, "{reply}");
    assert_eq!(reply["echoes"], serde_json::json!([{ "n": 0 }]), "{reply}");
    let limited = reply["rate_limited"].as_array().unwrap();
    assert_eq!(limited.len(), 4, "{reply}");
    for event in limited {
        let wait = event["retry_after_ms"].as_u64().unwrap();
        assert!((1..=1000).contains(&wait), "{reply}");
    }
}

#[tokio::test]
async fn connects_are_limited_per_ip() {
    if !client_installed("connects_are_limited_per_ip") {
        return;
    }
    let demo = Demo::start(3).await;
    let (token, _) = demo.token("alice").await;
    let reply = client(&demo.base, &token, "connects", 4).await;
    let outcomes = reply["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 4, "{reply}");
    for ok in &outcomes[..3] {
        assert_eq!(ok["connected"], true, "{reply}");
    }
    assert_refused(&outcomes[3], "rate_limited", "Rate limit exceeded");
}

#[tokio::test]
async fn a_connected_socket_is_dropped_when_its_key_is_revoked() {
    use tokio::io::AsyncBufReadExt;
    if !client_installed("a_connected_socket_is_dropped_when_its_key_is_revoked") {
        return;
    }
    let demo = Demo::start(10).await;
    let (token, id) = demo.token("alice").await;
    let mut child = tokio::process::Command::new("node")
        .arg(js_dir().join("socketio.mjs"))
        .args([demo.base.as_str(), token.as_str(), "revoked"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node ran");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        next_json(&mut lines).await,
        serde_json::json!({ "connected": true })
    );
    commands::revoke(&demo.backend, &server::RULES, &id)
        .await
        .unwrap();
    let reply = next_json(&mut lines).await;
    assert_eq!(reply["disconnected"], true, "{reply}");
    assert_eq!(reply["reason"], "io server disconnect", "{reply}");
    assert_eq!(reply["revoked"]["error"], "unauthorized", "{reply}");
}

/// The next JSON line the client prints, within the deadline.
async fn next_json(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(CLIENT_DEADLINE, lines.next_line())
        .await
        .expect("the JavaScript client answered in time")
        .unwrap()
        .expect("a line from the client");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn an_edit_that_takes_the_client_off_the_allowlist_or_disables_the_key_drops_its_socket() {
    use tokio::io::AsyncBufReadExt;
    if !client_installed(
        "an_edit_that_takes_the_client_off_the_allowlist_or_disables_the_key_drops_its_socket",
    ) {
        return;
    }
    let demo = Demo::start(10).await;
    let elsewhere = vec!["203.0.113.0/24".parse().unwrap()];
    let disabled = Some(time::OffsetDateTime::now_utc());
    let edits = [
        (
            auth_core::store::KeyUpdate::default().ip_allowlist(elsewhere),
            "ip_not_allowed",
        ),
        (
            auth_core::store::KeyUpdate::default().disabled_at(disabled),
            "disabled",
        ),
    ];
    for (edit, reason) in edits {
        let (token, id) = demo.token("alice").await;
        let mut child = tokio::process::Command::new("node")
            .arg(js_dir().join("socketio.mjs"))
            .args([demo.base.as_str(), token.as_str(), "revoked"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node ran");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(
            next_json(&mut lines).await,
            serde_json::json!({ "connected": true })
        );
        let id: auth_core::KeyId = id.parse().unwrap();
        demo.backend.keys.update(id, &edit).await.unwrap();
        let reply = next_json(&mut lines).await;
        assert_eq!(reply["disconnected"], true, "{reply}");
        assert_eq!(reply["reason"], "io server disconnect", "{reply}");
        assert_eq!(reply["revoked"]["reason"], reason, "{reply}");
    }
}
