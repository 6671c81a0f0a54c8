//! The key API's JSON bodies (create and rotate) on arbitrary bytes: never
//! panics, never answers 5xx, and only ever 201, 400, 403, 404, 409 or 422.
#![no_main]

use std::sync::{Arc, OnceLock};

use auth_axum::{keys_router, KeyManager, KeyOwner};
use auth_core::{
    KeyIssuer, audit::MemoryAuditLog, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher,
    TokenPrefix,
};
use axum::{body::Body, extract::FromRequestParts, http::request::Parts, Router};
use http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// A session owner: always `alice`, who may grant `read` and `write`.
struct Alice(Principal, ScopeSet);

impl<S: Send + Sync> FromRequestParts<S> for Alice {
    type Rejection = StatusCode;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        Ok(Self(
            Principal::user("alice"),
            ScopeSet::parse(["read", "write"]).unwrap(),
        ))
    }
}

impl KeyOwner for Alice {
    fn principal(&self) -> &Principal {
        &self.0
    }
    fn grantable_scopes(&self) -> &ScopeSet {
        &self.1
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    app: Router,
    key: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(MemoryKeyStore::new());
        let issuer = KeyIssuer::new(store, SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
        let key = rt
            .block_on(issuer.issue(NewKey::new(Principal::user("alice"), "k", ScopeSet::empty())))
            .unwrap();
        let manager = KeyManager::new(issuer, Arc::new(MemoryAuditLog::default()))
            .known_scopes(ScopeSet::parse(["read", "write", "admin"]).unwrap());
        World {
            rt,
            app: keys_router::<Alice, _>(manager),
            key: key.record.id.to_string(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let path = if selector & 1 == 0 {
        "/".to_owned()
    } else {
        format!("/{}/rotate", w.key)
    };
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let res = w.rt.block_on(w.app.clone().oneshot(req)).unwrap();
    let status = res.status().as_u16();
    assert!(
        [201, 400, 403, 404, 409, 415, 422].contains(&status),
        "unexpected status {status}"
    );
});
