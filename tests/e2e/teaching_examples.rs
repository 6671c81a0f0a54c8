//! The single-concept examples (`minimal`, `scopes`, `websocket`,
//! `rate_limits`, `session_keys`) run as their own processes, as a reader
//! runs them, and do what their documentation says.
//!
//! `cargo test --workspace --all-features` (the README's command) builds the
//! examples next to the test binaries; each one is started on a temporary
//! SQLite file and port 0, and the test reads what it prints. (Run alone with
//! `--test e2e`, cargo does not build them: build them first
//! with `cargo build --examples --all-features`.)

use std::{collections::HashMap, path::PathBuf, process::Stdio};

use futures_util::{SinkExt, StreamExt};
use reqwest::{header, StatusCode};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

/// A running example, killed when dropped.
struct Example {
    _child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// What it printed before listening: `name=value` and `…: value` lines.
    printed: HashMap<String, String>,
}

async fn start(name: &str) -> Example {
    // target/debug/deps/<this test> -> target/debug/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path: PathBuf = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&path)
        .args([
            "--db",
            dir.path().join("keys.db").to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (build the examples first: `cargo build --examples --all-features`)",
                path.display()
            )
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = HashMap::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(addr) = line.strip_prefix("listening on ") {
            let base = addr
                .replace("ws://", "http://")
                .trim_end_matches("/ws")
                .to_owned();
            return Example {
                _child: child,
                _dir: dir,
                base,
                printed,
            };
        }
        let (k, v) = line
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
            .or_else(|| line.rsplit_once(": "))
            .or_else(|| line.rsplit_once(' '))
            .unwrap_or_else(|| panic!("unexpected line from {name}: {line}"));
        printed.insert(k.to_owned(), v.to_owned());
    }
    panic!("{name} exited before listening");
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn minimal_serves_the_printed_token_and_refuses_others() {
    let ex = start("minimal").await;
    let token = &ex.printed["token for alice (shown once)"];
    let http = reqwest::Client::new();
    let me = http
        .get(format!("{}/me", ex.base))
        .header(header::AUTHORIZATION, bearer(token))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let body: serde_json::Value = me.json().await.unwrap();
    assert_eq!(body["user"], "alice", "{body}");
    // The last character changed (to `x`, or to `y` where it was `x`).
    let (head, last) = token.split_at(token.len() - 1);
    let forged = format!("{head}{}", if last == "x" { "y" } else { "x" });
    let refused = http
        .get(format!("{}/me", ex.base))
        .header(header::AUTHORIZATION, bearer(&forged))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn scopes_and_access_levels_are_both_checked() {
    let ex = start("scopes").await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, who: &str| {
        http.request(method, format!("{}/notes/n1", ex.base))
            .header(header::AUTHORIZATION, bearer(&ex.printed[who]))
            .send()
    };
    assert_eq!(
        call(reqwest::Method::GET, "BOB").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        call(reqwest::Method::PUT, "ALICE").await.unwrap().status(),
        StatusCode::OK
    );
    // bob's key may write, but bob is only a Viewer of the note.
    assert_eq!(
        call(reqwest::Method::PUT, "BOB").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // alice is the Owner, but this key of hers may only read.
    assert_eq!(
        call(reqwest::Method::PUT, "READ_ONLY")
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_websocket_takes_the_token_as_a_subprotocol() {
    let ex = start("websocket").await;
    let token = &ex.printed["token for alice (shown once)"];
    let mut req = format!("{}/ws", ex.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("Bearer, {token}").parse().unwrap(),
    );
    let (mut socket, answer) = tokio_tungstenite::connect_async(req).await.unwrap();
    // The server selects `Bearer`, never echoing the token.
    assert_eq!(answer.headers()["sec-websocket-protocol"], "Bearer");
    socket.send(Message::Text("hi".into())).await.unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "alice: hi");

    let mut bad = format!("{}/ws", ex.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    bad.headers_mut()
        .insert("sec-websocket-protocol", "Bearer, rl_nope".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());
}

#[tokio::test]
async fn the_expensive_route_answers_429_after_five() {
    let ex = start("rate_limits").await;
    let token = &ex.printed["token for alice (shown once)"];
    let http = reqwest::Client::new();
    for i in 0..5 {
        let ok = http
            .post(format!("{}/reports", ex.base))
            .header(header::AUTHORIZATION, bearer(token))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "request {i}");
    }
    let limited = http
        .post(format!("{}/reports", ex.base))
        .header(header::AUTHORIZATION, bearer(token))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key(header::RETRY_AFTER));
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    // Other routes still have tokens left.
    let other = http
        .get(format!("{}/hello", ex.base))
        .header(header::AUTHORIZATION, bearer(token))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_signed_in_user_makes_a_key_that_works_on_the_api() {
    let ex = start("session_keys").await;
    let password = &ex.printed["sign in as alice with password"];
    let http = reqwest::Client::new();
    let wrong = http
        .post(format!("{}/login", ex.base))
        .json(&serde_json::json!({"user": "alice", "password": "guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let login = http
        .post(format!("{}/login", ex.base))
        .json(&serde_json::json!({"user": "alice", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // Without the session: refused. From another site: refused.
    let keys = format!("{}/account/keys", ex.base);
    let anonymous = http
        .post(&keys)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let cross_site = http
        .post(&keys)
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, "https://evil.example")
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    let created = http
        .post(&keys)
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &ex.base)
        .json(&serde_json::json!({"name": "laptop", "scopes": ["profile:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: serde_json::Value = created.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    let me = http
        .get(format!("{}/api/me", ex.base))
        .header(header::AUTHORIZATION, bearer(token))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
}
