//! The demos' key routers over real HTTP: what each accepts is what its
//! stack enforces, `external_id` is never a key holder's to set, and a
//! key's own rate limit never loosens its tier.

use keygate_demo::{pod, server, support};

use crate::client;

use client::{issue, memory, Api};
use support::serve::spawn;

#[tokio::test]
async fn server_refuses_what_it_does_not_enforce_and_what_the_application_sets() {
    let backend = memory();
    let app = server::Server::new(&backend, &server::Options::default()).unwrap();
    let api = Api::at(spawn(app.router()).await);
    let admin = issue(&backend, &server::RULES, "alice", &["tokens:manage"]).await;
    for (body, code, field) in [
        // No per-key quota rule behind this server: the key's own limit
        // would not be applied.
        (
            r#"{"name":"ci","rate_limit":{"limit":5,"period_seconds":60}}"#,
            "policy_not_enforced",
            "rate_limit",
        ),
        (
            r#"{"name":"ci","external_id":"cust_other"}"#,
            "field_not_settable",
            "external_id",
        ),
        (
            r#"{"name":"ci","scopes":null}"#,
            "null_not_allowed",
            "scopes",
        ),
    ] {
        let r = api
            .post("/api/tokens")
            .token(&admin)
            .json(body)
            .send()
            .await;
        r.expect_error(422, code);
        assert!(r.message().contains(field), "{body}: {}", r.text);
    }
    // Nor by editing the calling key itself.
    let me = api.get("/api/me").token(&admin).send().await;
    let id = me.json["key_id"].as_str().unwrap().to_owned();
    let r = api
        .patch(&format!("/api/tokens/{id}"))
        .token(&admin)
        .json(r#"{"external_id":"cust_other"}"#)
        .send()
        .await;
    r.expect_error(422, "field_not_settable");
    let shown = api
        .get(&format!("/api/tokens/{id}"))
        .token(&admin)
        .send()
        .await;
    shown.expect(200);
    assert_eq!(shown.json["external_id"], serde_json::Value::Null);
    // Its limiter spends credits: it takes them, and spends them.
    let r = api
        .post("/api/tokens")
        .token(&admin)
        .json(r#"{"name":"metered","remaining":2}"#)
        .send()
        .await;
    r.expect(201);
    let metered = r.json["token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        api.get("/api/me").token(&metered).send().await.expect(200);
    }
    let r = api.get("/api/me").token(&metered).send().await;
    r.expect_error(429, "usage_exceeded");
}

#[tokio::test]
async fn pod_keys_own_rate_limit_never_loosens_the_tier() {
    let backend = memory();
    let api = Api::at(
        spawn(
            pod::Pod::new(&backend, &pod::Options::default())
                .unwrap()
                .router(),
        )
        .await,
    );
    let admin = issue(&backend, &pod::RULES, "alice", &["keys.manage"]).await;
    // Slower on average than the free tier's 100 an hour, but 5000 at once.
    let r = api
        .post("/api/keys")
        .token(&admin)
        .json(
            r#"{"name":"bursty","scopes":[],"rate_limit":{"limit":5000,"period_seconds":200000}}"#,
        )
        .send()
        .await;
    r.expect(201);
    let bursty = r.json["token"].as_str().unwrap().to_owned();
    let mut served = 0;
    for _ in 0..130 {
        let r = api.get("/api/me").token(&bursty).send().await;
        if r.status == 429 {
            r.expect_error(429, "rate_limited");
        } else {
            r.expect(200);
            served += 1;
        }
    }
    assert_eq!(served, 100, "the tier's burst, not the key's");
    // Pod spends credits: it takes them.
    let r = api
        .post("/api/keys")
        .token(&admin)
        .json(r#"{"name":"metered","scopes":[],"remaining":3}"#)
        .send()
        .await;
    r.expect(201);
}
