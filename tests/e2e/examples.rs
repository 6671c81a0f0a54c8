//! The examples' routers (server, pod, portal)
//! served on 127.0.0.1:0 and exercised over real HTTP and WebSockets; their
//! command-line commands; and fleets of two instances on PostgreSQL
//! (`DATABASE_URL`) and Redis (`REDIS_URL`).

use keygate_demo::support;

use keygate_demo::server;

use keygate_demo::pod;

use keygate_demo::portal;

use crate::client;

use auth_core::SecretHasher;
use client::{issue, memory, Api};
use futures_util::{SinkExt, StreamExt};
use keygate_test_support::eventually;
use serde_json::{json, Value};
use support::{
    cli::{self, Command},
    commands,
    serve::spawn,
    Backend,
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

// ---------------------------------------------------------------- fixtures

async fn start_server(backend: &Backend, options: server::Options) -> (Api, server::Server) {
    let app = server::Server::new(backend, &options).unwrap();
    (Api::at(spawn(app.router()).await), app)
}

async fn start_pod(backend: &Backend, options: pod::Options) -> Api {
    let app = pod::Pod::new(backend, &options).unwrap();
    Api::at(spawn(app.router()).await)
}

async fn start_portal(backend: &Backend) -> Api {
    let app = portal::Portal::new(backend, &portal::Options::default()).unwrap();
    Api::at(spawn(app.router()).await)
}

/// A WebSocket handshake to `/ws` offering `Bearer, <token>` as subprotocols.
async fn ws_connect(
    api: &Api,
    token: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let mut req = format!("ws://{}/ws", api.addr)
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("Bearer, {t}").parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, res)| {
            assert_eq!(res.headers()["sec-websocket-protocol"], "Bearer");
            ws
        })
}

fn handshake_status(err: tungstenite::Error) -> (u16, Option<String>) {
    match err {
        tungstenite::Error::Http(res) => (
            res.status().as_u16(),
            res.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// `(event, data)` pairs of a server-sent event stream.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = String::new();
        let mut data = Value::Null;
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data = serde_json::from_str(d.trim()).unwrap();
            }
        }
        out.push((event, data));
    }
    out
}

// ---------------------------------------------------------------- command line

#[test]
fn every_example_explains_its_command_line() {
    for (spec, port) in [
        (&server::CLI, "3000"),
        (&pod::CLI, "3001"),
        (&portal::CLI, "3003"),
    ] {
        let help = match cli::try_parse(spec, [spec.name, "--help"]) {
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.render().to_string(),
            other => panic!("--help did not print help: {other:?}"),
        };
        for needle in [
            "serve",
            "issue",
            "list",
            "revoke",
            "--addr",
            "--db",
            "--redis",
            "--rate-limit",
            port,
        ] {
            assert!(
                help.contains(needle),
                "{} --help lacks {needle}:\n{help}",
                spec.name
            );
        }
        assert!(help.contains(&format!("./data/{}.db", spec.name)));

        // No subcommand: serve, with the defaults.
        let parsed = cli::try_parse(spec, [spec.name]).unwrap();
        assert!(parsed.command.is_none());
        assert_eq!(parsed.serve.addr.port().to_string(), port);
        assert_eq!(parsed.serve.db.db, format!("./data/{}.db", spec.name));

        let parsed = cli::try_parse(
            spec,
            [
                spec.name,
                "serve",
                "--addr",
                "127.0.0.1:9",
                "--db",
                "postgres://db/x",
                "--redis",
                "redis://r/",
            ],
        )
        .unwrap();
        match parsed.command {
            Some(Command::Serve(s)) => {
                assert_eq!(s.addr.to_string(), "127.0.0.1:9");
                assert_eq!(
                    (s.db.db.as_str(), s.redis.as_deref()),
                    ("postgres://db/x", Some("redis://r/"))
                );
            }
            other => panic!("{other:?}"),
        }
        let parsed = cli::try_parse(
            spec,
            [
                spec.name, "issue", "--user", "u", "--scope", "a", "--scope", "b",
            ],
        )
        .unwrap();
        match parsed.command {
            Some(Command::Issue(i)) => assert_eq!(
                (i.user.as_str(), i.scopes.len(), i.name.as_str()),
                ("u", 2, "cli")
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cli::try_parse(spec, [spec.name, "revoke", "AAAAAAAAAAA"]).unwrap().command,
            Some(Command::Revoke(r)) if r.key_id == "AAAAAAAAAAA"
        ));
        assert!(
            cli::try_parse(spec, [spec.name, "issue"]).is_err(),
            "--user is required"
        );
        assert!(cli::try_parse(spec, [spec.name, "--rate-limit", "0"]).is_err());

        // --trusted-proxy: repeatable, a network or a single address.
        let parsed = cli::try_parse(
            spec,
            [
                spec.name,
                "--trusted-proxy",
                "10.1.2.3/8",
                "--trusted-proxy",
                "fd00::1",
            ],
        )
        .unwrap();
        let proxies = parsed.serve.proxies();
        let nets: Vec<String> = proxies.nets().iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "fd00::1/128"]);
        assert!(proxies.contains("10.200.0.1".parse().unwrap()));
        assert!(cli::try_parse(spec, [spec.name, "--trusted-proxy", "10.0.0.0/33"]).is_err());
        assert!(cli::try_parse(spec, [spec.name])
            .unwrap()
            .serve
            .trusted_proxies
            .is_empty());
    }
}

#[tokio::test]
async fn issue_prints_only_the_token_and_the_commands_manage_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/pod.db");
    let backend = Backend::open(db.to_str().unwrap(), SecretHasher::for_tests())
        .await
        .unwrap();
    assert!(backend.location.contains("pod.db") && backend.location.contains("SQLite"));
    let rules = &pod::RULES;
    let scopes = ["skills.invoke".to_owned()];

    let (mut out, mut log) = (Vec::new(), Vec::new());
    commands::issue_command(&backend, rules, "alice", &scopes, "n8n", &mut out, &mut log)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    let log = String::from_utf8(log).unwrap();
    let token = out.strip_suffix('\n').unwrap();
    assert!(
        token.starts_with("sk_live_") && !token.contains(char::is_whitespace),
        "{out:?}"
    );
    assert!(log.contains("shown once") && !log.contains(token), "{log}");

    // Refusals, with clear messages.
    let (mut sink, mut sink_log) = (Vec::new(), Vec::new());
    for (user, scopes, needle) in [
        ("alice", vec![], "--scope"),
        ("alice", vec!["root".to_owned()], "unknown scope 'root'"),
        (
            "mallory",
            vec!["mcp.read".to_owned()],
            "unknown user 'mallory'",
        ),
    ] {
        let err = commands::issue_command(
            &backend,
            rules,
            user,
            &scopes,
            "x",
            &mut sink,
            &mut sink_log,
        )
        .await
        .unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
    assert!(sink.is_empty());

    // `list` shows the key by id and hint, never the token.
    let (mut table, mut log) = (Vec::new(), Vec::new());
    commands::list_command(&backend, rules, "alice", &mut table, &mut log)
        .await
        .unwrap();
    let table = String::from_utf8(table).unwrap();
    let id = &token["sk_live_".len().."sk_live_".len() + 11];
    assert!(
        table.contains(id) && table.contains("n8n") && table.contains("skills.invoke"),
        "{table}"
    );
    assert!(
        !table.contains(token) && !table.contains(&token[20..]),
        "{table}"
    );
    let mut empty = Vec::new();
    commands::list_command(&backend, rules, "bob", &mut empty, &mut log)
        .await
        .unwrap();
    assert!(empty.is_empty());

    // A server on the same file: `revoke` from "another process" (a second
    // handle on the file) reaches it through the store's change watcher.
    let api = start_pod(&backend, pod::Options::default()).await;
    api.get("/api/external/skills")
        .token(token)
        .send()
        .await
        .expect(200);
    let other = Backend::open(db.to_str().unwrap(), SecretHasher::for_tests())
        .await
        .unwrap();
    let mut log = Vec::new();
    commands::revoke_command(&other, rules, id, &mut log)
        .await
        .unwrap();
    assert!(String::from_utf8(log).unwrap().contains(id));
    eventually("the running server to refuse the revoked key", || async {
        api.get("/api/external/skills")
            .token(token)
            .send()
            .await
            .status
            == 401
    })
    .await;
    let err = commands::revoke_command(&other, rules, "AAAAAAAAAAA", &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.contains("no key with id"), "{err}");
    let err = commands::revoke_command(&other, rules, "not-an-id", &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.contains("not a key id"), "{err}");
}

// ---------------------------------------------------------------- server

#[tokio::test]
async fn server_prints_an_admin_token_on_the_first_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/server.db");
    let db = db.to_str().unwrap();
    let first = Backend::open(db, SecretHasher::for_tests()).await.unwrap();
    let app = server::Server::new(&first, &server::Options::default()).unwrap();
    let key = app
        .bootstrap_admin()
        .await
        .unwrap()
        .expect("a token on the first start");
    let token = key.token.expose_secret().to_owned();
    assert!(token.starts_with("st_"));
    assert_eq!(key.record.owner.user_id(), "admin");
    assert!(key.record.scopes.has_all(server::SCOPES));
    drop(key);

    // A restart on the same file: no new token.
    let again = Backend::open(db, SecretHasher::for_tests()).await.unwrap();
    let restarted = server::Server::new(&again, &server::Options::default()).unwrap();
    assert!(restarted.bootstrap_admin().await.unwrap().is_none());
    let api = Api::at(spawn(restarted.router()).await);
    let me = api.get("/api/me").token(&token).send().await;
    me.expect(200);
    assert_eq!(me.json["actor"], "admin");
    assert_eq!(me.json["user"], "admin");
    assert_eq!(me.json["key_id"], token[3..14]);
    assert_eq!(
        me.json["scopes"],
        json!(["nodes:read", "nodes:write", "tokens:manage"])
    );
    assert_eq!(me.json["workspace"], Value::Null);

    // The token's use is in the activity log once written out.
    again.flush(&restarted.verifier).await;
    let activity = format!("/api/tokens/{}/activity", &token[3..14]);
    eventually("the audit event of /api/me", || async {
        let page = api.get(&activity).token(&token).send().await;
        page.json["events"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["path"] == "/api/me" && e["status"] == 200)
        })
    })
    .await;
}

#[tokio::test]
async fn server_nodes_follow_access_levels_and_versions() {
    let backend = memory();
    let (api, _) = start_server(&backend, server::Options::default()).await;
    let rules = &server::RULES;
    let alice = issue(&backend, rules, "alice", &[]).await;
    let bob = issue(&backend, rules, "bob", &[]).await;
    let reader = issue(&backend, rules, "alice", &["nodes:read"]).await;

    api.get("/api/nodes")
        .send()
        .await
        .expect_error(401, "unauthorized");
    let r = api
        .post("/api/nodes")
        .token(&alice)
        .json(r#"{"title":"Plan","content":"v1"}"#)
        .send()
        .await;
    r.expect(201);
    assert_eq!(
        (r.json["level"].as_u64(), r.json["version"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(r.json["owner"], "alice");
    let id = r.json["id"].as_str().unwrap().to_owned();
    let node = format!("/api/nodes/{id}");
    let grant = |user: &str| format!("{node}/grants/{user}");

    // Scopes first: a read-only token cannot create.
    let r = api
        .post("/api/nodes")
        .token(&reader)
        .json(r#"{"title":"x"}"#)
        .send()
        .await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("nodes:write"));
    api.post("/api/nodes")
        .token(&alice)
        .json(r#"{"title":""}"#)
        .send()
        .await
        .expect_error(422, "unprocessable_entity");
    api.post("/api/nodes")
        .token(&alice)
        .json("{")
        .send()
        .await
        .expect_error(400, "bad_request");

    // Bob has no grant: 403; a missing node: 404.
    api.get(&node)
        .token(&bob)
        .send()
        .await
        .expect_error(403, "forbidden");
    api.get("/api/nodes/n999")
        .token(&bob)
        .send()
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        api.get("/api/nodes").token(&bob).send().await.json["nodes"],
        json!([])
    );

    // Viewer: reads, cannot edit.
    api.put(&grant("bob"))
        .token(&alice)
        .json(r#"{"level":3}"#)
        .send()
        .await
        .expect(200);
    let r = api.get(&node).token(&bob).send().await;
    r.expect(200);
    assert_eq!(r.json["level"], 3);
    assert_eq!(
        api.get("/api/nodes").token(&bob).send().await.json["nodes"][0]["id"],
        id.as_str()
    );
    let edit = |v: u64| format!(r#"{{"version":{v},"title":"Plan B"}}"#);
    let r = api.patch(&node).token(&bob).json(&edit(1)).send().await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("editor"), "{}", r.message());

    // Editor: edits with the current version; a stale one is 409.
    api.put(&grant("bob"))
        .token(&alice)
        .json(r#"{"level":"editor"}"#)
        .send()
        .await
        .expect(200);
    let r = api.patch(&node).token(&bob).json(&edit(1)).send().await;
    r.expect(200);
    assert_eq!(
        (r.json["version"].as_u64(), r.json["title"].as_str()),
        (Some(2), Some("Plan B"))
    );
    let r = api.patch(&node).token(&alice).json(&edit(1)).send().await;
    r.expect_error(409, "version_conflict");
    assert!(r.message().contains("version 2"), "{}", r.message());
    api.patch(&node)
        .token(&alice)
        .json(r#"{"title":"no version"}"#)
        .send()
        .await
        .expect_error(422, "unprocessable_entity");
    // ...but manages no grants and deletes nothing.
    api.put(&grant("admin"))
        .token(&bob)
        .json(r#"{"level":3}"#)
        .send()
        .await
        .expect_error(403, "forbidden");
    api.delete(&node)
        .token(&bob)
        .send()
        .await
        .expect_error(403, "forbidden");

    // The Owner's grant is fixed; there is one Owner; grantees must exist.
    let r = api
        .put(&grant("alice"))
        .token(&alice)
        .json(r#"{"level":3}"#)
        .send()
        .await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("Owner"));
    api.delete(&grant("alice"))
        .token(&alice)
        .send()
        .await
        .expect_error(403, "forbidden");
    api.put(&grant("admin"))
        .token(&alice)
        .json(r#"{"level":0}"#)
        .send()
        .await
        .expect_error(422, "unprocessable_entity");
    api.put(&grant("admin"))
        .token(&alice)
        .json(r#"{"level":7}"#)
        .send()
        .await
        .expect_error(422, "unprocessable_entity");
    api.put(&grant("nobody"))
        .token(&alice)
        .json(r#"{"level":3}"#)
        .send()
        .await
        .expect_error(404, "not_found");

    // Admin: manages grants (not the Owner's) and deletes.
    api.put(&grant("bob"))
        .token(&alice)
        .json(r#"{"level":1}"#)
        .send()
        .await
        .expect(200);
    api.put(&grant("admin"))
        .token(&bob)
        .json(r#"{"level":3}"#)
        .send()
        .await
        .expect(200);
    api.delete(&grant("admin"))
        .token(&bob)
        .send()
        .await
        .expect(204);
    api.delete(&grant("admin"))
        .token(&bob)
        .send()
        .await
        .expect_error(404, "not_found");
    api.delete(&node).token(&bob).send().await.expect(204);
    api.get(&node)
        .token(&alice)
        .send()
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn server_manages_tokens_at_api_tokens() {
    let backend = memory();
    let (api, app) = start_server(&backend, server::Options::default()).await;
    let admin = app
        .bootstrap_admin()
        .await
        .unwrap()
        .unwrap()
        .token
        .expose_secret()
        .to_owned();
    let reader = issue(&backend, &server::RULES, "alice", &["nodes:read"]).await;

    let r = api
        .post("/api/tokens")
        .token(&admin)
        .json(r#"{"name":"laptop","scopes":["nodes:read"]}"#)
        .send()
        .await;
    r.expect(201);
    let token = r.json["token"].as_str().unwrap().to_owned();
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("st_"));
    api.get("/api/nodes").token(&token).send().await.expect(200);

    let list = api.get("/api/tokens").token(&admin).send().await;
    list.expect(200);
    assert_eq!(list.json["keys"].as_array().unwrap().len(), 2);
    assert!(!list.text.contains(&token) && !list.text.contains("\"token\""));

    // Keys without tokens:manage, and other users' keys, are out of reach.
    api.get("/api/tokens")
        .token(&reader)
        .send()
        .await
        .expect_error(403, "forbidden");
    api.post("/api/tokens")
        .token(&admin)
        .json(r#"{"name":"x","scopes":["nodes:delete"]}"#)
        .send()
        .await
        .expect_error(422, "unprocessable_entity");

    // Rotation with grace, then revocation of the new key: immediate.
    let r = api
        .post(&format!("/api/tokens/{id}/rotate"))
        .token(&admin)
        .json(r#"{"grace_seconds":600}"#)
        .send()
        .await;
    r.expect(201);
    let rotated = r.json["token"].as_str().unwrap().to_owned();
    let rotated_id = r.json["id"].as_str().unwrap().to_owned();
    api.get("/api/nodes").token(&token).send().await.expect(200);
    api.get("/api/nodes")
        .token(&rotated)
        .send()
        .await
        .expect(200);
    api.delete(&format!("/api/tokens/{rotated_id}"))
        .token(&admin)
        .send()
        .await
        .expect(204);
    api.get("/api/nodes")
        .token(&rotated)
        .send()
        .await
        .expect_error(401, "unauthorized");

    let page = api
        .get(&format!("/api/tokens/{rotated_id}/activity"))
        .token(&admin)
        .send()
        .await;
    page.expect(200);
    let events = page.json["events"].as_array().unwrap();
    assert_eq!(
        events[0]["status"], 401,
        "newest first: the refused request"
    );
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(events[1]["status"], 200);
    assert!(events
        .iter()
        .all(|e| e["method"] == "GET" && e["path"] == "/api/nodes"));
}

/// The server demo: a token has the rights of the user who made it, unless the
/// request names its scopes.
#[tokio::test]
async fn server_tokens_made_without_scopes_have_their_users_rights() {
    let backend = memory();
    let (api, app) = start_server(&backend, server::Options::default()).await;
    let admin = app
        .bootstrap_admin()
        .await
        .unwrap()
        .unwrap()
        .token
        .expose_secret()
        .to_owned();
    let r = api
        .post("/api/tokens")
        .token(&admin)
        .json(r#"{"name":"ci"}"#)
        .send()
        .await;
    r.expect(201);
    assert_eq!(
        r.json["scopes"],
        json!(["nodes:read", "nodes:write", "tokens:manage"])
    );
    let token = r.json["token"].as_str().unwrap().to_owned();
    api.get("/api/nodes").token(&token).send().await.expect(200);

    let r = api
        .post("/api/tokens")
        .token(&admin)
        .json(r#"{"name":"bare","scopes":[]}"#)
        .send()
        .await;
    r.expect(201);
    let bare = r.json["token"].as_str().unwrap().to_owned();
    api.get("/api/nodes").token(&bare).send().await.expect(403);
}

#[tokio::test]
async fn server_rate_limits_rest_per_user_and_websocket_connects_per_ip() {
    let backend = memory();
    let options = server::Options {
        requests_per_hour: 3,
        ..server::Options::default()
    };
    let (api, _) = start_server(&backend, options).await;
    let alice = issue(&backend, &server::RULES, "alice", &[]).await;
    let bob = issue(&backend, &server::RULES, "bob", &[]).await;

    for remaining in ["2", "1", "0"] {
        let r = api.get("/api/me").token(&alice).send().await;
        r.expect(200);
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        assert_eq!(r.header("ratelimit-remaining"), Some(remaining));
        assert!(r.header("ratelimit-reset").is_some());
    }
    let r = api.get("/api/nodes").token(&alice).send().await;
    r.expect_error(429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=1200).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    // Per user: bob is unaffected.
    api.get("/api/me").token(&bob).send().await.expect(200);

    let backend = memory();
    let options = server::Options {
        ws_connects_per_minute: 2,
        ..server::Options::default()
    };
    let (api, _) = start_server(&backend, options).await;
    let token = issue(&backend, &server::RULES, "alice", &[]).await;
    for _ in 0..2 {
        let mut ws = ws_connect(&api, Some(&token)).await.unwrap();
        ws.close(None).await.unwrap();
    }
    let (status, retry) = handshake_status(ws_connect(&api, Some(&token)).await.unwrap_err());
    assert_eq!(status, 429);
    assert!(retry.is_some());
    // REST requests of the same user are not connects.
    api.get("/api/me").token(&token).send().await.expect(200);
}

#[tokio::test]
async fn server_websocket_echoes_and_answers_floods_with_rate_limited() {
    let backend = memory();
    let (api, _) = start_server(&backend, server::Options::default()).await;
    let token = issue(&backend, &server::RULES, "alice", &[]).await;

    assert_eq!(
        handshake_status(ws_connect(&api, None).await.unwrap_err()).0,
        401
    );
    assert_eq!(
        handshake_status(ws_connect(&api, Some("st_nope")).await.unwrap_err()).0,
        401
    );

    let mut ws = ws_connect(&api, Some(&token)).await.unwrap();
    for i in 0..5 {
        ws.send(tungstenite::Message::text(format!("hello {i}")))
            .await
            .unwrap();
    }
    let mut replies = Vec::new();
    while replies.len() < 5 {
        match ws.next().await.unwrap().unwrap() {
            tungstenite::Message::Text(t) => replies.push(t.to_string()),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(replies[0], "hello 0");
    let limited: Vec<Value> = replies
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .filter(|v| v["event"] == "rate_limited")
        .collect();
    assert!(
        !limited.is_empty(),
        "five messages at once exceed one per second: {replies:?}"
    );
    assert!(limited
        .iter()
        .all(|v| v["retry_after_ms"].as_u64().unwrap() >= 1));
    // The socket stays open after a refusal.
    ws.send(tungstenite::Message::Ping(vec![7].into()))
        .await
        .unwrap();
    assert!(
        matches!(ws.next().await.unwrap().unwrap(), tungstenite::Message::Pong(p) if p[..] == [7])
    );
}

// ---------------------------------------------------------------- pod

/// "Keys are rate-limited per pod tier": a free-tier key gets 429 before a
/// pro-tier key does.
#[tokio::test]
async fn pod_rate_limits_keys_per_tier() {
    let backend = memory();
    let options = pod::Options {
        free_per_hour: 3,
        pro_per_hour: 6,
        pro_users: vec!["bob".into()],
        ..pod::Options::default()
    };
    let api = start_pod(&backend, options).await;
    let free = issue(&backend, &pod::RULES, "alice", &["skills.invoke"]).await;
    let pro = issue(&backend, &pod::RULES, "bob", &["skills.invoke"]).await;
    let mut passed = [0, 0];
    for _ in 0..8 {
        for (i, token) in [&free, &pro].into_iter().enumerate() {
            let r = api.get("/api/me").token(token).send().await;
            if r.status == 429 {
                r.expect_error(429, "rate_limited");
            } else {
                r.expect(200);
                passed[i] += 1;
            }
        }
    }
    assert_eq!(passed, [3, 6], "free, then pro");
}

#[tokio::test]
async fn pod_scopes_are_additive_and_enforced_per_surface() {
    let backend = memory();
    let api = start_pod(&backend, pod::Options::default()).await;
    let rules = &pod::RULES;
    let skills = issue(&backend, rules, "alice", &["skills.invoke"]).await;
    let hub = issue(&backend, rules, "alice", &["hub-protocol.read"]).await;
    let hub_write = issue(
        &backend,
        rules,
        "alice",
        &["hub-protocol.write", "hub-protocol.read"],
    )
    .await;
    let reader = issue(
        &backend,
        rules,
        "alice",
        &["read:entities", "write:entities"],
    )
    .await;
    let chat = issue(&backend, rules, "alice", &["chat.stream"]).await;
    let mcp = issue(&backend, rules, "bob", &["mcp.read"]).await;

    // Skills: the workspace is the owner's default.
    let r = api.get("/api/external/skills").token(&skills).send().await;
    r.expect(200);
    assert_eq!(r.json["workspace"], "ws_alpha");
    assert!(r.json["skills"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == "summarize"));
    let r = api
        .post("/api/external/skills/summarize/invoke")
        .token(&skills)
        .json(r#"{"input":"First. Second."}"#)
        .send()
        .await;
    r.expect(200);
    assert_eq!(
        (r.json["output"].as_str(), r.json["workspace"].as_str()),
        (Some("First."), Some("ws_alpha"))
    );
    api.post("/api/external/skills/nope/invoke")
        .token(&skills)
        .json("{}")
        .send()
        .await
        .expect_error(404, "not_found");
    let r = api.get("/api/external/skills").token(&hub).send().await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("skills.invoke"));
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("scope=\"skills.invoke\""));

    // hub-protocol.read alone reads the Hub surface; read:entities does not.
    let r = api.get("/api/hub/entities").token(&hub).send().await;
    r.expect(200);
    assert_eq!(r.json["workspace"], "ws_alpha");
    assert_eq!(r.json["entities"].as_array().unwrap().len(), 2);
    api.get("/api/hub/entities")
        .token(&reader)
        .send()
        .await
        .expect_error(403, "forbidden");
    api.post("/api/hub/entities")
        .token(&hub)
        .json(r#"{"title":"x"}"#)
        .send()
        .await
        .expect_error(403, "forbidden");
    let r = api
        .post("/api/hub/entities")
        .token(&hub_write)
        .json(r#"{"title":"From the hub"}"#)
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.json["workspace"], "ws_alpha");

    // tRPC: read:entities and an explicit workspace.
    let r = api.get("/trpc/entities.list").token(&reader).send().await;
    r.expect_error(400, "bad_request");
    assert!(r.message().contains("x-workspace-id"), "{}", r.message());
    let r = api
        .get("/trpc/entities.list")
        .token(&reader)
        .header("x-workspace-id", "ws_beta")
        .send()
        .await;
    r.expect(200);
    let titles: Vec<&str> = r.json["result"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Reading list"]);
    let r = api
        .get("/trpc/entities.list")
        .token(&reader)
        .header("x-workspace-id", "ws_gamma")
        .send()
        .await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("workspace"));
    api.get("/trpc/entities.list")
        .token(&hub)
        .header("x-workspace-id", "ws_alpha")
        .send()
        .await
        .expect_error(403, "forbidden");
    let r = api
        .post("/trpc/entities.create")
        .token(&reader)
        .header("x-workspace-id", "ws_beta")
        .json(r#"{"title":"New note"}"#)
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.json["result"]["data"]["workspace"], "ws_beta");
    let r = api
        .get("/trpc/entities.list")
        .token(&reader)
        .header("x-workspace-id", "ws_beta")
        .send()
        .await;
    assert_eq!(r.json["result"]["data"].as_array().unwrap().len(), 2);
    api.post("/trpc/entities.create")
        .token(&hub_write)
        .header("x-workspace-id", "ws_beta")
        .json(r#"{"title":"x"}"#)
        .send()
        .await
        .expect_error(403, "forbidden");

    // MCP, for bob in his own workspace.
    let r = api.get("/mcp/resources").token(&mcp).send().await;
    r.expect(200);
    assert_eq!(r.json["resources"][0]["uri"], "entity://ws_gamma/ent_4");
    api.get("/mcp/resources")
        .token(&reader)
        .send()
        .await
        .expect_error(403, "forbidden");

    // Chat streams server-sent events.
    let res = reqwest::Client::new()
        .post(format!("http://{}/api/external/chat/stream", api.addr))
        .bearer_auth(&chat)
        .json(&json!({"message": "hello pod"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&res.text().await.unwrap());
    let words: Vec<&str> = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["You", "said:", "hello", "pod"]);
    assert_eq!(
        events.last().unwrap(),
        &("done".to_owned(), json!({"workspace": "ws_alpha"}))
    );
    api.post("/api/external/chat/stream")
        .token(&skills)
        .json(r#"{"message":"x"}"#)
        .send()
        .await
        .expect_error(403, "forbidden");

    // /api/me names the workspace: the default, or the header's.
    let r = api.get("/api/me").token(&reader).send().await;
    assert_eq!(
        (r.json["user"].as_str(), r.json["workspace"].as_str()),
        (Some("alice"), Some("ws_alpha"))
    );
    let r = api
        .get("/api/me")
        .token(&reader)
        .header("x-workspace-id", "ws_beta")
        .send()
        .await;
    assert_eq!(r.json["workspace"], "ws_beta");
    assert_eq!(
        api.get("/api/me").token(&mcp).send().await.json["workspace"],
        "ws_gamma"
    );
    api.get("/api/me")
        .token("sk_live_garbage")
        .send()
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn pod_keys_api_shows_activity_and_revokes_at_once() {
    let backend = memory();
    let api = start_pod(&backend, pod::Options::default()).await;
    let manager = issue(
        &backend,
        &pod::RULES,
        "alice",
        &["keys.manage", "skills.invoke", "read:entities"],
    )
    .await;
    let plain = issue(&backend, &pod::RULES, "alice", &["skills.invoke"]).await;

    api.get("/api/keys")
        .token(&plain)
        .send()
        .await
        .expect_error(403, "forbidden");
    let r = api
        .post("/api/keys")
        .token(&manager)
        .json(r#"{"name":"Claude Code","scopes":["skills.invoke"]}"#)
        .send()
        .await;
    r.expect(201);
    let token = r.json["token"].as_str().unwrap().to_owned();
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sk_live_"));
    // Only what the managing key holds; only scopes of the seed.
    let r = api
        .post("/api/keys")
        .token(&manager)
        .json(r#"{"name":"x","scopes":["chat.stream"]}"#)
        .send()
        .await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("chat.stream"));
    let r = api
        .post("/api/keys")
        .token(&manager)
        .json(r#"{"name":"x","scopes":["admin"]}"#)
        .send()
        .await;
    r.expect_error(422, "unprocessable_entity");
    assert!(r.message().contains("Unknown scope 'admin'"));

    for _ in 0..2 {
        api.get("/api/external/skills")
            .token(&token)
            .send()
            .await
            .expect(200);
    }
    api.get("/trpc/entities.list")
        .token(&token)
        .header("x-workspace-id", "ws_alpha")
        .send()
        .await
        .expect(403);
    let page = api
        .get(&format!("/api/keys/{id}/activity?limit=2"))
        .token(&manager)
        .send()
        .await;
    page.expect(200);
    let events = page.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0]["path"].as_str(), events[0]["status"].as_u64()),
        (Some("/trpc/entities.list"), Some(403))
    );
    assert_eq!(events[1]["path"], "/api/external/skills");
    assert!(page.json["next_cursor"].is_i64());

    api.delete(&format!("/api/keys/{id}"))
        .token(&manager)
        .send()
        .await
        .expect(204);
    api.get("/api/external/skills")
        .token(&token)
        .send()
        .await
        .expect_error(401, "unauthorized");
    let listed = api.get("/api/keys").token(&manager).send().await;
    let revoked = listed.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_string());
    // Bob cannot touch alice's keys.
    let bob = issue(&backend, &pod::RULES, "bob", &["keys.manage"]).await;
    api.get(&format!("/api/keys/{id}/activity"))
        .token(&bob)
        .send()
        .await
        .expect_error(404, "not_found");
}

// ---------------------------------------------------------------- portal

/// Organisation administrators see and revoke every PAT of their own
/// organisation through the admin view, and nothing of another.
#[tokio::test]
async fn portal_admins_list_and_revoke_only_their_organisations_keys() {
    let backend = memory();
    let api = start_portal(&backend).await;
    let rules = &portal::RULES;
    let north = issue(&backend, rules, "admin1", &[]).await;
    let north_ci = issue(&backend, rules, "admin1", &["users:read"]).await;
    let south = issue(&backend, rules, "admin2", &[]).await;
    let id = |t: &str| {
        auth_core::token::ParsedToken::parse(t)
            .unwrap()
            .key_id()
            .to_string()
    };
    let ids = |v: &Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let r = api.get("/api/admin/keys").token(&north).send().await;
    r.expect(200);
    let mut listed = ids(&r.json);
    listed.sort();
    let mut want = vec![id(&north), id(&north_ci)];
    want.sort();
    assert_eq!(listed, want, "only org_north's keys");
    let r = api.get("/api/admin/keys").token(&south).send().await;
    assert_eq!(ids(&r.json), [id(&south)]);

    // Org A's admin cannot list, show or revoke org B's keys.
    api.get("/api/admin/keys?org=org_south")
        .token(&north)
        .send()
        .await
        .expect_error(403, "forbidden");
    api.get(&format!("/api/admin/keys/{}", id(&south)))
        .token(&north)
        .send()
        .await
        .expect_error(404, "not_found");
    api.delete(&format!("/api/admin/keys/{}", id(&south)))
        .token(&north)
        .send()
        .await
        .expect_error(404, "not_found");
    api.get("/api/me").token(&south).send().await.expect(200);

    // Its own organisation's key: revoked, and then refused.
    api.delete(&format!("/api/admin/keys/{}", id(&north_ci)))
        .token(&north)
        .send()
        .await
        .expect(204);
    api.get("/api/me").token(&north_ci).send().await.expect(401);
    let r = api
        .get("/api/admin/keys?state=revoked")
        .token(&north)
        .send()
        .await;
    assert_eq!(ids(&r.json), [id(&north_ci)]);
    let r = api
        .get("/api/admin/keys?state=sideways")
        .token(&north)
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 400);

    // Not an administrator (acting as a student): refused.
    api.get("/api/admin/keys")
        .token(&north)
        .header("x-subject-user", "stu1")
        .send()
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test]
async fn portal_pats_act_as_admin_or_subject_user() {
    let backend = memory();
    let api = start_portal(&backend).await;
    let rules = &portal::RULES;
    let err = commands::issue(&backend, rules, "edu1", &[], "x")
        .await
        .unwrap_err();
    assert!(err.contains("only administrators"), "{err}");
    let pat = issue(&backend, rules, "admin1", &[]).await;
    assert!(pat.starts_with("p:"));
    let no_sudo = issue(&backend, rules, "admin1", &["users:read", "users:write"]).await;
    let south = issue(&backend, rules, "admin2", &[]).await;

    // By default the PAT acts as the administrator who issued it.
    let me = api.get("/api/me").token(&pat).send().await;
    me.expect(200);
    assert_eq!(
        (me.json["actor"].as_str(), me.json["user"].as_str()),
        (Some("admin1"), Some("admin1"))
    );
    assert_eq!(
        (me.json["org"].as_str(), me.json["impersonating"].as_bool()),
        (Some("org_north"), Some(false))
    );

    let as_user = |user: &'static str| move |c: client::Call| c.header("x-subject-user", user);
    let stu1 = as_user("stu1");
    let edu1 = as_user("edu1");

    let me = stu1(api.get("/api/me").token(&pat)).send().await;
    me.expect(200);
    assert_eq!(
        (me.json["actor"].as_str(), me.json["user"].as_str()),
        (Some("admin1"), Some("stu1"))
    );
    assert_eq!(me.json["impersonating"], true);
    assert_eq!(
        me.json["scopes"],
        json!(["users:read", "users:write"]),
        "the student's ceiling"
    );

    // As the student, on the student: allowed (the portal's profile picture).
    let avatar = r#"{"avatar_url":"https://cdn.example/stu1.png"}"#;
    let r = stu1(api.patch("/api/users/stu1").token(&pat).json(avatar))
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.json["avatar_url"], "https://cdn.example/stu1.png");
    // As the student, on someone else: the student may not.
    let r = stu1(api.patch("/api/users/edu1").token(&pat).json(avatar))
        .send()
        .await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("stu1 is student"), "{}", r.message());
    // As the administrator, on anyone of the organisation.
    api.patch("/api/users/edu1")
        .token(&pat)
        .json(avatar)
        .send()
        .await
        .expect(200);
    api.patch("/api/users/stu1")
        .token(&pat)
        .json(r#"{"avatar_url":"ftp://x"}"#)
        .send()
        .await
        .expect_error(422, "unprocessable_entity");
    // Portal settings: administrators only, so not as an educator.
    let rename = r#"{"name":"North Academy of Arts"}"#;
    edu1(api.patch("/api/portal").token(&pat).json(rename))
        .send()
        .await
        .expect_error(403, "forbidden");
    let r = api
        .patch("/api/portal")
        .token(&pat)
        .json(rename)
        .send()
        .await;
    r.expect(200);
    assert_eq!(
        api.get("/api/portal").token(&pat).send().await.json["name"],
        "North Academy of Arts"
    );
    assert_eq!(
        api.get("/api/portal").token(&south).send().await.json["name"],
        "South College"
    );

    // Subjects: same organisation, existing, and the PAT needs `sudo`.
    let r = as_user("stu2")(api.get("/api/me").token(&pat)).send().await;
    r.expect_error(403, "forbidden");
    as_user("ghost")(api.get("/api/me").token(&pat))
        .send()
        .await
        .expect_error(403, "forbidden");
    let r = stu1(api.get("/api/me").token(&no_sudo)).send().await;
    r.expect_error(403, "forbidden");
    assert!(r.message().contains("sudo"), "{}", r.message());
    // Other organisations' users are not found.
    api.get("/api/users/stu1")
        .token(&south)
        .send()
        .await
        .expect_error(404, "not_found");
    let users = api.get("/api/users").token(&south).send().await;
    let ids: Vec<&str> = users.json["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["admin2", "stu2"]);

    // PATs are managed by administrators, not by them acting as others.
    let r = api
        .post("/api/tokens")
        .token(&pat)
        .json(r#"{"name":"sync","scopes":["users:read"]}"#)
        .send()
        .await;
    r.expect(201);
    assert!(r.json["token"].as_str().unwrap().starts_with("p:"));
    assert_eq!(r.json["org"], "org_north");
    stu1(api.get("/api/tokens").token(&pat))
        .send()
        .await
        .expect_error(403, "forbidden");
    let new_pat = r.json["token"].as_str().unwrap().to_owned();
    api.get("/api/tokens")
        .token(&new_pat)
        .send()
        .await
        .expect_error(403, "forbidden");

    // The audit log names both the administrator and the subject.
    let pat_id = &pat[2..13];
    let page = api
        .get(&format!("/api/tokens/{pat_id}/activity?limit=100"))
        .token(&pat)
        .send()
        .await;
    page.expect(200);
    let events = page.json["events"].as_array().unwrap();
    let acted = events
        .iter()
        .find(|e| {
            e["path"] == "/api/users/stu1"
                && e["method"] == "PATCH"
                && e["status"] == 200
                && !e["subject"].is_null()
        })
        .expect("an event of the PATCH made as stu1");
    assert_eq!(
        (acted["actor"].as_str(), acted["subject"].as_str()),
        (Some("admin1"), Some("stu1"))
    );
    let denied = events
        .iter()
        .find(|e| e["subject"] == "stu2")
        .expect("the refused subject is recorded");
    assert_eq!(
        (denied["outcome"].as_str(), denied["status"].as_u64()),
        (Some("failure"), Some(403))
    );

    // Revocation is immediate.
    let listed = api.get("/api/tokens").token(&pat).send().await;
    let sync_id = listed.json["keys"][0]["id"].as_str().unwrap().to_owned();
    api.delete(&format!("/api/tokens/{sync_id}"))
        .token(&pat)
        .send()
        .await
        .expect(204);
    api.get("/api/me")
        .token(&new_pat)
        .send()
        .await
        .expect_error(401, "unauthorized");
}

// ---------------------------------------------------------------- fleets

#[cfg(any(feature = "postgres", feature = "redis"))]
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn two_pods_on_one_postgres_share_keys_and_revocations() {
    use std::sync::Arc;

    use auth_core::store::PostgresKeyStore;
    let Some(url) = keygate_test_support::services::database_url(
        "two_pods_on_one_postgres_share_keys_and_revocations",
    ) else {
        return;
    };
    let schema = unique("keygate_examples");
    let open = || async {
        let store = Arc::new(
            PostgresKeyStore::connect_with_schema(&url, &schema)
                .await
                .expect("DATABASE_URL is set but PostgreSQL is unreachable"),
        );
        let audit = Arc::new(store.audit_log());
        (
            Backend {
                keys: store.clone(),
                audit,
                hasher: SecretHasher::for_tests(),
                location: "postgres".into(),
            },
            store,
        )
    };
    let (a, store) = open().await;
    let (b, _) = open().await;
    let pod_a = start_pod(&a, pod::Options::default()).await;
    let pod_b = start_pod(&b, pod::Options::default()).await;

    let manager = issue(&a, &pod::RULES, "alice", &["keys.manage", "skills.invoke"]).await;
    let r = pod_a
        .post("/api/keys")
        .token(&manager)
        .json(r#"{"name":"fleet","scopes":["skills.invoke"]}"#)
        .send()
        .await;
    r.expect(201);
    let token = r.json["token"].as_str().unwrap().to_owned();
    let id = r.json["id"].as_str().unwrap().to_owned();
    // Issued through one instance, accepted by the other.
    pod_b
        .get("/api/external/skills")
        .token(&token)
        .send()
        .await
        .expect(200);
    // Revoked through one instance, refused by the other (LISTEN/NOTIFY).
    pod_a
        .delete(&format!("/api/keys/{id}"))
        .token(&manager)
        .send()
        .await
        .expect(204);
    eventually("the other instance to refuse the revoked key", || async {
        pod_b
            .get("/api/external/skills")
            .token(&token)
            .send()
            .await
            .status
            == 401
    })
    .await;

    client::drop_schema(store.pool(), &schema).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_pods_on_one_redis_share_rate_limits() {
    use client::Reply;

    let Some(url) =
        keygate_test_support::services::redis_url("two_pods_on_one_redis_share_rate_limits")
    else {
        return;
    };
    // Fail, not skip, when the variable is set but the server is down.
    auth_ratelimit::RedisStore::connect(&url)
        .await
        .expect("REDIS_URL is set but Redis is unreachable");
    let backend = memory();
    let options = pod::Options {
        requests_per_hour: 3,
        limits: support::limits::SharedLimits {
            redis: Some(url),
            ..support::limits::SharedLimits::new(&unique("keygate_test"))
        },
        ..pod::Options::default()
    };
    let a = start_pod(&backend, options.clone()).await;
    let b = start_pod(&backend, options).await;
    let token = issue(&backend, &pod::RULES, "alice", &["skills.invoke"]).await;

    let replies: [Reply; 3] = [
        a.get("/api/me").token(&token).send().await,
        b.get("/api/me").token(&token).send().await,
        a.get("/api/me").token(&token).send().await,
    ];
    let remaining: Vec<Option<&str>> = replies
        .iter()
        .map(|r| r.expect(200).header("ratelimit-remaining"))
        .collect();
    assert_eq!(
        remaining,
        [Some("2"), Some("1"), Some("0")],
        "one budget across both instances"
    );
    let r = b.get("/api/me").token(&token).send().await;
    r.expect_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn server_websocket_is_closed_when_its_key_is_revoked() {
    let backend = memory();
    let (api, app) = start_server(&backend, server::Options::default()).await;
    let token = issue(&backend, &server::RULES, "alice", &[]).await;
    let mut ws = ws_connect(&api, Some(&token)).await.unwrap();
    ws.send(tungstenite::Message::text("before")).await.unwrap();
    assert!(
        matches!(ws.next().await.unwrap().unwrap(), tungstenite::Message::Text(t) if t == "before")
    );

    let id: auth_core::KeyId = token[3..14].parse().unwrap();
    assert!(app.issuer.revoke(id).await.unwrap());
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("no close frame after revocation")
        .unwrap()
        .unwrap();
    match frame {
        tungstenite::Message::Close(Some(close)) => {
            assert_eq!(u16::from(close.code), 1008);
            assert!(close.reason.contains("revoked"));
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// The settings pages of pod and portal: served outside authentication
/// (the page sends the key itself), their key API for key holders only,
/// administrators only in the portal.
#[tokio::test]
async fn pod_and_portal_serve_the_settings_page_and_its_api() {
    let backend = memory();
    let api = start_portal(&backend).await;
    let page = api.get(portal::SETTINGS).send().await;
    page.expect(200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .text
        .contains(r#"data-api="/settings/api/api" data-bearer="1""#));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    let js = api.get("/settings/api/assets/app.js").send().await;
    js.expect(200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let pat = issue(&backend, &portal::RULES, "admin1", &[]).await;
    let keys = api.get("/settings/api/api").token(&pat).send().await;
    keys.expect(200);
    assert_eq!(keys.json["keys"].as_array().unwrap().len(), 1);
    api.get("/settings/api/api")
        .send()
        .await
        .expect_error(401, "unauthorized");

    let pod_backend = memory();
    let pod_api = start_pod(&pod_backend, pod::Options::default()).await;
    pod_api.get(pod::SETTINGS).send().await.expect(200);
    let reader = issue(&pod_backend, &pod::RULES, "alice", &["read:entities"]).await;
    pod_api
        .get("/settings/api-keys/api")
        .token(&reader)
        .send()
        .await
        .expect_error(403, "forbidden");
    let manager = issue(&pod_backend, &pod::RULES, "alice", &["keys.manage"]).await;
    let options = pod_api
        .get("/settings/api-keys/api/options")
        .token(&manager)
        .send()
        .await;
    options.expect(200);
    assert_eq!(options.json["scopes"].as_array().unwrap().len(), 9);
    assert_eq!(
        options.json["scopes"][4]["description"],
        "List and invoke skills via /api/external/skills"
    );
}
