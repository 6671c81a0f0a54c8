//! The key's last-used address, through the auth layer, stored in SQLite:
//! the client the trusted proxies name, batched like `last_used_at`, shown
//! in listings, and never an address the allowlist refused.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use auth_core::{
    client_ip::TrustedProxies, policy::KeyPolicy, store::SqliteKeyStore, KeyId, KeyIssuer,
    KeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix, Verifier,
};
use auth_tower::AuthLayer;
use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
use tower::ServiceExt;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Status of `GET /` with `token`, from socket peer `peer` with this
/// `X-Forwarded-For`.
async fn status(app: &Router, token: &str, peer: &str, forwarded: &str) -> u16 {
    let mut req = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .header("x-forwarded-for", forwarded)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip(peer), 40_000)));
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

async fn last_used_ip(store: &SqliteKeyStore, verifier: &Verifier, id: KeyId) -> Option<IpAddr> {
    verifier.flush_usage().await;
    store.get(id).await.unwrap().unwrap().last_used_ip
}

#[tokio::test]
async fn the_last_used_address_is_the_resolved_client_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteKeyStore::open(dir.path().join("keys.db"))
            .await
            .unwrap(),
    );
    let hasher = SecretHasher::for_tests();
    let issuer = KeyIssuer::new(
        store.clone(),
        hasher.clone(),
        TokenPrefix::new("st_").unwrap(),
    );
    let verifier = Verifier::builder(store.clone())
        .hasher(hasher)
        // Every use is reported, so each request below is visible.
        .last_used_interval(Duration::ZERO)
        .build();
    let policy = KeyPolicy::default().ip_allowlist(vec!["203.0.113.0/24".parse().unwrap()]);
    let issued = issuer
        .issue(NewKey::new(Principal::user("alice"), "ci", ScopeSet::empty()).policy(policy))
        .await
        .unwrap();
    let (token, id) = (issued.token.expose_secret().to_owned(), issued.record.id);
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        AuthLayer::builder(verifier.clone())
            .client_ip(auth_axum::connect_info_ip)
            .trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
            .build(),
    );
    assert_eq!(last_used_ip(&store, &verifier, id).await, None);

    // Through the load balancer: the client it names, not the balancer.
    assert_eq!(status(&app, &token, "10.0.0.1", "203.0.113.9").await, 200);
    assert_eq!(
        last_used_ip(&store, &verifier, id).await,
        Some(ip("203.0.113.9"))
    );
    let record = store.get(id).await.unwrap().unwrap();
    assert!(record.last_used_at.is_some());

    // A refused use (outside the allowlist) is not the last use.
    assert_eq!(
        status(&app, &token, "198.51.100.1", "203.0.113.50").await,
        403
    );
    assert_eq!(
        last_used_ip(&store, &verifier, id).await,
        Some(ip("203.0.113.9"))
    );

    // The next accepted use replaces it (the cached path records too).
    assert_eq!(status(&app, &token, "10.0.0.2", "203.0.113.10").await, 200);
    assert_eq!(
        last_used_ip(&store, &verifier, id).await,
        Some(ip("203.0.113.10"))
    );

    let listed = issuer.list("alice").await.unwrap();
    let json = serde_json::to_value(listed[0].metadata()).unwrap();
    assert_eq!(json["last_used_ip"], "203.0.113.10");
}
