//! Per-request cost of `AuthLayer` in process, against a bare axum router and
//! tower-http's `ValidateRequestHeaderLayer::bearer` (a constant-token check).
//!
//! `cargo bench -p auth-tower --bench layer -- --warm-up-time 1 --measurement-time 3`
//!
//! With `KEYGATE_BENCH_METRICS=prometheus` a Prometheus recorder is installed
//! first, so the figures include recording every metric (without a
//! recorder, each metric call is a no-op).

use std::sync::Arc;

use auth_core::{
    audit::MemoryAuditLog, KeyIssuer, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher,
    TokenPrefix, Verifier,
};
use auth_tower::AuthLayer;
use axum::{body::Body, http::Request, routing::get, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use tower::ServiceExt;

fn bench(c: &mut Criterion) {
    if std::env::var("KEYGATE_BENCH_METRICS").as_deref() == Ok("prometheus") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the Prometheus recorder");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (verifier, token) = rt.block_on(async {
        let store = Arc::new(MemoryKeyStore::new());
        let hasher = SecretHasher::for_tests();
        let issuer = KeyIssuer::new(
            store.clone(),
            hasher.clone(),
            TokenPrefix::new("st_").unwrap(),
        );
        let verifier = Verifier::builder(store).hasher(hasher).build();
        let key = issuer
            .issue(NewKey::new(
                Principal::user("alice"),
                "bench",
                ScopeSet::parse(["read"]).unwrap(),
            ))
            .await
            .unwrap();
        let token = key.token.expose_secret().to_owned();
        verifier.verify(&token).await.unwrap(); // the key is now cached
        (verifier, token)
    });
    let authorization = format!("Bearer {token}");
    let router = || Router::new().route("/", get(|| async { "ok" }));

    #[allow(deprecated)]
    // tower-http 0.6.7 deprecated it as "too basic"; it is the peer users compare with.
    let bearer = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(&token);
    let variants = [
        ("bare router", router()),
        // What any layer costs in a Router (axum boxes each layer's service and future).
        (
            "no-op layer",
            router().layer(tower::util::MapRequestLayer::new(|r: Request<Body>| r)),
        ),
        ("tower-http bearer", router().layer(bearer)),
        (
            "AuthLayer, cached key",
            router().layer(AuthLayer::new(verifier.clone())),
        ),
        (
            "AuthLayer, cached key, audit sink",
            router().layer(
                AuthLayer::builder(verifier.clone())
                    .audit(Arc::new(MemoryAuditLog::default()))
                    .build(),
            ),
        ),
    ];

    let mut group = c.benchmark_group("per request");
    for (name, app) in variants {
        // Sanity: every variant lets the request through.
        let req = Request::get("/")
            .header("authorization", &authorization)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            rt.block_on(app.clone().oneshot(req)).unwrap().status(),
            200,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let req = Request::get("/")
                    .header("authorization", &authorization)
                    .body(Body::empty())
                    .unwrap();
                app.clone().oneshot(req)
            })
        });
    }
    // The verifier alone, to tell its cost from the layer's own.
    group.bench_function("Verifier::verify alone, cached key", |b| {
        b.to_async(&rt).iter(|| verifier.verify(&token))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
