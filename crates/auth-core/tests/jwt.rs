//! JWT credentials with per-user secrets.
#![cfg(feature = "jwt")]

use auth_core::{clock::FakeClock, store::ChangeFeed, store::StoreError};
use std::{sync::Arc, time::Duration};

use auth_core::{
    jwt::{looks_like_jwt, JwtAuthority, MasterKey, MemoryUserSecrets, UserSecretStore},
    *,
};
use base64::Engine;
use time::macros::datetime;

fn authority(secrets: Arc<MemoryUserSecrets>) -> JwtAuthority {
    JwtAuthority::builder(secrets, MasterKey::from_bytes(&[9; 32]), "syncello")
        .scopes(ScopeSet::parse(["tools"]).unwrap())
        .build()
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn reason(r: Result<AuthContext, AuthError>) -> RejectReason {
    r.unwrap_err().reason()
}

#[tokio::test]
async fn token_has_the_seed_claims_and_verifies() {
    let jwt = authority(Arc::new(MemoryUserSecrets::new()));
    let token = jwt.token_for("user-uuid-1").await.unwrap();
    assert!(looks_like_jwt(&token));
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "user-uuid-1");
    assert_eq!(claims["iss"], "syncello");
    assert!(claims["iat"].is_i64());
    assert!(
        claims.get("exp").is_none(),
        "tokens do not expire unless asked"
    );
    let ctx = jwt.verify(&token).await.unwrap();
    assert_eq!(ctx.effective_user(), "user-uuid-1");
    assert_eq!(ctx.credential(), CredentialKind::Jwt);
    assert!(ctx.scopes().has("tools"));
    // Same token again comes from the cache.
    jwt.verify(&token).await.unwrap();
}

/// The cache is keyed by the signature: a cached token's signature under
/// another header or payload (another `sub`, say) must still be refused.
#[tokio::test]
async fn a_cached_signature_with_another_payload_is_refused() {
    let jwt = authority(Arc::new(MemoryUserSecrets::new()));
    let token = jwt.token_for("u1").await.unwrap();
    jwt.verify(&token).await.unwrap(); // cached
    jwt.token_for("u2").await.unwrap(); // u2 has a secret too
    let mut parts = token.split('.');
    let (header, _, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let payload = b64(&serde_json::json!({"sub": "u2", "iss": "syncello", "iat": 1}));
    for forged in [
        format!("{header}.{payload}.{signature}"),
        format!("{header}x.{}.{signature}", token.split('.').nth(1).unwrap()),
    ] {
        assert!(
            jwt.verify_cached(&forged).is_none(),
            "no cache hit: {forged}"
        );
        let refused = jwt.verify(&forged).await;
        assert!(refused.is_err(), "{forged}");
    }
    // The genuine token still comes from the cache.
    assert_eq!(
        jwt.verify_cached(&token).unwrap().unwrap().effective_user(),
        "u1"
    );
}

#[tokio::test]
async fn regenerate_invalidates_old_tokens_at_once() {
    let secrets = Arc::new(MemoryUserSecrets::new());
    let jwt = authority(secrets.clone());
    let other = authority(secrets.clone()); // a second verifier sharing the store
    let old = jwt.token_for("u1").await.unwrap();
    let bystander = jwt.token_for("u2").await.unwrap();
    jwt.verify(&old).await.unwrap();
    other.verify(&old).await.unwrap();
    let new = jwt.regenerate("u1").await.unwrap();
    assert_eq!(reason(jwt.verify(&old).await), RejectReason::WrongSecret);
    assert_eq!(reason(other.verify(&old).await), RejectReason::WrongSecret);
    jwt.verify(&new).await.unwrap();
    jwt.verify(&bystander).await.unwrap();
    assert_eq!(
        secrets.get_secret("u1").await.unwrap().unwrap().generation,
        2
    );
}

#[tokio::test]
async fn secrets_are_sealed_at_rest() {
    let secrets = Arc::new(MemoryUserSecrets::new());
    let jwt = authority(secrets.clone());
    jwt.token_for("u1").await.unwrap();
    let sealed = secrets.get_secret("u1").await.unwrap().unwrap();
    // A different master key cannot open it, and the token does not verify.
    let stranger = JwtAuthority::new(secrets.clone(), MasterKey::from_bytes(&[1; 32]), "syncello");
    let token = jwt.token_for("u1").await.unwrap();
    assert_eq!(
        stranger.verify(&token).await.unwrap_err().code(),
        ErrorCode::Unavailable
    );
    assert!(MasterKey::from_bytes(&[9; 32])
        .open("u1", &sealed.sealed)
        .is_ok());
    assert!(MasterKey::from_base64("not base64!").is_err());
    assert!(MasterKey::from_base64(&MasterKey::generate_base64()).is_ok());
}

#[tokio::test]
async fn refuses_alg_none_wrong_alg_wrong_issuer_unknown_user_and_garbage() {
    let secrets = Arc::new(MemoryUserSecrets::new());
    let jwt = authority(secrets.clone());
    let good = jwt.token_for("u1").await.unwrap();
    let parts: Vec<&str> = good.split('.').collect();

    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg":"none","typ":"JWT"})),
        parts[1]
    );
    assert_eq!(reason(jwt.verify(&none).await), RejectReason::Malformed);
    let hs512 = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"alg":"HS512","typ":"JWT"})),
        parts[1],
        parts[2]
    );
    assert_eq!(reason(jwt.verify(&hs512).await), RejectReason::Malformed);

    let other_iss = JwtAuthority::new(secrets.clone(), MasterKey::from_bytes(&[9; 32]), "evil");
    let foreign = other_iss.token_for("u1").await.unwrap();
    assert!(jwt.verify(&foreign).await.is_err());

    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    assert!(jwt.verify(&tampered).await.is_err());

    let forged_sub = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::json!({"sub":"u2","iat":0,"iss":"syncello"})),
        parts[2]
    );
    assert!(jwt.verify(&forged_sub).await.is_err());

    let unknown = JwtAuthority::new(
        Arc::new(MemoryUserSecrets::new()),
        MasterKey::from_bytes(&[9; 32]),
        "syncello",
    );
    assert_eq!(
        reason(unknown.verify(&good).await),
        RejectReason::UnknownKey
    );
    for garbage in ["", "eyJ", "eyJ.a.b", &"eyJ.".repeat(2000)] {
        assert_eq!(
            jwt.verify(garbage).await.unwrap_err().code(),
            ErrorCode::Unauthorized
        );
    }
}

#[tokio::test]
async fn expiry_only_when_asked_for() {
    let clock = Arc::new(FakeClock::new(datetime!(2026-01-01 0:00 UTC)));
    let jwt = JwtAuthority::builder(
        Arc::new(MemoryUserSecrets::new()),
        MasterKey::generate(),
        "svc",
    )
    .expiry(Duration::from_secs(60))
    .clock(clock.clone())
    .build();
    let token = jwt.token_for("u").await.unwrap();
    jwt.verify(&token).await.unwrap();
    clock.advance(Duration::from_secs(61));
    assert_eq!(reason(jwt.verify(&token).await), RejectReason::Expired);
}

#[test]
fn a_jwt_shape_is_eyj_with_exactly_two_dots() {
    for jwt in ["eyJa.b.c", "eyJ..", "eyJhbGci.eyJzdWIi.sig"] {
        assert!(looks_like_jwt(jwt), "{jwt}");
    }
    for other in [
        "eyJa.b",
        "eyJa.b.c.d",
        "eyJ...",
        "eyJabc",
        "st_a.b.c",
        "",
        "eyJ.",
    ] {
        assert!(!looks_like_jwt(other), "{other}");
    }
}

#[tokio::test]
async fn the_verifier_tells_kinds_apart_by_shape() {
    let store = Arc::new(MemoryKeyStore::new());
    let hasher = SecretHasher::for_tests();
    let jwt = authority(Arc::new(MemoryUserSecrets::new()));
    let issuer = KeyIssuer::new(
        store.clone(),
        hasher.clone(),
        TokenPrefix::new("st_").unwrap(),
    );
    let both = Verifier::builder(store.clone())
        .hasher(hasher.clone())
        .jwt(jwt.clone())
        .build();
    let keys_only = Verifier::builder(store).hasher(hasher).build();
    let key = issuer
        .issue(NewKey::new(Principal::user("a"), "k", ScopeSet::empty()))
        .await
        .unwrap();
    let token = jwt.token_for("b").await.unwrap();
    assert_eq!(
        both.verify(key.token.expose_secret())
            .await
            .unwrap()
            .credential(),
        CredentialKind::ApiKey
    );
    assert_eq!(
        both.verify(&token).await.unwrap().credential(),
        CredentialKind::Jwt
    );
    assert_eq!(
        reason(keys_only.verify(&token).await),
        RejectReason::Malformed
    );
}

/// A view of a shared store whose change feed hears nothing from the others,
/// as an instance whose notification connection dropped.
#[derive(Debug)]
struct Detached {
    inner: Arc<MemoryUserSecrets>,
    feed: ChangeFeed,
}

#[async_trait::async_trait]
impl UserSecretStore for Detached {
    async fn get_secret(
        &self,
        user: &str,
    ) -> Result<Option<auth_core::jwt::SealedSecret>, StoreError> {
        self.inner.get_secret(user).await
    }
    async fn replace_secret(&self, user: &str, s: &[u8]) -> Result<i64, StoreError> {
        self.inner.replace_secret(user, s).await
    }
    async fn insert_secret_if_absent(&self, user: &str, s: &[u8]) -> Result<bool, StoreError> {
        self.inner.insert_secret_if_absent(user, s).await
    }
    fn secret_changes(&self) -> &ChangeFeed {
        &self.feed
    }
}

#[tokio::test]
async fn out_of_sync_feed_checks_every_token_against_the_store() {
    let shared = Arc::new(MemoryUserSecrets::new());
    let a = authority(shared.clone());
    let detached = Arc::new(Detached {
        inner: shared,
        feed: ChangeFeed::new(),
    });
    let b = JwtAuthority::builder(
        detached.clone(),
        MasterKey::from_bytes(&[9; 32]),
        "syncello",
    )
    .build();
    let old = a.token_for("u1").await.unwrap();
    detached.feed.set_in_sync(false);
    b.verify(&old).await.unwrap();
    // Regenerated on A; B hears nothing but must not serve the old token from cache.
    a.regenerate("u1").await.unwrap();
    assert_eq!(reason(b.verify(&old).await), RejectReason::WrongSecret);
}

/// A shared store that counts reads and can make the first `hold` readers
/// wait for each other (so two first `token_for` calls both see no secret).
#[derive(Debug)]
struct Racy {
    inner: Arc<MemoryUserSecrets>,
    gets: std::sync::atomic::AtomicUsize,
    barrier: tokio::sync::Barrier,
    hold: usize,
}

impl Racy {
    fn new(hold: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(MemoryUserSecrets::new()),
            gets: Default::default(),
            barrier: tokio::sync::Barrier::new(hold.max(1)),
            hold,
        })
    }
    fn gets(&self) -> usize {
        self.gets.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl UserSecretStore for Racy {
    async fn get_secret(
        &self,
        user: &str,
    ) -> Result<Option<auth_core::jwt::SealedSecret>, StoreError> {
        let n = self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let found = self.inner.get_secret(user).await;
        if n < self.hold {
            self.barrier.wait().await;
        }
        found
    }
    async fn replace_secret(&self, user: &str, s: &[u8]) -> Result<i64, StoreError> {
        self.inner.replace_secret(user, s).await
    }
    async fn insert_secret_if_absent(&self, user: &str, s: &[u8]) -> Result<bool, StoreError> {
        self.inner.insert_secret_if_absent(user, s).await
    }
    fn secret_changes(&self) -> &ChangeFeed {
        self.inner.secret_changes()
    }
}

#[tokio::test]
async fn unknown_subjects_are_remembered_like_unknown_key_ids() {
    let store = Racy::new(0);
    let jwt = JwtAuthority::new(store.clone(), MasterKey::from_bytes(&[9; 32]), "syncello");
    // Signed elsewhere for a user this store has never heard of.
    let elsewhere = authority(Arc::new(MemoryUserSecrets::new()));
    let ghost = elsewhere.token_for("ghost").await.unwrap();
    for _ in 0..20 {
        assert_eq!(reason(jwt.verify(&ghost).await), RejectReason::UnknownKey);
    }
    assert_eq!(store.gets(), 1, "one store read, then remembered");
    // Once the user gets a secret, their tokens work at once.
    let real = jwt.token_for("ghost").await.unwrap();
    jwt.verify(&real).await.unwrap();
    assert_eq!(reason(jwt.verify(&ghost).await), RejectReason::WrongSecret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_first_token_for_calls_both_get_working_tokens() {
    // Both calls read "no secret yet" before either writes.
    let store = Racy::new(2);
    let jwt = JwtAuthority::new(store.clone(), MasterKey::from_bytes(&[9; 32]), "syncello");
    let (a, b) = tokio::join!(jwt.token_for("u1"), jwt.token_for("u1"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let fresh = JwtAuthority::new(store.clone(), MasterKey::from_bytes(&[9; 32]), "syncello");
    fresh.verify(&a).await.expect("the first token died");
    fresh.verify(&b).await.expect("the second token died");
    assert_eq!(store.get_secret("u1").await.unwrap().unwrap().generation, 1);
}

#[tokio::test]
async fn jwt_connections_end_when_their_users_secret_is_regenerated() {
    let secrets = Arc::new(MemoryUserSecrets::new());
    let jwt = authority(secrets.clone());
    let verifier = Verifier::builder(Arc::new(MemoryKeyStore::new()))
        .hasher(SecretHasher::for_tests())
        .jwt(jwt.clone())
        .build();
    let token = jwt.token_for("u1").await.unwrap();
    jwt.token_for("u2").await.unwrap();
    let ctx = verifier.verify(&token).await.unwrap();
    assert_eq!(ctx.secret_generation(), Some(1));
    // From the cache too.
    assert_eq!(
        verifier.verify(&token).await.unwrap().secret_generation(),
        Some(1)
    );
    let mut ended = verifier.credential_ended(&ctx);
    use futures_util::FutureExt;
    for _ in 0..10 {
        assert!((&mut ended).now_or_never().is_none());
        tokio::task::yield_now().await;
    }
    jwt.regenerate("u2").await.unwrap();
    for _ in 0..10 {
        assert!(
            (&mut ended).now_or_never().is_none(),
            "another user's regeneration ended it"
        );
        tokio::task::yield_now().await;
    }
    jwt.regenerate("u1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("not ended by the regeneration of its user's secret");
    // A connection opened with the old token after the regeneration never
    // gets this far (refused), and one with the new token stays open.
    let new = jwt.token_for("u1").await.unwrap();
    let ctx = verifier.verify(&new).await.unwrap();
    assert_eq!(ctx.secret_generation(), Some(2));
    let mut ended = verifier.credential_ended(&ctx);
    for _ in 0..10 {
        assert!((&mut ended).now_or_never().is_none());
        tokio::task::yield_now().await;
    }
}

/// A shared store that holds the first replacement of a secret, before it
/// is written, until the test lets it go: two regenerations interleaved.
#[derive(Debug)]
struct HeldReplacement {
    inner: Arc<MemoryUserSecrets>,
    entered: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl UserSecretStore for HeldReplacement {
    async fn get_secret(
        &self,
        user: &str,
    ) -> Result<Option<auth_core::jwt::SealedSecret>, StoreError> {
        self.inner.get_secret(user).await
    }
    async fn replace_secret(&self, user: &str, s: &[u8]) -> Result<i64, StoreError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            self.entered.notify_one();
            let _permit = self.release.acquire().await.unwrap();
        }
        self.inner.replace_secret(user, s).await
    }
    async fn insert_secret_if_absent(&self, user: &str, s: &[u8]) -> Result<bool, StoreError> {
        self.inner.insert_secret_if_absent(user, s).await
    }
    fn secret_changes(&self) -> &ChangeFeed {
        self.inner.secret_changes()
    }
}

#[tokio::test]
async fn concurrent_regenerations_end_every_connection_but_the_last_written() {
    let store = Arc::new(HeldReplacement {
        inner: Arc::new(MemoryUserSecrets::new()),
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Semaphore::new(0),
        calls: Default::default(),
    });
    let jwt = JwtAuthority::new(store.clone(), MasterKey::from_bytes(&[9; 32]), "syncello");
    let verifier = Verifier::builder(Arc::new(MemoryKeyStore::new()))
        .hasher(SecretHasher::for_tests())
        .jwt(jwt.clone())
        .build();
    jwt.token_for("u1").await.unwrap();
    // A starts and is held before its write; B runs to the end.
    let first = tokio::spawn({
        let jwt = jwt.clone();
        async move { jwt.regenerate("u1").await.unwrap() }
    });
    store.entered.notified().await;
    let second = jwt.regenerate("u1").await.unwrap();
    let ctx = verifier.verify(&second).await.unwrap();
    let ended = verifier.credential_ended(&ctx);
    // Then A writes: B's secret is gone, so must B's connection be.
    store.release.add_permits(1);
    let first = first.await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("a connection outlived its secret");
    assert_eq!(
        reason(verifier.verify(&second).await),
        RejectReason::WrongSecret
    );
    let current = verifier.verify(&first).await.unwrap();
    assert_eq!(current.secret_generation(), Some(3));
    assert_ne!(current.secret_generation(), ctx.secret_generation());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_counts_generations_in_the_write() {
    let store = Arc::new(MemoryUserSecrets::new());
    let writes = (0..16).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.replace_secret("u1", &[i]).await.unwrap() })
    });
    let mut generations: Vec<i64> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    generations.sort_unstable();
    assert_eq!(generations, (1..=16).collect::<Vec<_>>());
}
