//! `keys update|disable|enable` on SQLite and PostgreSQL: the key router's
//! rules, table and JSON output, an audit event naming the operator for
//! every change, and each change reaching a running server at once.

mod support;

use auth_core::{RejectReason, SecretHasher, Verifier};
use keygate_test_support::eventually;
use support::Database;

async fn edits_reach_a_running_server(d: &Database) {
    let server = d.open().await;
    let verifier = Verifier::builder(server.clone())
        .hasher(SecretHasher::default())
        .build();

    let issued = d
        .run(&[
            "keys",
            "issue",
            "--user",
            "alice",
            "--scope",
            "nodes:read",
            "--scope",
            "nodes:write",
            "--expires",
            "30d",
            "--prefix",
            "st_",
            "--as",
            "ops",
        ])
        .ok();
    let token = issued.stdout.trim_end().to_owned();
    let id = auth_core::token::ParsedToken::parse(&token)
        .unwrap()
        .key_id()
        .to_string();
    let ctx = verifier.verify(&token).await.unwrap();
    assert!(ctx.scopes().has("nodes:write"));

    // update: narrowed, renamed, shorter, with a policy; JSON is the key
    // router's object.
    let updated = d
        .run(&[
            "--json",
            "keys",
            "update",
            &id,
            "--name",
            "narrowed",
            "--scope",
            "nodes:read",
            "--expires",
            "7d",
            "--ip-allow",
            "10.1.2.3/8",
            "--meta",
            r#"{"plan":"pro"}"#,
            "--external-id",
            "cust_42",
            "--remaining",
            "5",
            "--refill",
            "100/day",
            "--as",
            "ops",
        ])
        .ok()
        .json();
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["name"], "narrowed");
    assert_eq!(updated["scopes"], serde_json::json!(["nodes:read"]));
    assert_eq!(updated["ip_allowlist"], serde_json::json!(["10.0.0.0/8"]));
    assert_eq!(updated["meta"]["plan"], "pro");
    assert_eq!(updated["external_id"], "cust_42");
    assert_eq!(updated["credits"]["remaining"], 5);
    assert_eq!(updated["credits"]["refill"]["amount"], 100);
    let expires = time::OffsetDateTime::parse(
        updated["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires < time::OffsetDateTime::now_utc() + time::Duration::days(8));
    // The running server sees the narrower key on its next use.
    eventually("the running server to see the narrowed scopes", || async {
        verifier
            .verify(&token)
            .await
            .is_ok_and(|ctx| !ctx.scopes().has("nodes:write"))
    })
    .await;

    // The key router's rules: never wider, never later.
    let wider = d.run(&[
        "keys",
        "update",
        &id,
        "--scope",
        "nodes:write",
        "--as",
        "ops",
    ]);
    assert_eq!(wider.code, 2, "{}", wider.stderr);
    assert!(wider.stderr.contains("nodes:write"), "{}", wider.stderr);
    let later = d.run(&["keys", "update", &id, "--expires", "60d", "--as", "ops"]);
    assert_eq!(later.code, 2, "{}", later.stderr);
    let nothing = d.run(&["keys", "update", &id, "--as", "ops"]);
    assert_eq!(nothing.code, 2, "{}", nothing.stderr);
    let bad_meta = d.run(&["keys", "update", &id, "--meta", "[1]", "--as", "ops"]);
    assert_eq!(bad_meta.code, 2, "{}", bad_meta.stderr);

    // disable: refused by the running server at once; a table on stdout.
    let disabled = d.run(&["keys", "disable", &id, "--as", "ops"]).ok();
    assert!(disabled.stdout.contains("disabled"), "{}", disabled.stdout);
    eventually("the running server to refuse the disabled key", || async {
        verifier
            .verify(&token)
            .await
            .is_err_and(|e| e.reason() == RejectReason::Disabled)
    })
    .await;
    let again = d.run(&["keys", "disable", &id, "--as", "ops"]);
    assert_eq!(again.code, 4, "{}", again.stderr);

    // enable: what an API key may not do, the operator may. The operator
    // defaults to the OS user.
    let enabled = d
        .run_env(&["--json", "keys", "enable", &id], &[("USER", "carol")])
        .ok()
        .json();
    assert!(enabled["disabled_at"].is_null(), "{enabled}");
    eventually("the running server to accept the enabled key", || async {
        verifier.verify(&token).await.is_ok()
    })
    .await;

    // Every change is in the audit log, naming who made it.
    let events = d.run(&["--json", "audit", "--key", &id]).ok().json_lines();
    let changes: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["method"] == "CLI")
        .map(|e| (e["path"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    let path = |action: &str| format!("keys {action} {id}");
    assert_eq!(
        changes,
        [
            (path("update").as_str(), "ops"),
            (path("disable").as_str(), "ops"),
            (path("enable").as_str(), "carol"),
        ],
        "{events:?}"
    );
    let issue = d
        .run(&["--json", "audit", "--user", "ops"])
        .ok()
        .json_lines();
    assert!(
        issue
            .iter()
            .any(|e| e["path"] == "keys issue" && e["created_key"] == id.as_str()),
        "{issue:?}"
    );

    // A revoked key stays as it ended.
    d.run(&["keys", "revoke", &id, "--as", "ops"]).ok();
    let revoked = d.run(&["keys", "enable", &id, "--as", "ops"]);
    assert_eq!(revoked.code, 4, "{}", revoked.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_a_key_in_a_sqlite_file() {
    let d = Database::sqlite();
    edits_reach_a_running_server(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_a_key_in_postgres() {
    let Some(d) = Database::postgres("edits_a_key_in_postgres") else {
        return;
    };
    edits_reach_a_running_server(&d).await;
    d.drop_schema().await;
}
