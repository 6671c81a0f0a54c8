//! `Verifier::watch_credential`: what open connections learn when their key
//! is edited, revoked, disabled or expires, or a JWT's user secret is
//! regenerated; and that connections on one key share one store read.

mod support;

use auth_core::{watch::CredentialChange, watch::CredentialWatch};
use std::{net::IpAddr, sync::Arc, time::Duration};

use auth_core::{store::KeyUpdate, *};
use support::*;

struct Fixture {
    store: Arc<TestStore>,
    issuer: KeyIssuer,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    let store = TestStore::new(Arc::new(MemoryKeyStore::new()));
    Fixture {
        issuer: issuer(store.clone()),
        verifier: verifier(store.clone()),
        store,
    }
}

impl Fixture {
    async fn key(&self, scopes: &[&str]) -> (KeyId, AuthContext) {
        let key = self
            .issuer
            .issue(NewKey::new(
                Principal::user("alice"),
                "socket",
                ScopeSet::parse(scopes).unwrap(),
            ))
            .await
            .unwrap();
        let ctx = self
            .verifier
            .verify(key.token.expose_secret())
            .await
            .unwrap();
        (key.record.id, ctx)
    }

    async fn update(&self, id: KeyId, update: KeyUpdate) {
        self.store.update(id, &update).await.unwrap();
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn scopes(s: &[&str]) -> ScopeSet {
    ScopeSet::parse(s).unwrap()
}

async fn next(watch: &mut CredentialWatch) -> CredentialChange {
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("no change reached the watch")
}

fn updated(change: CredentialChange) -> AuthContext {
    match change {
        CredentialChange::Updated(ctx) => ctx,
        other => panic!("expected an update, got {other:?}"),
    }
}

fn ended(change: CredentialChange) -> RejectReason {
    match change {
        CredentialChange::Ended(reason) => reason,
        other => panic!("expected the end, got {other:?}"),
    }
}

#[tokio::test]
async fn an_edit_narrows_the_connection_and_never_widens_it() {
    let f = fixture();
    let (id, ctx) = f.key(&["read", "write"]).await;
    let mut watch = f.verifier.watch_credential(&ctx, ip("203.0.113.9"));

    f.update(id, KeyUpdate::default().scopes(scopes(&["read"])))
        .await;
    let now = updated(next(&mut watch).await);
    assert!(now.scopes().has("read") && !now.scopes().has("write"));
    assert_eq!(watch.context().scopes(), now.scopes());

    // Widened again: the open connection keeps what it had; the next
    // change it hears (new metadata) still carries the narrow scopes.
    f.update(
        id,
        KeyUpdate::default().scopes(scopes(&["read", "write", "admin"])),
    )
    .await;
    let mut meta = serde_json::Map::new();
    meta.insert("plan".into(), "pro".into());
    f.update(id, KeyUpdate::default().meta(meta)).await;
    let now = updated(next(&mut watch).await);
    assert_eq!(now.scopes(), &scopes(&["read"]));
    assert_eq!(now.meta().unwrap()["plan"], "pro");
}

#[tokio::test]
async fn an_allowlist_edit_ends_only_the_connections_it_leaves_out() {
    let f = fixture();
    let (id, ctx) = f.key(&["read"]).await;
    let mut inside = f.verifier.watch_credential(&ctx, ip("203.0.113.9"));
    let mut outside = f.verifier.watch_credential(&ctx, ip("198.51.100.1"));
    let mut unknown = f.verifier.watch_credential(&ctx, None);
    let nets = vec!["203.0.113.0/24".parse().unwrap()];
    f.update(id, KeyUpdate::default().ip_allowlist(nets)).await;
    assert_eq!(ended(next(&mut outside).await), RejectReason::IpNotAllowed);
    assert_eq!(
        ended(next(&mut unknown).await),
        RejectReason::IpNotAllowed,
        "an unknown address fails closed"
    );
    let now = updated(next(&mut inside).await);
    assert_eq!(now.ip_allowlist().len(), 1);
    // Ended stays ended.
    assert_eq!(ended(next(&mut outside).await), RejectReason::IpNotAllowed);
}

#[tokio::test]
async fn revocation_disabling_and_expiry_end_connections() {
    let f = fixture();
    let (revoked, ctx) = f.key(&["read"]).await;
    let mut watch = f.verifier.watch_credential(&ctx, None);
    f.issuer.revoke(revoked).await.unwrap();
    assert_eq!(ended(next(&mut watch).await), RejectReason::Revoked);

    let (disabled, ctx) = f.key(&["read"]).await;
    let mut watch = f.verifier.watch_credential(&ctx, None);
    let now = time::OffsetDateTime::now_utc();
    f.update(disabled, KeyUpdate::default().disabled_at(Some(now)))
        .await;
    assert_eq!(ended(next(&mut watch).await), RejectReason::Disabled);

    // Expiry set by an edit to a moment just ahead: the shared watch wakes
    // at that moment, with no change to announce it.
    let (expiring, ctx) = f.key(&["read"]).await;
    let mut watch = f.verifier.watch_credential(&ctx, None);
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    f.update(expiring, KeyUpdate::default().expires_at(Some(soon)))
        .await;
    let change = next(&mut watch).await;
    // The edit itself is not a policy change: the next word is the end.
    assert_eq!(ended(change), RejectReason::Expired);
    assert!(time::OffsetDateTime::now_utc() >= soon);
}

#[tokio::test]
async fn a_watch_made_after_a_revocation_still_hears_of_it() {
    let f = fixture();
    let (id, ctx) = f.key(&["read"]).await;
    // One connection keeps the key's shared watch alive meanwhile.
    let _other = f.verifier.watch_credential(&ctx, None);
    f.issuer.revoke(id).await.unwrap();
    let mut late = f.verifier.watch_credential(&ctx, None);
    assert_eq!(ended(next(&mut late).await), RejectReason::Revoked);
}

#[tokio::test]
async fn a_connection_acting_for_another_user_ends_when_its_key_narrows() {
    let f = fixture();
    let (id, ctx) = f.key(&["read", "write", "sudo"]).await;
    let acting = ctx.with_subject(Principal::user("bob"), &scopes(&["read", "write"]));
    let mut watch = f.verifier.watch_credential(&acting, None);
    f.update(id, KeyUpdate::default().scopes(scopes(&["read", "write"])))
        .await;
    // The subject's share is unchanged, but the key's is not.
    let mut meta = serde_json::Map::new();
    meta.insert("n".into(), 1.into());
    f.update(id, KeyUpdate::default().meta(meta)).await;
    let change = next(&mut watch).await;
    assert!(updated(change).scopes().has("write"));
    f.update(id, KeyUpdate::default().scopes(scopes(&["read"])))
        .await;
    assert_eq!(
        ended(next(&mut watch).await),
        RejectReason::ImpersonationDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_on_one_key_cost_one_store_read_per_change() {
    let f = fixture();
    let (id, ctx) = f.key(&["read", "write"]).await;
    let before = f.store.gets();
    let mut watches: Vec<_> = (0..1000)
        .map(|_| f.verifier.watch_credential(&ctx, None))
        .collect();
    f.update(id, KeyUpdate::default().scopes(scopes(&["read"])))
        .await;
    for w in &mut watches {
        assert!(!updated(next(w).await).scopes().has("write"));
    }
    f.issuer.revoke(id).await.unwrap();
    for w in &mut watches {
        assert_eq!(ended(next(w).await), RejectReason::Revoked);
    }
    let reads = f.store.gets() - before;
    // The first read, one per change, and at most one more if the first
    // read raced the edit.
    assert!(reads <= 4, "{reads} store reads for 1000 connections");
}

#[cfg(feature = "jwt")]
mod jwt {
    use auth_core::jwt::{JwtAuthority, MasterKey, MemoryUserSecrets};

    use super::*;

    #[tokio::test]
    async fn a_regenerated_secret_ends_its_users_connections_only() {
        let jwt = JwtAuthority::new(
            Arc::new(MemoryUserSecrets::new()),
            MasterKey::from_bytes(&[7; 32]),
            "iss",
        );
        let verifier = Verifier::builder(Arc::new(MemoryKeyStore::new()))
            .hasher(hasher())
            .jwt(jwt.clone())
            .build();
        let mine = verifier
            .verify(&jwt.token_for("u1").await.unwrap())
            .await
            .unwrap();
        let theirs = verifier
            .verify(&jwt.token_for("u2").await.unwrap())
            .await
            .unwrap();
        let mut mine = verifier.watch_credential(&mine, None);
        let mut theirs = verifier.watch_credential(&theirs, None);
        jwt.regenerate("u1").await.unwrap();
        assert_eq!(ended(next(&mut mine).await), RejectReason::Revoked);
        // A later regeneration of u2 is the first thing u2's watch hears.
        jwt.regenerate("u2").await.unwrap();
        assert_eq!(ended(next(&mut theirs).await), RejectReason::Revoked);
    }
}
