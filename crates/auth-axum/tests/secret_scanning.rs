//! GitHub's secret-scanning partner route: signed reports revoke real
//! tokens; forged, re-targeted or unsigned reports revoke nothing.

use std::sync::Arc;

use auth_axum::SecretScanning;
use auth_core::{
    audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, IssuedKey, KeyIssuer,
    MemoryKeyStore, NewKey, Principal, RejectReason, ScopeSet, SecretHasher, TokenPrefix,
};
use axum::{body::Body, http::Request, Router};
use base64::Engine;
use http_body_util::BodyExt;
use keygate_test_support::stores::TestStore;
use p256::{
    ecdsa::{signature::Signer, Signature, SigningKey},
    pkcs8::{EncodePublicKey, LineEnding},
};
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY_A: &str = "a1b2c3";
const KEY_B: &str = "d4e5f6";

struct Setup {
    app: Router,
    issuer: KeyIssuer,
    audit: Arc<MemoryAuditLog>,
    signer_a: SigningKey,
    key: IssuedKey,
}

fn pem(key: &SigningKey) -> String {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

async fn setup() -> Setup {
    setup_with(|s| s).await
}

async fn setup_with(tune: impl FnOnce(SecretScanning) -> SecretScanning) -> Setup {
    let store = Arc::new(MemoryKeyStore::new());
    let issuer = KeyIssuer::new(
        store,
        SecretHasher::for_tests(),
        TokenPrefix::new("st_").unwrap(),
    );
    let audit = Arc::new(MemoryAuditLog::default());
    let signer_a = SigningKey::random(&mut rand::rngs::OsRng);
    let signer_b = SigningKey::random(&mut rand::rngs::OsRng);
    let scanning = SecretScanning::new(issuer.clone(), audit.clone())
        .public_key_pem(KEY_A, &pem(&signer_a))
        .unwrap()
        .public_key_pem(KEY_B, &pem(&signer_b))
        .unwrap();
    let app = Router::new().nest("/github/secret-scanning", tune(scanning).router());
    let key = issuer
        .issue(NewKey::new(
            Principal::user("ana"),
            "ci",
            ScopeSet::parse(["read"]).unwrap(),
        ))
        .await
        .unwrap();
    Setup {
        app,
        issuer,
        audit,
        signer_a,
        key,
    }
}

fn sign(key: &SigningKey, body: &[u8]) -> String {
    let sig: Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
}

fn report(key_id: Option<&str>, signature: Option<&str>, body: &str) -> Request<Body> {
    let mut req =
        Request::post("/github/secret-scanning").header("content-type", "application/json");
    if let Some(id) = key_id {
        req = req.header("Github-Public-Key-Identifier", id);
    }
    if let Some(sig) = signature {
        req = req.header("Github-Public-Key-Signature", sig);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> (u16, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn body_for(tokens: &[&str]) -> String {
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "token": t,
                "type": "keygate_api_token",
                "url": "https://github.com/octocat/hello/blob/abc/config.env",
                "source": "content"
            })
        })
        .collect();
    serde_json::to_string(&items).unwrap()
}

impl Setup {
    async fn revoked(&self) -> bool {
        self.issuer
            .get(self.key.record.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    }

    async fn leak_events(&self) -> usize {
        self.audit
            .query(&AuditQuery::default().limit(100))
            .await
            .unwrap()
            .events
            .iter()
            .filter(|e| e.reason == Some(RejectReason::Leaked))
            .count()
    }
}

#[tokio::test]
async fn a_signed_report_revokes_real_tokens_and_labels_each() {
    let s = setup().await;
    let real = s.key.token.expose_secret();
    // Our shape and a real key id, but a made-up secret and checksum.
    let mut fake = real.to_owned();
    fake.replace_range(20..24, "AAAA");
    let body = body_for(&[real, &fake, "ghp_somethingelse"]);
    let (status, answer) = send(
        &s.app,
        report(
            Some(KEY_A),
            Some(&sign(&s.signer_a, body.as_bytes())),
            &body,
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!([
            {"token_raw": real, "token_type": "keygate_api_token", "label": "true_positive"},
            {"token_raw": fake, "token_type": "keygate_api_token", "label": "false_positive"},
            {"token_raw": "ghp_somethingelse", "token_type": "keygate_api_token", "label": "false_positive"},
        ])
    );
    assert!(s.revoked().await);
    let events = s
        .audit
        .query(&AuditQuery::default().limit(10))
        .await
        .unwrap()
        .events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key_id, Some(s.key.record.id));
    assert_eq!(events[0].reason, Some(RejectReason::Leaked));
    assert_eq!(events[0].path, "/github/secret-scanning");
    assert_eq!(events[0].method, "POST");
}

#[tokio::test]
async fn a_forged_signature_revokes_nothing() {
    let s = setup().await;
    let body = body_for(&[s.key.token.expose_secret()]);
    let attacker = SigningKey::random(&mut rand::rngs::OsRng);
    let (status, answer) = send(
        &s.app,
        report(Some(KEY_A), Some(&sign(&attacker, body.as_bytes())), &body),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_signature");
    // Garbage in the signature header.
    let (status, answer) = send(&s.app, report(Some(KEY_A), Some("not base64!"), &body)).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_signature");
    assert!(!s.revoked().await);
    assert_eq!(s.leak_events().await, 0);
}

#[tokio::test]
async fn a_signature_over_another_body_revokes_nothing() {
    let s = setup().await;
    let harmless = body_for(&["ghp_nothing_of_ours"]);
    let signature = sign(&s.signer_a, harmless.as_bytes());
    let attack = body_for(&[s.key.token.expose_secret()]);
    let (status, answer) = send(&s.app, report(Some(KEY_A), Some(&signature), &attack)).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_signature");
    assert!(!s.revoked().await);
}

#[tokio::test]
async fn a_replay_under_another_key_id_revokes_nothing() {
    let s = setup().await;
    let body = body_for(&[s.key.token.expose_secret()]);
    let signature = sign(&s.signer_a, body.as_bytes());
    // Signed by A, presented as B (also configured).
    let (status, answer) = send(&s.app, report(Some(KEY_B), Some(&signature), &body)).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_signature");
    // Presented under an identifier nobody configured.
    let (status, answer) = send(&s.app, report(Some("nope"), Some(&signature), &body)).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "unknown_public_key");
    assert!(!s.revoked().await);
    assert_eq!(s.leak_events().await, 0);
}

#[tokio::test]
async fn unsigned_reports_are_refused() {
    let s = setup().await;
    let body = body_for(&[s.key.token.expose_secret()]);
    let signature = sign(&s.signer_a, body.as_bytes());
    for req in [
        report(None, None, &body),
        report(Some(KEY_A), None, &body),
        report(None, Some(&signature), &body),
    ] {
        let (status, answer) = send(&s.app, req).await;
        assert_eq!(status, 401);
        assert_eq!(answer["error"], "missing_signature");
    }
    assert!(!s.revoked().await);
}

#[tokio::test]
async fn oversized_and_overfull_reports_are_refused() {
    let s = setup_with(|c| c.max_body_bytes(4096).max_tokens(3)).await;
    let big = body_for(&vec!["x".repeat(100).as_str(); 100]);
    assert!(big.len() > 4096);
    let (status, answer) = send(
        &s.app,
        report(Some(KEY_A), Some(&sign(&s.signer_a, big.as_bytes())), &big),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"], "payload_too_large");

    let real = s.key.token.expose_secret();
    let four = body_for(&[real, real, real, real]);
    let (status, answer) = send(
        &s.app,
        report(
            Some(KEY_A),
            Some(&sign(&s.signer_a, four.as_bytes())),
            &four,
        ),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"], "too_many_tokens");
    assert!(!s.revoked().await);

    let not_json = "token=abc";
    let (status, _) = send(
        &s.app,
        report(
            Some(KEY_A),
            Some(&sign(&s.signer_a, not_json.as_bytes())),
            not_json,
        ),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_store_outage_is_503_and_labels_nothing() {
    let store = TestStore::memory();
    store.set_reads_down(true);
    let issuer = KeyIssuer::new(
        store,
        SecretHasher::for_tests(),
        TokenPrefix::new("st_").unwrap(),
    );
    let signer = SigningKey::random(&mut rand::rngs::OsRng);
    let app = Router::new().nest(
        "/github/secret-scanning",
        SecretScanning::new(issuer.clone(), Arc::new(MemoryAuditLog::default()))
            .public_key_pem(KEY_A, &pem(&signer))
            .unwrap()
            .router(),
    );
    let key = issuer
        .issue(NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty()))
        .await
        .unwrap();
    let body = body_for(&[key.token.expose_secret()]);
    let (status, answer) = send(
        &app,
        report(Some(KEY_A), Some(&sign(&signer, body.as_bytes())), &body),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(answer["error"], "unavailable");
    assert!(!answer.to_string().contains("db.internal"), "{answer}");
}

#[tokio::test]
async fn a_token_repeated_in_one_report_is_verified_once_and_labelled_each_time() {
    let s = setup().await;
    let real = s.key.token.expose_secret();
    let runs = s.issuer.hasher().runs();
    let body = body_for(&[real, real, "ghp_other", real, "ghp_other"]);
    let sig = sign(&s.signer_a, body.as_bytes());
    let (status, answer) = send(&s.app, report(Some(KEY_A), Some(&sig), &body)).await;
    assert_eq!(status, 200, "{answer}");
    let labels: Vec<&str> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "true_positive",
            "true_positive",
            "false_positive",
            "true_positive",
            "false_positive"
        ]
    );
    assert_eq!(s.issuer.hasher().runs(), runs + 1, "one argon2 run");
    assert_eq!(s.leak_events().await, 1, "one audit event");

    // The same signed report replayed: the key is already revoked, so the
    // secret check answers without argon2.
    let runs = s.issuer.hasher().runs();
    let revoked_at = s
        .issuer
        .get(s.key.record.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at;
    for _ in 0..3 {
        let (status, _) = send(&s.app, report(Some(KEY_A), Some(&sig), &body)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(s.issuer.hasher().runs(), runs);
    // Replays leave no trace: no fresh audit event, the revocation unchanged.
    assert_eq!(s.leak_events().await, 1, "a replay writes nothing");
    let record = s.issuer.get(s.key.record.id).await.unwrap().unwrap();
    assert_eq!(record.revoked_at, revoked_at);
}

/// An unauthenticated sender cannot make the route read much or verify a
/// signature over anything but a JSON array: the default body limit is
/// small, and the cheap checks answer before the signature is verified (a
/// bad signature over a non-report is refused as a non-report).
#[tokio::test]
async fn cheap_checks_come_before_the_signature() {
    let s = setup().await;
    // Over the default limit (256 KiB), though far under 1 MiB.
    let big = format!("[{}]", " ".repeat(300 << 10));
    let (status, answer) = send(
        &s.app,
        report(Some(KEY_A), Some(&sign(&s.signer_a, b"x")), &big),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    // Not an array, with a signature that does not verify: 400, not 401.
    let forged = sign(&s.signer_a, b"something else");
    for body in [r#"{"token":"x"}"#, "null", "garbage"] {
        let (status, answer) = send(&s.app, report(Some(KEY_A), Some(&forged), body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request");
    }
    // A body declared as something else than JSON.
    let body = body_for(&[s.key.token.expose_secret()]);
    let mut req = report(
        Some(KEY_A),
        Some(&sign(&s.signer_a, body.as_bytes())),
        &body,
    );
    req.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let (status, _) = send(&s.app, req).await;
    assert_eq!(status, 400);
    assert!(!s.revoked().await);
    // The same array, signed: a bad signature is 401.
    let (status, answer) = send(&s.app, report(Some(KEY_A), Some(&forged), &body)).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_signature");
}

#[tokio::test]
async fn the_audit_names_the_resolved_client_not_the_proxy() {
    let s = setup().await;
    let real = s.key.token.expose_secret();
    let body = body_for(&[real]);
    let mut req = report(
        Some(KEY_A),
        Some(&sign(&s.signer_a, body.as_bytes())),
        &body,
    );
    // The proxy is the socket peer; an outer layer resolved the client.
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [10, 0, 0, 1],
            40_000,
        ))));
    let client: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    req.extensions_mut()
        .insert(auth_core::client_ip::ClientIp(client));
    let (status, _) = send(&s.app, req).await;
    assert_eq!(status, 200);
    let events = s
        .audit
        .query(&AuditQuery::default().limit(10))
        .await
        .unwrap()
        .events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].client_ip, Some(client));
}
