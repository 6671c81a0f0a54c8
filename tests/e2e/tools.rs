//! The tools example served on 127.0.0.1:0 and exercised over
//! real HTTP: JWTs signed with per-user secrets, the envelope errors with
//! the tools API's messages, per-app access, regeneration (also by another
//! process on the same SQLite file), the command line and the master key.
#![cfg(all(feature = "jwt", feature = "sqlite"))]

use keygate_demo::support;

use keygate_demo::tools;

use crate::client;

use std::path::Path;

use auth_core::{
    jwt::{JwtAuthority, MasterKey, MemoryUserSecrets},
    SecretHasher,
};
use client::Api;
use keygate_test_support::eventually;
use serde_json::json;
use support::serve::spawn;
use tools::{
    cli::{self, Command, KeyArgs, UserArgs},
    master_key::{self, KeySource},
    store, Options, Tools,
};

const UNAUTHORIZED: &str = r#"{"success":false,"error":{"code":"UNAUTHORIZED","message":"Missing or invalid Authorization header"}}"#;
const FORBIDDEN: &str = r#"{"success":false,"error":{"code":"FORBIDDEN","message":"Token does not have access to this resource"}}"#;

/// A tools server on `db` with `master`, and its parts.
async fn start(db: &str, master: MasterKey, options: Options) -> (Api, Tools) {
    let opened = store::open(db, SecretHasher::for_tests()).await.unwrap();
    let app = Tools::new(&opened.backend, opened.secrets, master, &options).unwrap();
    (Api::at(spawn(app.router()).await), app)
}

async fn start_in_memory() -> (Api, Tools) {
    start("memory:", MasterKey::generate(), Options::default()).await
}

/// `POST /v1/tools/{app}/{tool}` with `body`, as `token` (if any).
async fn call(api: &Api, token: Option<&str>, path: &str, body: &str) -> client::Reply {
    let call = api.post(path).json(body);
    match token {
        Some(t) => call.token(t).send().await,
        None => call.send().await,
    }
}

#[track_caller]
fn assert_envelope(reply: &client::Reply, status: u16, code: &str) {
    reply.expect(status);
    assert_eq!(reply.json["success"], false, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], code, "{}", reply.text);
    assert!(
        !reply.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{}",
        reply.text
    );
}

/// base64url of `{"alg":"none","typ":"JWT"}`.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
/// base64url of `{"sub":"u2","iat":0,"iss":"syncello"}`.
const U2_CLAIMS: &str = "eyJzdWIiOiJ1MiIsImlhdCI6MCwiaXNzIjoic3luY2VsbG8ifQ";

#[tokio::test]
async fn a_users_token_calls_the_tools_of_its_apps_only() {
    let (api, app) = start_in_memory().await;
    let u1 = app.jwt.token_for("u1").await.unwrap();
    let u2 = app.jwt.token_for("u2").await.unwrap();

    let reply = call(
        &api,
        Some(&u1),
        "/v1/tools/tape/listApps",
        r#"{"workspace_id": 12345}"#,
    )
    .await;
    reply.expect(200);
    assert!(
        reply.text.starts_with(r#"{"success":true,"data":"#),
        "{}",
        reply.text
    );
    assert_eq!(reply.json["data"]["workspace_id"], 12345);
    assert!(reply.json["data"]["apps"].is_array());
    call(
        &api,
        Some(&u1),
        "/v1/tools/podio/listItems",
        r#"{"app_id": 7}"#,
    )
    .await
    .expect(200);
    call(&api, Some(&u2), "/v1/tools/sharefile/listFolders", "")
        .await
        .expect(200);

    // A valid token without access to the app: 403 in the tools API's words.
    for (token, path) in [
        (&u1, "/v1/tools/sharefile/listFolders"),
        (&u2, "/v1/tools/tape/listApps"),
        (&u2, "/v1/tools/podio/nonexistentTool"),
    ] {
        let reply = call(&api, Some(token), path, "{}").await;
        reply.expect(403);
        assert_eq!(reply.text, FORBIDDEN, "{path}");
    }

    let me = api.get("/api/me").token(&u1).send().await;
    me.expect(200);
    assert_eq!(me.json["user"], "u1");
    assert_eq!(me.json["credential"], "jwt");
    assert_eq!(me.json["scopes"], json!(["tools"]));
}

#[tokio::test]
async fn missing_or_bad_credentials_are_401_in_the_seed_envelope() {
    let (api, app) = start_in_memory().await;
    let good = app.jwt.token_for("u1").await.unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let alg_none = format!("{ALG_NONE_HEADER}.{}.", parts[1]);
    // u1's signature on claims naming u2.
    let forged_sub = format!("{}.{U2_CLAIMS}.{}", parts[0], parts[2]);
    // Signed by another service's secrets: unknown user here, or wrong issuer.
    let stranger = JwtAuthority::new(
        std::sync::Arc::new(MemoryUserSecrets::new()),
        MasterKey::generate(),
        "syncello",
    );
    let unknown_user = stranger.token_for("u9").await.unwrap();
    let foreign_issuer = JwtAuthority::new(
        std::sync::Arc::new(MemoryUserSecrets::new()),
        MasterKey::generate(),
        "evil",
    )
    .token_for("u1")
    .await
    .unwrap();

    let no_header = call(&api, None, "/v1/tools/tape/listApps", "{}").await;
    no_header.expect(401);
    assert_eq!(no_header.text, UNAUTHORIZED);
    assert_eq!(
        no_header.header("www-authenticate"),
        Some(r#"Bearer realm="syncello""#)
    );
    for header in [
        "Basic dTpw".to_owned(),
        "Bearer".to_owned(),
        format!("Bearer {good} extra"),
        format!("Bearer {alg_none}"),
        format!("Bearer {forged_sub}"),
        format!("Bearer {unknown_user}"),
        format!("Bearer {foreign_issuer}"),
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.".to_owned(),
        "Bearer st_not_a_key".to_owned(),
    ] {
        let reply = api
            .post("/v1/tools/tape/listApps")
            .header("authorization", &header)
            .json("{}")
            .send()
            .await;
        reply.expect(401);
        assert_eq!(reply.text, UNAUTHORIZED, "{header}");
    }
    // The good token still works: nothing above touched it.
    call(&api, Some(&good), "/v1/tools/tape/listApps", "{}")
        .await
        .expect(200);
}

#[tokio::test]
async fn bad_bodies_unknown_apps_and_limits_answer_in_the_envelope() {
    let options = Options {
        requests_per_hour: 5,
        ..Options::default()
    };
    let (api, app) = start("memory:", MasterKey::generate(), options).await;
    let u1 = app.jwt.token_for("u1").await.unwrap();
    let reply = call(&api, Some(&u1), "/v1/tools/nope/listApps", "{}").await;
    assert_envelope(&reply, 404, "NOT_FOUND");
    let reply = call(&api, Some(&u1), "/v1/tools/tape/nope", "{}").await;
    assert_envelope(&reply, 404, "NOT_FOUND");
    for body in ["[1, 2]", "not json", "\"text\""] {
        let reply = call(&api, Some(&u1), "/v1/tools/tape/listApps", body).await;
        assert_envelope(&reply, 400, "BAD_REQUEST");
    }
    // Those were the 5 calls per hour user u1 may make.
    let reply = call(&api, Some(&u1), "/v1/tools/tape/listApps", "{}").await;
    assert_envelope(&reply, 429, "RATE_LIMITED");
    assert!(reply.header("retry-after").is_some());
}

fn user_args(user: &str, db: &Path, key_file: &Path) -> UserArgs {
    match cli::try_parse([
        "tools",
        "regenerate",
        "--user",
        user,
        "--db",
        db.to_str().unwrap(),
        "--master-key-file",
        key_file.to_str().unwrap(),
    ])
    .unwrap()
    .command
    {
        Some(Command::Regenerate(args)) => args,
        other => panic!("{other:?}"),
    }
}

/// The token a command printed alone on stdout.
fn printed(out: Vec<u8>) -> String {
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {out:?}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_in_another_process_invalidates_old_tokens_in_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tools.db");
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, MasterKey::generate_base64()).unwrap();
    let master = master_key::load(None, Some(&key_file), Path::new("unused"), false)
        .unwrap()
        .0;
    let (api, _app) = start(db.to_str().unwrap(), master, Options::default()).await;

    // `token --user u1`, as a separate process would run it on the same file.
    let args = user_args("u1", &db, &key_file);
    let (mut out, mut log) = (Vec::new(), Vec::new());
    cli::token_command(&args, None, &mut out, &mut log)
        .await
        .unwrap();
    let old = printed(out);
    assert!(old.starts_with("eyJ"), "{old}");
    let other = {
        let mut out = Vec::new();
        cli::token_command(&user_args("u2", &db, &key_file), None, &mut out, &mut log)
            .await
            .unwrap();
        printed(out)
    };
    call(&api, Some(&old), "/v1/tools/tape/listApps", "{}")
        .await
        .expect(200);
    call(&api, Some(&other), "/v1/tools/sharefile/listFolders", "{}")
        .await
        .expect(200);

    let mut out = Vec::new();
    cli::regenerate_command(&args, None, &mut out, &mut log)
        .await
        .unwrap();
    let new = printed(out);
    assert_ne!(new, old);
    // The server had the old token cached; the regeneration reaches it
    // through the file's change log.
    eventually("the old token to be refused", || async {
        call(&api, Some(&old), "/v1/tools/tape/listApps", "{}")
            .await
            .status
            == 401
    })
    .await;
    call(&api, Some(&new), "/v1/tools/tape/listApps", "{}")
        .await
        .expect(200);
    call(&api, Some(&other), "/v1/tools/sharefile/listFolders", "{}")
        .await
        .expect(200);
    let log = String::from_utf8(log).unwrap();
    assert!(
        !log.contains(&old) && !log.contains(&new),
        "tokens only on stdout: {log}"
    );

    let mut out = Vec::new();
    let unknown = cli::token_command(
        &user_args("u9", &db, &key_file),
        None,
        &mut out,
        &mut Vec::new(),
    )
    .await;
    assert!(unknown.unwrap_err().contains("unknown user 'u9'"));
    assert!(out.is_empty());
}

#[test]
fn the_command_line_explains_itself_and_has_the_seed_defaults() {
    let help = match cli::try_parse(["tools", "--help"]) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.render().to_string(),
        other => panic!("--help did not print help: {other:?}"),
    };
    for needle in [
        "serve",
        "token",
        "regenerate",
        "--addr",
        "--db",
        "--redis",
        "--master-key-file",
        "KEYGATE_MASTER_KEY",
        "127.0.0.1:3002",
        "./data/tools.db",
        "/v1/tools/{app}/{tool}",
        "GET /api/me",
        "u1",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let parsed = cli::try_parse(["tools"]).unwrap();
    assert!(parsed.command.is_none());
    assert_eq!(parsed.serve.http.addr.to_string(), "127.0.0.1:3002");
    assert_eq!(parsed.serve.http.db.db, "./data/tools.db");
    assert!(parsed.serve.key.master_key_file.is_none());
    match cli::try_parse(["tools", "token", "--user", "u2"])
        .unwrap()
        .command
    {
        Some(Command::Token(UserArgs {
            user,
            db,
            key: KeyArgs { master_key_file },
        })) => {
            assert_eq!((user.as_str(), db.db.as_str()), ("u2", "./data/tools.db"));
            assert!(master_key_file.is_none());
        }
        other => panic!("{other:?}"),
    }
    let parsed = cli::try_parse([
        "tools",
        "serve",
        "--addr",
        "127.0.0.1:9",
        "--db",
        "postgres://db/x",
        "--redis",
        "redis://r/",
    ])
    .unwrap();
    match parsed.command {
        Some(Command::Serve(s)) => {
            assert_eq!(s.http.addr.to_string(), "127.0.0.1:9");
            assert_eq!(s.http.db.db, "postgres://db/x");
            assert_eq!(s.http.redis.as_deref(), Some("redis://r/"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        cli::try_parse(["tools", "token"]).is_err(),
        "--user is required"
    );
}

#[test]
fn the_master_key_comes_from_configuration_or_a_generated_demo_file() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("data/tools-master.key");
    let configured = MasterKey::generate_base64();

    let (_, source) = master_key::load(Some(configured.clone()), None, &default, true).unwrap();
    assert_eq!(source, KeySource::Env);
    assert!(!default.exists(), "nothing generated when configured");
    assert!(master_key::load(Some("c2hvcnQ=".into()), None, &default, true).is_err());
    let file = dir.path().join("configured.key");
    std::fs::write(&file, &configured).unwrap();
    assert!(
        master_key::load(Some(configured.clone()), Some(&file), &default, true).is_err(),
        "two places is ambiguous"
    );
    let (from_file, source) = master_key::load(None, Some(&file), &default, true).unwrap();
    assert_eq!(source, KeySource::File(file.clone()));
    assert!(master_key::load(None, Some(&dir.path().join("missing")), &default, true).is_err());

    // Zero set-up: generated once, then read back; never for PostgreSQL.
    assert!(master_key::load(None, None, &default, false).is_err());
    let (generated, source) = master_key::load(None, None, &default, true).unwrap();
    assert_eq!(source, KeySource::Generated(default.clone()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&default).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner may read the key");
    }
    let (again, source) = master_key::load(None, None, &default, true).unwrap();
    assert_eq!(source, KeySource::File(default.clone()));
    let sealed = generated.seal("u1", &[7; 32]);
    assert_eq!(*again.open("u1", &sealed).unwrap(), [7; 32], "the same key");
    assert!(from_file.open("u1", &sealed).is_err(), "a different key");
    assert!(master_key::generated_notice(&default).contains("Production must configure it"));
}

/// On first start the tools service creates its database readable by its
/// owner only (the users' sealed secrets and the audit log are in it), in a
/// new folder only its owner may enter.
#[cfg(unix)]
#[tokio::test]
async fn the_first_start_creates_a_private_database() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/tools.db");
    let (api, app) = start(
        db.to_str().unwrap(),
        MasterKey::generate(),
        Options::default(),
    )
    .await;
    let token = app.jwt.token_for("u1").await.unwrap();
    api.get("/api/me").token(&token).send().await.expect(200);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&dir.path().join("data")), 0o700);
}

/// A tools server with the account page behind sign-in, on `memory:`; u1's
/// password set.
async fn start_with_sign_in() -> (String, Tools) {
    use keygate_demo::support::signin::{Accounts, SignInOptions};
    let opened = store::open("memory:", SecretHasher::for_tests())
        .await
        .unwrap();
    let app = Tools::new(
        &opened.backend,
        opened.secrets,
        MasterKey::generate(),
        &Options::default(),
    )
    .unwrap();
    let options = SignInOptions {
        secure_cookies: false,
        ..SignInOptions::default()
    };
    let accounts = Accounts::open(
        tools::page::SITE,
        "memory:",
        opened.backend.audit.clone(),
        options,
    )
    .await
    .unwrap();
    accounts
        .set_password("u1", "u1's long password")
        .await
        .unwrap();
    let router = app.router_with_sign_in(&accounts).await.unwrap();
    (format!("http://{}", spawn(router).await), app)
}

/// A stolen token cannot lock its owner out: regeneration needs the
/// password sign-in (and a request from the site), not the JWT.
#[tokio::test]
async fn regeneration_needs_the_sign_in_not_just_the_token() {
    let (base, app) = start_with_sign_in().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let old = app.jwt.token_for("u1").await.unwrap();
    let me = |token: String| {
        let (http, url) = (http.clone(), format!("{base}/api/me"));
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let regenerate = format!("{base}/settings/account/regenerate");
    // The token alone: no route regenerates with it.
    for url in [format!("{base}/v1/me/token/regenerate"), regenerate.clone()] {
        let r = http
            .post(&url)
            .bearer_auth(&old)
            .header("origin", &base)
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success(), "{url}: {}", r.status());
    }
    assert_eq!(me(old.clone()).await, 200);
    // The page itself sends a browser without a session to sign in.
    let r = http
        .get(format!("{base}/settings/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/login");

    let r = http
        .post(format!("{base}/login"))
        .header("origin", &base)
        .form(&[("user", "u1"), ("password", "u1's long password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/settings/account");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let r = http
        .get(format!("{base}/settings/account/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["user"], "u1");
    // From another site (or naming none): refused.
    let r = http
        .post(&regenerate)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(me(old.clone()).await, 200);
    let r = http
        .post(&regenerate)
        .header("cookie", &cookie)
        .header("origin", &base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    let new = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["user"], "u1");
    assert_eq!(me(old).await, 401);
    assert_eq!(me(new).await, 200);
}
