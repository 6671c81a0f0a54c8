//! The `keygate` binary, run as a process against a SQLite file and against
//! the real PostgreSQL (`DATABASE_URL`; skipped with a message when unset,
//! failed when unset under `CI=true`).

use std::{
    path::Path,
    process::{Command, Output},
    sync::Arc,
};

use auth_core::{
    audit::AuditOutcome, store::SqliteKeyStore, AuditEvent, KeyStore, RejectReason, SecretHasher,
    Verifier,
};
use keygate_test_support::{eventually, services::database_url};
use serde_json::Value;
use time::OffsetDateTime;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }
}

fn keygate(db: &str, args: &[&str]) -> Run {
    keygate_env(db, args, &[])
}

fn keygate_env(db: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("KEYGATE_PG_SCHEMA")
        .env_remove("KEYGATE_PREFIX");
    if !db.is_empty() {
        cmd.args(["--db", db]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.args(args).output().expect("run keygate");
    Run {
        code: status.code().expect("exit code"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn event(at: OffsetDateTime, actor: &str, outcome: AuditOutcome) -> AuditEvent {
    let mut event = AuditEvent::new(at, outcome, http::Method::GET, "/api/me");
    event.actor = Some(actor.into());
    event.reason = (outcome == AuditOutcome::Failure).then_some(RejectReason::Revoked);
    event.status = Some(200);
    event
}

/// The key commands, end to end, on one database; `open` gives an
/// in-process store on the same database (a "running server").
async fn manage_keys(db: &str, extra: &[&str], server: Arc<dyn KeyStore>) {
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    };
    let run = |args: &[&str]| {
        let args = with(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        keygate(db, &args)
    };

    // issue: the token alone on stdout.
    let issued = run(&[
        "keys",
        "issue",
        "--user",
        "alice",
        "--scope",
        "nodes:read",
        "--name",
        "ci",
        "--expires",
        "30d",
        "--prefix",
        "st_",
    ])
    .ok();
    let token = issued.stdout.trim_end().to_owned();
    assert_eq!(issued.stdout, format!("{token}\n"));
    let parsed = auth_core::token::ParsedToken::parse(&token).expect("a well-formed token");
    assert_eq!(parsed.prefix(), "st_");
    let id = parsed.key_id().to_string();
    assert!(
        !issued.stderr.contains(&token),
        "the token is on stdout only"
    );

    // A running server accepts it.
    let verifier = Verifier::builder(server.clone())
        .hasher(SecretHasher::default())
        .build();
    let ctx = verifier
        .verify(&token)
        .await
        .expect("the issued token works");
    assert_eq!(ctx.effective_user(), "alice");

    // list --json: the key router's shape.
    let list = run(&["--json", "keys", "list", "--user", "alice"])
        .ok()
        .json();
    let keys = list["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["id"], id.as_str());
    assert_eq!(k["owner"], "alice");
    assert_eq!(k["name"], "ci");
    assert_eq!(k["scopes"], serde_json::json!(["nodes:read"]));
    assert!(k["expires_at"].is_string() && k["revoked_at"].is_null());
    assert!(k.get("hash").is_none());
    assert!(
        !list.to_string().contains(&token[10..]),
        "no secret in a listing"
    );

    // show: a table, and the same object as JSON.
    let shown = run(&["keys", "show", &id]).ok();
    assert!(shown.stdout.contains(&id) && shown.stdout.contains("active"));
    // The same object (the running server may have recorded a use since).
    let mut shown = run(&["keys", "show", &id, "--json"]).ok().json();
    let mut listed = k.clone();
    shown["last_used_at"] = Value::Null;
    listed["last_used_at"] = Value::Null;
    assert_eq!(shown, listed);

    // rotate with a grace period: a new token; the old one is "rotating".
    let second = run(&["keys", "issue", "--user", "bob", "--prefix", "st_"]).ok();
    let second_id = auth_core::token::ParsedToken::parse(second.stdout.trim_end())
        .unwrap()
        .key_id()
        .to_string();
    let rotated = run(&["--json", "keys", "rotate", &second_id, "--grace", "1h"])
        .ok()
        .json();
    assert_eq!(rotated["rotated_from"], second_id.as_str());
    let new_token = rotated["token"].as_str().unwrap();
    assert!(new_token.starts_with("st_"), "the old key's prefix is kept");
    let active = run(&["--json", "keys", "list", "--state", "active"])
        .ok()
        .json();
    assert_eq!(active["keys"].as_array().unwrap().len(), 3);
    let table = run(&["keys", "list"]).ok().stdout;
    assert!(table.contains("rotating"), "{table}");

    // revoke: reaches the running server's cache.
    run(&["keys", "revoke", &id]).ok();
    eventually("the running server to refuse the revoked key", || async {
        verifier.verify(&token).await.is_err()
    })
    .await;
    let revoked = run(&["--json", "keys", "list", "--state", "revoked"])
        .ok()
        .json();
    let revoked = revoked["keys"].as_array().unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["id"], id.as_str());

    // Exit codes scripts rely on, and one-line errors.
    let again = run(&["keys", "revoke", &id]);
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert_eq!(again.stderr.lines().count(), 1);
    assert!(again.stderr.starts_with("error: "));
    let missing = run(&["keys", "show", "00000000000"]);
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    let bad = run(&["keys", "show", "not-an-id"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let bad_duration = run(&["keys", "issue", "--user", "x", "--expires", "soon"]);
    assert_eq!(bad_duration.code, 2, "{}", bad_duration.stderr);

    // Never-used keys created just now are not stale.
    let stale = run(&["--json", "keys", "list", "--last-used-before", "1d"])
        .ok()
        .json();
    assert!(stale["keys"].as_array().unwrap().is_empty());

    // stats: keys by state.
    let stats = run(&["--json", "stats", "--days", "2"]).ok().json();
    assert_eq!(stats["keys"]["total"], 3);
    assert_eq!(stats["keys"]["revoked"], 1);
    assert_eq!(stats["keys"]["rotating"], 1);
    assert_eq!(stats["days"].as_array().unwrap().len(), 2);
}

/// Audit, stats per day and purge, on events written through the store's
/// own audit log.
async fn audit_and_purge(db: &str, extra: &[&str], sink: Arc<dyn auth_core::audit::AuditLog>) {
    let now = OffsetDateTime::now_utc();
    sink.record(event(
        now - time::Duration::days(100),
        "carol",
        AuditOutcome::Success,
    ));
    sink.record(event(
        now - time::Duration::days(100),
        "carol",
        AuditOutcome::Success,
    ));
    sink.record(event(
        now - time::Duration::minutes(5),
        "carol",
        AuditOutcome::Failure,
    ));
    sink.record(event(
        now - time::Duration::minutes(4),
        "carol",
        AuditOutcome::Success,
    ));
    sink.record(event(
        now - time::Duration::minutes(3),
        "dave",
        AuditOutcome::Failure,
    ));
    sink.flush().await.unwrap();
    let run = |args: &[&str]| {
        let args: Vec<&str> = args.iter().chain(extra).copied().collect();
        keygate(db, &args)
    };

    let out = run(&["--json", "audit", "--user", "carol", "--since", "1h"]).ok();
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0]["at"].as_str() < lines[1]["at"].as_str(),
        "oldest first"
    );
    let refused = run(&["--json", "audit", "--outcome", "refused", "--since", "1h"]).ok();
    assert_eq!(refused.stdout.lines().count(), 2);
    assert!(refused.stdout.lines().all(|l| l.contains("\"failure\"")));
    let table = run(&["audit", "--user", "dave"]).ok().stdout;
    assert!(
        table.contains("refused") && table.contains("/api/me"),
        "{table}"
    );

    // Two days, so a run just after midnight UTC counts the same.
    let stats = run(&["--json", "stats", "--days", "2"]).ok().json();
    let days = stats["days"].as_array().unwrap();
    let sum = |field: &str| days.iter().map(|d| d[field].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("success"), sum("refused")), (1, 2));

    let purged = run(&["--json", "purge", "--audit-older-than", "90d"])
        .ok()
        .json();
    assert_eq!(purged["deleted"], 2);
    let all = run(&["--json", "audit", "--user", "carol"]).ok();
    assert_eq!(all.stdout.lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manages_keys_in_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let db = path.to_str().unwrap();

    // migrate on a new file applies everything, then nothing.
    let first = keygate(db, &["--json", "migrate"]).ok().json();
    let migrations = first["migrations"].as_array().unwrap();
    assert!(!migrations.is_empty());
    assert!(migrations.iter().all(|m| m["applied_now"] == true));
    let second = keygate(db, &["--json", "migrate"]).ok().json();
    assert!(second["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["applied_now"] == false));

    let server = Arc::new(SqliteKeyStore::open(&path).await.unwrap());
    let audit = Arc::new(server.audit_log());
    manage_keys(db, &[], server).await;
    audit_and_purge(db, &[], audit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manages_keys_in_postgres() {
    let Some(url) = database_url("manages_keys_in_postgres") else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("keygate_cli_{}_{nanos}", std::process::id());
    let first = keygate(&url, &["--json", "migrate", "--schema", &schema])
        .ok()
        .json();
    assert!(first["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["applied_now"] == true));

    let server = Arc::new(
        auth_core::store::PostgresKeyStore::connect_with_schema(&url, &schema)
            .await
            .expect("DATABASE_URL is set but PostgreSQL is unreachable"),
    );
    let audit = Arc::new(server.audit_log());
    manage_keys(&url, &["--schema", &schema], server.clone()).await;
    audit_and_purge(&url, &["--schema", &schema], audit).await;
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(server.pool())
        .await
        .unwrap();
}

#[test]
fn errors_are_one_line_with_documented_codes() {
    let none = keygate("", &["keys", "list"]);
    assert_eq!(none.code, 2);
    assert_eq!(
        none.stderr,
        "error: no database: pass --db PATH|URL or set DATABASE_URL\n"
    );
    let down = keygate(
        "postgres://nobody:hunter2@127.0.0.1:1/none",
        &["keys", "list"],
    );
    assert_eq!(down.code, 5, "{}", down.stderr);
    assert_eq!(down.stderr.lines().count(), 1);
    assert!(!down.stderr.contains("hunter2"), "{}", down.stderr);
    let help = keygate("", &["--help"]).ok().stdout;
    assert!(help.contains("Exit codes:"));
}

#[test]
fn scan_tells_tokens_from_look_alikes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, token) =
        auth_core::token::mint_token(&auth_core::TokenPrefix::new("sk_live_").unwrap());
    let token = token.expose_secret().to_owned();
    let mut fake = token.clone();
    let last = fake.pop().unwrap();
    fake.push(if last == '0' { '1' } else { '0' });
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("lookalike.env", &format!("EXAMPLE_KEY={fake}\n"));
    std::fs::create_dir(dir.path().join("src")).unwrap();
    write(
        "src/config.rs",
        &format!("// test\nconst KEY: &str = \"{token}\";\n"),
    );
    let dir_arg = dir.path().to_str().unwrap();

    let found = keygate("", &["--json", "scan", dir_arg]);
    assert_eq!(found.code, 1, "{}", found.stderr);
    assert!(
        !found.stdout.contains(&token),
        "the secret is never printed"
    );
    let findings = found.json()["findings"].as_array().unwrap().clone();
    assert_eq!(findings.len(), 2, "{findings:?}");
    let real = findings.iter().find(|f| f["kind"] == "token").unwrap();
    assert!(real["path"].as_str().unwrap().ends_with("config.rs"));
    assert_eq!(
        (real["line"].as_u64(), real["column"].as_u64()),
        (Some(2), Some(20))
    );
    assert!(findings.iter().any(|f| f["kind"] == "look_alike"));

    // Only a look-alike: reported, exit 0 (a pre-commit hook passes).
    let only_fake = keygate(
        "",
        &["scan", dir.path().join("lookalike.env").to_str().unwrap()],
    );
    assert_eq!(only_fake.code, 0, "{}", only_fake.stderr);
    assert!(only_fake.stdout.contains("look-alike"));
    // Another prefix asked for: nothing found.
    let other = keygate("", &["scan", "--prefix", "st_", dir_arg]).ok();
    assert!(other.stdout.is_empty());
    // A missing path is an I/O error.
    let missing = keygate(
        "",
        &[
            "scan",
            &Path::new(dir_arg).join("nope").display().to_string(),
        ],
    );
    assert_eq!(missing.code, 6);
}

#[test]
fn keys_issue_reads_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("env.db");
    let out = keygate_env(
        "",
        &["keys", "issue", "--user", "erin"],
        &[
            ("DATABASE_URL", db.to_str().unwrap()),
            ("KEYGATE_PREFIX", "kg_"),
        ],
    )
    .ok();
    assert!(out.stdout.starts_with("kg_"));
}
