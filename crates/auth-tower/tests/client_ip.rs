//! The client address the auth layer resolves once per request: the socket
//! peer, or what trusted proxies forwarded, in the audit log and in the
//! request extensions for the layers and handlers inside; and the per-key
//! IP allowlists checked against it.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use auth_core::{
    audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, client_ip::ClientIp,
    client_ip::IpNet, client_ip::TrustedProxies, policy::KeyPolicy, AuditEvent, KeyIssuer,
    MemoryKeyStore, NewKey, Principal, RejectReason, ScopeSet, Verifier,
};
use auth_tower::{AuthLayer, AuthLayerBuilder};
use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    routing::get,
    Router,
};
use http::{Extensions, HeaderMap};
use keygate_test_support::fixtures;
use tower::ServiceExt;

struct Fixture {
    issuer: KeyIssuer,
    verifier: Verifier,
    audit: Arc<MemoryAuditLog>,
}

impl Fixture {
    fn new() -> Self {
        let store = Arc::new(MemoryKeyStore::new());
        Self {
            issuer: fixtures::issuer(store.clone()),
            verifier: fixtures::verifier(store),
            audit: Arc::new(MemoryAuditLog::new(100)),
        }
    }

    async fn token(&self) -> String {
        self.token_for(&[]).await
    }

    /// A key usable only from `allowlist` (empty: from anywhere).
    async fn token_for(&self, allowlist: &[&str]) -> String {
        let policy = KeyPolicy::default().ip_allowlist(
            allowlist
                .iter()
                .map(|n| n.parse::<IpNet>().unwrap())
                .collect(),
        );
        let issued = self
            .issuer
            .issue(NewKey::new(Principal::user("alice"), "test", ScopeSet::empty()).policy(policy))
            .await
            .unwrap();
        issued.token.expose_secret().to_owned()
    }

    fn layer(&self) -> AuthLayerBuilder {
        AuthLayer::builder(self.verifier.clone())
            .audit(self.audit.clone())
            .client_ip(peer)
    }

    async fn events(&self) -> Vec<AuditEvent> {
        let page = self
            .audit
            .query(&AuditQuery::default().limit(100))
            .await
            .unwrap();
        page.events
    }
}

fn peer(_: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Answers with the `ClientIp` the handler sees.
fn app(layer: AuthLayer) -> Router {
    Router::new()
        .route(
            "/ip",
            get(|req: Request| async move {
                ClientIp::of(req.extensions()).map_or("none".to_owned(), |ip| ip.to_string())
            }),
        )
        .layer(layer)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A request from socket peer `from`, with these headers.
fn request(from: &str, headers: &[(&str, &str)]) -> Request {
    let mut b = http::Request::get("/ip");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip(from), 40_000)));
    req
}

/// Status and body text.
async fn send(app: Router, req: Request) -> (u16, String) {
    let res = app
        .oneshot(req)
        .await
        .unwrap_or_else(|e: Infallible| match e {});
    let status = res.status().as_u16();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_audit_log_names_the_client_behind_trusted_proxies() {
    let f = Fixture::new();
    let token = f.token().await;
    let bearer = format!("Bearer {token}");
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    let app = app(f.layer().trusted_proxies(proxies).build());

    // A chain through two trusted proxies: the first untrusted hop from the right.
    let (status, seen) = send(
        app.clone(),
        request(
            "10.0.0.1",
            &[
                ("authorization", &bearer),
                ("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2"),
            ],
        ),
    )
    .await;
    assert_eq!((status, seen.as_str()), (200, "203.0.113.9"));
    // A refusal names the client too.
    let (status, _) = send(
        app.clone(),
        request(
            "10.0.0.1",
            &[
                ("authorization", "Bearer nope"),
                ("x-forwarded-for", "198.51.100.4"),
            ],
        ),
    )
    .await;
    assert_eq!(status, 401);

    let ips: Vec<_> = f.events().await.iter().map(|e| e.client_ip).collect();
    assert_eq!(ips.len(), 2);
    assert!(ips.contains(&Some(ip("203.0.113.9"))), "{ips:?}");
    assert!(ips.contains(&Some(ip("198.51.100.4"))), "{ips:?}");
}

#[tokio::test]
async fn a_spoofed_forwarded_header_from_an_untrusted_peer_is_ignored() {
    let f = Fixture::new();
    let token = f.token().await;
    let bearer = format!("Bearer {token}");
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    let app = app(f.layer().trusted_proxies(proxies).build());

    let (status, seen) = send(
        app,
        request(
            "198.51.100.7",
            &[
                ("authorization", &bearer),
                ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
            ],
        ),
    )
    .await;
    assert_eq!((status, seen.as_str()), (200, "198.51.100.7"));
    let events = f.events().await;
    assert_eq!(events[0].client_ip, Some(ip("198.51.100.7")));
}

#[tokio::test]
async fn without_trusted_proxies_the_peer_is_the_client() {
    let f = Fixture::new();
    let token = f.token().await;
    let bearer = format!("Bearer {token}");
    let app = app(f.layer().build());

    let (_, seen) = send(
        app,
        request(
            "10.0.0.1",
            &[
                ("authorization", &bearer),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        ),
    )
    .await;
    assert_eq!(seen, "10.0.0.1");
    assert_eq!(f.events().await[0].client_ip, Some(ip("10.0.0.1")));
}

#[tokio::test]
async fn an_address_resolved_by_an_outer_layer_is_used_as_is() {
    let f = Fixture::new();
    let token = f.token().await;
    let bearer = format!("Bearer {token}");
    // No peer function: only the outer layer's answer is known.
    let app = app(AuthLayer::builder(f.verifier.clone())
        .audit(f.audit.clone())
        .build());

    let mut req = request("10.0.0.1", &[("authorization", &bearer)]);
    req.extensions_mut().insert(ClientIp(ip("2001:db8::7")));
    let (_, seen) = send(app.clone(), req).await;
    assert_eq!(seen, "2001:db8::7");
    assert_eq!(f.events().await[0].client_ip, Some(ip("2001:db8::7")));

    // And with neither, there is no address at all.
    let (_, seen) = send(app, request("10.0.0.1", &[("authorization", &bearer)])).await;
    assert_eq!(seen, "none");
}

// ---------------------------------------------------------------- allowlists

/// The status and `error` code of a request with `token` from `from`, sent
/// twice (the first verification runs on the slow path, the second on the
/// cached one: both must agree).
async fn twice(app: &Router, token: &str, from: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    let mut all = vec![("authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    let first = send(app.clone(), request(from, &all)).await;
    let second = send(app.clone(), request(from, &all)).await;
    assert_eq!(first, second, "the cached path agrees with the cold one");
    let code = serde_json::from_str::<serde_json::Value>(&first.1)
        .map(|v| v["error"].as_str().unwrap_or_default().to_owned())
        .unwrap_or(first.1);
    (first.0, code)
}

#[tokio::test]
async fn a_key_works_only_from_its_allowlist() {
    let f = Fixture::new();
    let token = f.token_for(&["203.0.113.0/24", "2001:db8::/32"]).await;
    let app = app(f.layer().build());

    assert_eq!(
        twice(&app, &token, "203.0.113.9", &[]).await,
        (200, "203.0.113.9".into())
    );
    assert_eq!(
        twice(&app, &token, "2001:db8:5::1", &[]).await,
        (200, "2001:db8:5::1".into())
    );
    // An IPv4 client on a dual-stack socket shows up as mapped IPv6.
    assert_eq!(
        twice(&app, &token, "::ffff:203.0.113.10", &[]).await,
        (200, "203.0.113.10".into())
    );
    for outside in ["198.51.100.1", "2001:db9::1", "::ffff:198.51.100.1"] {
        assert_eq!(
            twice(&app, &token, outside, &[]).await,
            (403, "ip_not_allowed".into()),
            "{outside}"
        );
    }
    // A key without an allowlist is unaffected.
    let open = f.token().await;
    assert_eq!(twice(&app, &open, "198.51.100.1", &[]).await.0, 200);

    let refused: Vec<_> = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.is_some())
        .collect();
    assert_eq!(refused.len(), 6);
    assert!(refused
        .iter()
        .all(|e| e.reason == Some(RejectReason::IpNotAllowed)
            && e.status == Some(403)
            && e.actor.as_deref() == Some("alice")));
    assert_eq!(RejectReason::IpNotAllowed.as_str(), "ip_not_allowed");
}

#[tokio::test]
async fn a_spoofed_forwarded_header_cannot_bypass_the_allowlist() {
    let f = Fixture::new();
    let token = f.token_for(&["203.0.113.0/24"]).await;
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    let app = app(f.layer().trusted_proxies(proxies).build());

    // From an untrusted peer, the header is the attacker's own words.
    let spoof = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(
        twice(&app, &token, "198.51.100.1", &spoof).await,
        (403, "ip_not_allowed".into())
    );
    // Through the trusted proxy, the client it names is checked...
    assert_eq!(
        twice(&app, &token, "10.0.0.1", &spoof).await,
        (200, "203.0.113.9".into())
    );
    // ...and what the client wrote to the left of it is not.
    let chained = [("x-forwarded-for", "203.0.113.9, 198.51.100.1")];
    assert_eq!(
        twice(&app, &token, "10.0.0.1", &chained).await,
        (403, "ip_not_allowed".into())
    );
    // The proxy's own address is not the client's.
    let open_net = f.token_for(&["10.0.0.0/8"]).await;
    assert_eq!(
        twice(
            &app,
            &open_net,
            "10.0.0.1",
            &[("x-forwarded-for", "198.51.100.1")]
        )
        .await,
        (403, "ip_not_allowed".into())
    );
}

#[tokio::test]
async fn without_a_client_address_an_allowlisted_key_is_refused() {
    let f = Fixture::new();
    let token = f.token_for(&["0.0.0.0/0", "::/0"]).await;
    // No peer function: the layer cannot know the address, so it fails closed.
    let app = app(AuthLayer::builder(f.verifier.clone()).build());
    assert_eq!(
        twice(&app, &token, "203.0.113.9", &[]).await,
        (403, "ip_not_allowed".into())
    );
}

#[tokio::test]
async fn a_websocket_upgrade_is_checked_against_the_allowlist() {
    let f = Fixture::new();
    let token = f.token_for(&["203.0.113.0/24"]).await;
    let app = app(f.layer().build());
    let protocol = format!("Bearer, {token}");
    let upgrade = |from: &str| {
        request(
            from,
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-protocol", &protocol),
            ],
        )
    };
    let (status, body) = send(app.clone(), upgrade("198.51.100.1")).await;
    assert_eq!(status, 403);
    assert!(body.contains("ip_not_allowed"), "{body}");
    // From inside the allowlist the layer lets the handshake through.
    assert_eq!(send(app, upgrade("203.0.113.1")).await.0, 200);
}

#[tokio::test]
async fn non_ascii_forwarding_garbage_does_not_make_the_proxy_the_client() {
    let f = Fixture::new();
    let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    let app = app(f.layer().trusted_proxies(proxies).build());
    // A key meant for internal callers only: the proxy's own range.
    let internal = f.token_for(&["10.0.0.0/8"]).await;
    let open = f.token().await;
    // What nginx's `$proxy_add_x_forwarded_for` forwards when the client
    // sent `X-Forwarded-For: \x80` (the raw bytes, kept on one line).
    let send_raw = |token: &str, xff: &'static [u8]| {
        let mut req = request("10.0.0.1", &[]);
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req.headers_mut().insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(xff).unwrap(),
        );
        send(app.clone(), req)
    };
    // The real client, appended by the proxy, is still found...
    assert_eq!(
        send_raw(&open, b"\x80, 198.51.100.1").await,
        (200, "198.51.100.1".into())
    );
    let (status, body) = send_raw(&internal, b"\x80, 198.51.100.1").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ip_not_allowed"), "{body}");
    // ...and a hop that cannot be read is never the proxy's address.
    assert_eq!(send_raw(&open, b"\x80").await, (200, "0.0.0.0".into()));
    let (status, body) = send_raw(&internal, b"\x80").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ip_not_allowed"), "{body}");
}
