//! The service-wide maximum key lifetime of the key router: creations
//! without an expiry or beyond the limit are refused (not clamped);
//! rotations keep the old expiry, brought within the limit.

use std::{sync::Arc, time::Duration};

use auth_axum::{keys_router, Auth, KeyManager, RequireScopeLayer};
use auth_core::{
    audit::AuditLog, audit::MemoryAuditLog, clock::FakeClock, KeyIssuer, Keys, MemoryKeyStore,
    NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix,
};
use auth_tower::AuthLayer;
use axum::{body::Body, http::Request, Router};
use http_body_util::BodyExt;
use serde_json::Value;
use time::{format_description::well_known::Rfc3339, macros::datetime, OffsetDateTime};
use tower::ServiceExt;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);
const MAX: Duration = Duration::from_secs(90 * 86_400);

struct Fixture {
    app: Router,
    issuer: KeyIssuer,
    admin: String,
}

async fn fixture() -> Fixture {
    let clock = Arc::new(FakeClock::new(NOW));
    let store = Arc::new(MemoryKeyStore::new());
    let Keys {
        issuer, verifier, ..
    } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
        .hasher(SecretHasher::for_tests())
        .clock(clock)
        .build();
    let audit = Arc::new(MemoryAuditLog::default());
    let manager =
        KeyManager::new(issuer.clone(), audit.clone() as Arc<dyn AuditLog>).max_key_lifetime(MAX);
    let app = Router::new()
        .nest(
            "/api/tokens",
            keys_router::<Auth, _>(manager).route_layer(RequireScopeLayer::one("tokens:manage")),
        )
        .layer(AuthLayer::builder(verifier).audit(audit).build());
    // Made before the limit existed: no expiry.
    let admin = issuer
        .issue(NewKey::new(
            Principal::user("ana"),
            "admin",
            ScopeSet::parse(["read", "tokens:manage"]).unwrap(),
        ))
        .await
        .unwrap();
    Fixture {
        app,
        issuer,
        admin: admin.token.expose_secret().to_owned(),
    }
}

impl Fixture {
    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let req = Request::post(path)
            .header("authorization", format!("Bearer {}", self.admin))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn creations_beyond_the_maximum_lifetime_are_refused_not_clamped() {
    let f = fixture().await;
    let latest = rfc3339(NOW + MAX);

    let (status, body) = f.post("/api/tokens", r#"{"name":"forever"}"#).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "expiry_required");
    assert!(
        body["message"].as_str().unwrap().contains(&latest),
        "{body}"
    );

    let too_late = rfc3339(NOW + MAX + time::Duration::seconds(1));
    let (status, body) = f
        .post(
            "/api/tokens",
            &format!(r#"{{"name":"long","expires_at":"{too_late}"}}"#),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "lifetime_exceeded");
    assert!(
        body["message"].as_str().unwrap().contains(&latest),
        "{body}"
    );
    assert_eq!(
        f.issuer.list("ana").await.unwrap().len(),
        1,
        "nothing created"
    );

    // Exactly at the limit is allowed, and kept as asked.
    let (status, body) = f
        .post(
            "/api/tokens",
            &format!(r#"{{"name":"quarter","expires_at":"{latest}"}}"#),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_at"], latest.as_str());
}

#[tokio::test]
async fn rotation_keeps_the_old_expiry_within_the_maximum_lifetime() {
    let f = fixture().await;
    // A key made before the limit, without expiry: its replacement gets the limit.
    let old = f
        .issuer
        .issue(NewKey::new(
            Principal::user("ana"),
            "legacy",
            ScopeSet::parse(["read"]).unwrap(),
        ))
        .await
        .unwrap();
    let (status, body) = f
        .post(&format!("/api/tokens/{}/rotate", old.record.id), "")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_at"], rfc3339(NOW + MAX).as_str());

    // A key ending sooner keeps its own expiry.
    let soon = NOW + time::Duration::days(10);
    let short = f
        .issuer
        .issue(
            NewKey::new(
                Principal::user("ana"),
                "short",
                ScopeSet::parse(["read"]).unwrap(),
            )
            .expires_at(soon),
        )
        .await
        .unwrap();
    let (status, body) = f
        .post(&format!("/api/tokens/{}/rotate", short.record.id), "")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_at"], rfc3339(soon).as_str());
}
