//! `Authorization` and `Sec-WebSocket-Protocol` credential parsing, through
//! a real `AuthLayer` over a store holding one key: never panics, never
//! answers anything but 401 (no token it did not issue gets in), and the
//! refusal body never echoes the credential.
#![no_main]

use std::{
    convert::Infallible,
    sync::{Arc, OnceLock},
};

use auth_core::{
    KeyIssuer, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix, Verifier,
};
use auth_tower::{AuthLayer, CredentialSource};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use tower::{service_fn, Layer, ServiceExt};

struct World {
    rt: tokio::runtime::Runtime,
    layer: AuthLayer,
    /// The bodies of a refusal without a credential and of a malformed one.
    fixed: [Bytes; 2],
}

fn answer(rt: &tokio::runtime::Runtime, layer: &AuthLayer, req: Request<()>) -> Response<Bytes> {
    let inner = service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Bytes::from_static(b"ok")))
    });
    rt.block_on(layer.layer(inner).oneshot(req)).unwrap()
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(MemoryKeyStore::new());
        let hasher = SecretHasher::for_tests();
        let issuer = KeyIssuer::new(store.clone(), hasher.clone(), TokenPrefix::new("st_").unwrap());
        // One real key exists, so valid ids and shapes are in play.
        rt.block_on(issuer.issue(NewKey::new(Principal::user("alice"), "k", ScopeSet::empty())))
            .unwrap();
        let verifier = Verifier::builder(store).hasher(hasher).build();
        let layer = AuthLayer::builder(verifier)
            .sources([
                CredentialSource::Bearer,
                CredentialSource::WebSocketProtocol,
                CredentialSource::header(HeaderName::from_static("x-api-key")),
                CredentialSource::query("api_key"),
            ])
            .build();
        let missing = answer(&rt, &layer, Request::get("/").body(()).unwrap());
        let malformed = Request::get("/")
            .header("authorization", "Bearer x")
            .body(())
            .unwrap();
        let malformed = answer(&rt, &layer, malformed);
        let fixed = [missing.into_body(), malformed.into_body()];
        World { rt, layer, fixed }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(2, |b| *b == 0xff);
    let first = parts.next().unwrap_or_default();
    let second = parts.next().unwrap_or_default();
    let mut req = Request::get("/");
    if selector & 1 != 0 {
        req = req
            .header("connection", "upgrade")
            .header("upgrade", "websocket");
    }
    let mut req = req.body(()).unwrap();
    let headers = req.headers_mut();
    let mut put = |name: &'static str, value: &[u8]| {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    };
    match selector >> 1 & 3 {
        0 => put("authorization", first),
        1 => put("sec-websocket-protocol", first),
        2 => {
            put("authorization", first);
            put("authorization", second);
        }
        _ => put("x-api-key", first),
    }
    if selector & 0x10 != 0 {
        put("sec-websocket-protocol", second);
    }
    if selector & 0x20 != 0 {
        if let Ok(q) = std::str::from_utf8(second) {
            if let Ok(uri) = format!("/?api_key={q}").parse() {
                *req.uri_mut() = uri;
            }
        }
    }
    let res = answer(&w.rt, &w.layer, req);
    assert_eq!(res.status(), 401, "a credential nobody issued was let through");
    let body = res.body();
    if w.fixed.contains(body) {
        return;
    }
    for secret in [first, second] {
        if secret.len() >= 8 {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret),
                "the refusal echoes the credential"
            );
        }
    }
});
