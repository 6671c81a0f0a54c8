//! Verifier behaviour: cache, revocation, expiry, rotation, attack path, outages.

use std::{sync::Arc, time::Duration};

use auth_core::clock::WallClock;
use auth_core::*;
use auth_core::{
    clock::FakeClock, hash::HashParams, response::ErrorFormat, scope::ScopePolicy,
    token::mint_token, token::ParsedToken, token::BODY_LEN,
};
use keygate_test_support::stores::TestStore;
use time::macros::datetime;

struct Fixture {
    store: Arc<TestStore>,
    clock: Arc<FakeClock>,
    issuer: KeyIssuer,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    fixture_with(SecretHasher::for_tests())
}

fn fixture_with(hasher: SecretHasher) -> Fixture {
    let store = TestStore::memory();
    let clock = Arc::new(FakeClock::new(datetime!(2026-06-01 12:00 UTC)));
    let Keys {
        issuer, verifier, ..
    } = Keys::builder(store.clone(), TokenPrefix::new("st_").unwrap())
        .hasher(hasher)
        .clock(clock.clone())
        .build();
    Fixture {
        store,
        clock,
        issuer,
        verifier,
    }
}

fn scopes(s: &[&str]) -> ScopeSet {
    ScopeSet::parse(s).unwrap()
}

async fn issue(f: &Fixture, user: &str) -> IssuedKey {
    f.issuer
        .issue(NewKey::new(
            Principal::user(user),
            "test key",
            scopes(&["read"]),
        ))
        .await
        .unwrap()
}

fn reason(r: Result<AuthContext, AuthError>) -> RejectReason {
    r.unwrap_err().reason()
}

#[tokio::test]
async fn second_verify_comes_from_the_cache() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    let ctx = f.verifier.verify(key.token.expose_secret()).await.unwrap();
    assert_eq!(ctx.actor().user_id(), "alice");
    assert_eq!(ctx.key_id(), Some(key.record.id));
    assert_eq!(f.store.gets(), 1);
    for _ in 0..10 {
        f.verifier.verify(key.token.expose_secret()).await.unwrap();
    }
    assert_eq!(
        f.store.gets(),
        1,
        "cached verifications must not read the store"
    );
}

#[tokio::test]
async fn stored_record_holds_no_plaintext() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    let token = key.token.expose_secret();
    let r = f.store.get(key.record.id).await.unwrap().unwrap();
    let body = &token[token.len() - BODY_LEN..];
    assert!(r.hash.starts_with("$argon2id$"));
    assert!(!format!("{r:?}").contains(body));
    assert!(!r.hash.contains(body) && !r.hint.contains(body));
    assert!(!format!("{key:?}").contains(body));
}

#[tokio::test]
async fn revoke_takes_effect_through_the_cache_at_once() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
    assert!(f.issuer.revoke(key.record.id).await.unwrap());
    assert_eq!(
        reason(f.verifier.verify(key.token.expose_secret()).await),
        RejectReason::Revoked
    );
}

#[tokio::test]
async fn expiry_is_enforced_on_cached_keys() {
    let f = fixture();
    let exp = f.clock.now() + Duration::from_secs(3600);
    let key = f
        .issuer
        .issue(NewKey::new(Principal::user("a"), "short", scopes(&[])).expires_at(exp))
        .await
        .unwrap();
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
    f.clock.advance(Duration::from_secs(3599));
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        reason(f.verifier.verify(key.token.expose_secret()).await),
        RejectReason::Expired
    );
}

#[tokio::test]
async fn issuing_with_a_past_expiry_or_bad_name_is_refused() {
    let f = fixture();
    let past = f.clock.now() - Duration::from_secs(1);
    let new = NewKey::new(Principal::user("a"), "x", scopes(&[])).expires_at(past);
    assert!(matches!(
        f.issuer.issue(new).await.unwrap_err(),
        IssueError::InvalidExpiry
    ));
    for name in ["", "   ", "a\nb", &"x".repeat(101)] {
        let new = NewKey::new(Principal::user("a"), name, scopes(&[]));
        assert!(matches!(
            f.issuer.issue(new).await.unwrap_err(),
            IssueError::InvalidName
        ));
    }
}

#[tokio::test]
async fn rotation_without_grace_stops_the_old_key() {
    let f = fixture();
    let old = issue(&f, "alice").await;
    f.verifier.verify(old.token.expose_secret()).await.unwrap();
    let new = f
        .issuer
        .rotate(old.record.id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(new.record.name, old.record.name);
    assert_eq!(new.record.scopes, old.record.scopes);
    assert_eq!(
        reason(f.verifier.verify(old.token.expose_secret()).await),
        RejectReason::Revoked
    );
    let ctx = f.verifier.verify(new.token.expose_secret()).await.unwrap();
    assert_eq!(ctx.key_id(), Some(new.record.id));
    let stored = f.store.get(old.record.id).await.unwrap().unwrap();
    assert_eq!(stored.replaced_by, Some(new.record.id));
}

#[tokio::test]
async fn rotation_grace_keeps_the_old_key_until_it_ends() {
    let f = fixture();
    let old = issue(&f, "alice").await;
    f.verifier.verify(old.token.expose_secret()).await.unwrap();
    let new = f
        .issuer
        .rotate(old.record.id, Duration::from_secs(600))
        .await
        .unwrap();
    f.verifier.verify(old.token.expose_secret()).await.unwrap();
    f.verifier.verify(new.token.expose_secret()).await.unwrap();
    f.clock.advance(Duration::from_secs(600));
    assert_eq!(
        reason(f.verifier.verify(old.token.expose_secret()).await),
        RejectReason::Revoked
    );
    f.verifier.verify(new.token.expose_secret()).await.unwrap();
    // A rotated key cannot be rotated again.
    assert!(matches!(
        f.issuer.rotate(old.record.id, Duration::ZERO).await,
        Err(IssueError::Conflict(_))
    ));
}

#[tokio::test]
async fn grace_never_outlives_the_old_keys_expiry() {
    let f = fixture();
    let exp = f.clock.now() + Duration::from_secs(60);
    let old = f
        .issuer
        .issue(NewKey::new(Principal::user("a"), "k", scopes(&[])).expires_at(exp))
        .await
        .unwrap();
    f.issuer
        .rotate(old.record.id, Duration::from_secs(3600))
        .await
        .unwrap();
    let stored = f.store.get(old.record.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(exp));
}

#[tokio::test]
async fn concurrent_rotations_have_one_winner() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    let (a, b) = tokio::join!(
        f.issuer.rotate(key.record.id, Duration::ZERO),
        f.issuer.rotate(key.record.id, Duration::ZERO)
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_of_one_token_hash_once() {
    let f = fixture_with(SecretHasher::new(HashParams::new(4096, 2, 1)).unwrap());
    let key = issue(&f, "alice").await;
    let token: Arc<str> = key.token.expose_secret().into();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (v, t) = (f.verifier.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        f.store.gets(),
        1,
        "one store read and one argon2 run for 32 concurrent requests"
    );
}

#[tokio::test]
async fn malformed_and_bad_checksum_never_reach_the_store() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    let t = key.token.expose_secret();
    let mut typo = t.to_owned();
    let last = typo.pop().unwrap();
    typo.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(
        reason(f.verifier.verify(&typo).await),
        RejectReason::BadChecksum
    );
    assert_eq!(
        reason(f.verifier.verify("st_hello").await),
        RejectReason::Malformed
    );
    assert_eq!(reason(f.verifier.verify("").await), RejectReason::Malformed);
    let other = mint_token(&TokenPrefix::new("sk_live_").unwrap()).1;
    assert_eq!(
        reason(f.verifier.verify(other.expose_secret()).await),
        RejectReason::WrongPrefix
    );
    assert_eq!(f.store.gets(), 0);
}

#[tokio::test]
async fn unknown_ids_cost_one_store_read_then_nothing() {
    let f = fixture();
    let (_, token) = mint_token(&TokenPrefix::new("st_").unwrap());
    for _ in 0..5 {
        assert_eq!(
            reason(f.verifier.verify(token.expose_secret()).await),
            RejectReason::UnknownKey
        );
    }
    assert_eq!(f.store.gets(), 1);
}

/// A token with the right key id and a different secret.
fn forge(real: &str) -> String {
    let (_, random) = mint_token(&TokenPrefix::new("st_").unwrap());
    let parsed = ParsedToken::parse(real).unwrap();
    let r = random.expose_secret();
    let id = parsed.key_id().to_string();
    // Swap in the real id, then fix the checksum by re-minting through the format.
    let mut body = format!("st_{id}{}", &r[3 + 11..r.len() - 6]);
    let crc = crc32fast::hash(body.as_bytes());
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut digits = [0u8; 6];
    let mut v = crc as u64;
    for d in digits.iter_mut().rev() {
        *d = A[(v % 62) as usize];
        v /= 62;
    }
    body.push_str(std::str::from_utf8(&digits).unwrap());
    body
}

#[tokio::test]
async fn wrong_secrets_for_a_cached_key_cost_no_argon2() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
    let forged = forge(key.token.expose_secret());
    assert_eq!(ParsedToken::parse(&forged).unwrap().key_id(), key.record.id);
    for _ in 0..5 {
        assert_eq!(
            reason(f.verifier.verify(&forged).await),
            RejectReason::WrongSecret
        );
    }
    assert_eq!(f.store.gets(), 1);
}

#[tokio::test]
async fn wrong_secrets_for_an_uncached_key_cost_one_store_read_and_never_throttle_the_owner() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    let forged = forge(key.token.expose_secret());
    assert_eq!(
        reason(f.verifier.verify(&forged).await),
        RejectReason::WrongSecret
    );
    assert_eq!(f.store.gets(), 1);
    // The same wrong secret again, and another one: refused by the
    // remembered secret check, without a store read.
    assert_eq!(
        reason(f.verifier.verify(&forged).await),
        RejectReason::WrongSecret
    );
    let forged2 = forge(key.token.expose_secret());
    assert_eq!(
        reason(f.verifier.verify(&forged2).await),
        RejectReason::WrongSecret
    );
    assert_eq!(f.store.gets(), 1);
    // The right token works at once: no backoff locks the owner out.
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn store_outage_is_unavailable_never_a_pass_or_401() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    f.store.set_down(true);
    let err = f
        .verifier
        .verify(key.token.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert_eq!(err.status(), 503);
    // Service resumes when the store is back.
    f.store.set_down(false);
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn out_of_sync_feed_confirms_cache_hits_against_the_store() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
    f.store.changes().set_in_sync(false);
    // Revoked behind the feed's back (as another instance would).
    f.store
        .inner()
        .revoke(key.record.id, f.clock.now())
        .await
        .unwrap();
    f.verifier
        .verify(key.token.expose_secret())
        .await
        .unwrap_err();
    f.store.set_down(true);
    assert_eq!(
        f.verifier
            .verify(key.token.expose_secret())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Unavailable
    );
}

#[tokio::test]
async fn raised_parameters_rehash_on_successful_verify() {
    let weak = SecretHasher::for_tests();
    let f = fixture_with(weak);
    let key = issue(&f, "alice").await;
    let strong = SecretHasher::new(HashParams::new(256, 2, 1)).unwrap();
    let verifier = Verifier::builder(f.store.clone())
        .hasher(strong.clone())
        .build();
    verifier.verify(key.token.expose_secret()).await.unwrap();
    // The re-hash runs in the background; wait for it with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = f.store.get(key.record.id).await.unwrap().unwrap();
        if !strong.needs_rehash(&r.hash) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record was not re-hashed"
        );
        tokio::task::yield_now().await;
    }
    // And the key still works, cold and cached.
    let fresh = Verifier::builder(f.store.clone()).hasher(strong).build();
    fresh.verify(key.token.expose_secret()).await.unwrap();
    fresh.verify(key.token.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn last_use_is_recorded_in_batches() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    f.verifier.verify(key.token.expose_secret()).await.unwrap();
    f.verifier.flush_usage().await;
    let r = f.store.inner().get(key.record.id).await.unwrap().unwrap();
    assert_eq!(r.last_used_at, Some(f.clock.now()));
}

#[tokio::test]
async fn scope_policy_expands_key_scopes() {
    let store = Arc::new(MemoryKeyStore::new());
    let hasher = SecretHasher::for_tests();
    let issuer = KeyIssuer::new(
        store.clone(),
        hasher.clone(),
        TokenPrefix::new("p:").unwrap(),
    );
    let verifier = Verifier::builder(store)
        .hasher(hasher)
        .scope_policy(
            ScopePolicy::new()
                .wildcard("admin")
                .implies("write:x", ["read:x"]),
        )
        .build();
    let w = issuer
        .issue(NewKey::new(Principal::user("u"), "w", scopes(&["write:x"])))
        .await
        .unwrap();
    let a = issuer
        .issue(NewKey::new(Principal::user("u"), "a", scopes(&["admin"])))
        .await
        .unwrap();
    let ctx = verifier.verify(w.token.expose_secret()).await.unwrap();
    assert!(ctx.scopes().has("read:x") && !ctx.scopes().has("admin"));
    let ctx = verifier.verify(a.token.expose_secret()).await.unwrap();
    assert!(ctx.scopes().has("anything.at:all"));
}

#[tokio::test]
async fn errors_never_show_the_token() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    f.issuer.revoke(key.record.id).await.unwrap();
    let err = f
        .verifier
        .verify(key.token.expose_secret())
        .await
        .unwrap_err();
    let t = key.token.expose_secret();
    for shown in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{:?}", f.verifier),
    ] {
        assert!(!shown.contains(&t[3..]), "{shown}");
    }
    let body = ErrorFormat::Flat.render(&err);
    assert!(!String::from_utf8_lossy(body.body()).contains(&t[3..]));
}

#[tokio::test]
async fn a_cached_key_with_any_character_changed_is_refused() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    let t = key.token.expose_secret();
    f.verifier.verify(t).await.unwrap();
    for i in 0..t.len() {
        let mut changed = t.as_bytes().to_vec();
        changed[i] = if changed[i] == b'0' { b'1' } else { b'0' };
        let changed = String::from_utf8(changed).unwrap();
        let err = f.verifier.verify(&changed).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthorized, "position {i}");
        assert_ne!(
            err.reason(),
            RejectReason::WrongSecret,
            "position {i}: a typo is a checksum failure"
        );
    }
}

#[tokio::test]
async fn issued_times_are_whole_microseconds_as_sql_stores_keep_them() {
    let f = fixture();
    f.clock.set(datetime!(2026-06-01 12:00:00.123456789 UTC));
    let key = issue(&f, "alice").await;
    assert_eq!(
        key.record.created_at,
        datetime!(2026-06-01 12:00:00.123456 UTC)
    );
}

#[tokio::test]
async fn key_ended_resolves_on_revocation_of_that_key_only() {
    use futures_util::FutureExt;
    let f = fixture();
    let mine = issue(&f, "alice").await;
    let other = issue(&f, "bob").await;
    let mut ended = Box::pin(f.verifier.key_ended(mine.record.id));
    // Let it read the store and start waiting.
    for _ in 0..10 {
        assert!((&mut ended).now_or_never().is_none());
        tokio::task::yield_now().await;
    }
    f.issuer.revoke(other.record.id).await.unwrap();
    for _ in 0..10 {
        assert!(
            (&mut ended).now_or_never().is_none(),
            "another key's revocation ended it"
        );
        tokio::task::yield_now().await;
    }
    f.issuer.revoke(mine.record.id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("not ended by its revocation");
}

#[tokio::test]
async fn key_ended_resolves_on_rotation_without_grace_and_on_store_errors() {
    let f = fixture();
    let key = issue(&f, "alice").await;
    let ended = f.verifier.key_ended(key.record.id);
    f.issuer
        .rotate(key.record.id, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("rotation did not end it");

    let key = issue(&f, "bob").await;
    f.store.set_down(true);
    tokio::time::timeout(Duration::from_secs(10), f.verifier.key_ended(key.record.id))
        .await
        .expect("a store error must end it (fail closed)");
}
