//! Attacks on the verifier and its cold start: owner
//! lockout, wrong-secret floods, prefix swaps, resync storms, overflow.

use std::{sync::Arc, time::Duration};

use auth_core::*;
use auth_core::{
    clock::FakeClock, hash::HashParams, store::KeyChange, token::mint_token, token::ParsedToken,
};
use futures_util::FutureExt;
use keygate_test_support::stores::TestStore;
use time::macros::datetime;

struct Fixture {
    store: Arc<TestStore>,
    clock: Arc<FakeClock>,
    hasher: SecretHasher,
    issuer: KeyIssuer,
}

fn prefix() -> TokenPrefix {
    TokenPrefix::new("st_").unwrap()
}

fn fixture() -> Fixture {
    let store = TestStore::memory();
    let clock = Arc::new(FakeClock::new(datetime!(2026-06-01 12:00 UTC)));
    let hasher = SecretHasher::for_tests();
    let issuer = KeyIssuer::new(store.clone(), hasher.clone(), prefix()).clock(clock.clone());
    Fixture {
        store,
        clock,
        hasher,
        issuer,
    }
}

impl Fixture {
    /// A verifier with an empty cache, as after a restart.
    fn fresh_verifier(&self) -> Verifier {
        Verifier::builder(self.store.clone())
            .hasher(self.hasher.clone())
            .clock(self.clock.clone())
            .build()
    }

    async fn issue(&self, user: &str) -> IssuedKey {
        self.issuer
            .issue(NewKey::new(
                Principal::user(user),
                "key",
                ScopeSet::parse(["read"]).unwrap(),
            ))
            .await
            .unwrap()
    }

    /// A key as stored before secret checks existed: no check, and a hash
    /// made with other parameters.
    async fn issue_legacy(&self, user: &str) -> IssuedKey {
        let old_hasher = SecretHasher::new(HashParams::new(128, 1, 1)).unwrap();
        let elsewhere = Arc::new(MemoryKeyStore::new());
        let mut key = KeyIssuer::new(elsewhere, old_hasher, prefix())
            .clock(self.clock.clone())
            .issue(NewKey::new(Principal::user(user), "old", ScopeSet::empty()))
            .await
            .unwrap();
        key.record.check = None;
        self.store.insert(&key.record).await.unwrap();
        key
    }
}

fn reason(r: Result<AuthContext, AuthError>) -> RejectReason {
    r.unwrap_err().reason()
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `body` with a valid CRC32 checksum appended (what anyone can compute).
fn with_checksum(mut body: String) -> String {
    let mut v = crc32fast::hash(body.as_bytes()) as u64;
    let mut digits = [0u8; 6];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(v % 62) as usize];
        v /= 62;
    }
    body.push_str(std::str::from_utf8(&digits).unwrap());
    body
}

/// A well-formed token for the real key id with a random wrong secret.
fn forge(real: &str) -> String {
    let id = ParsedToken::parse(real).unwrap().key_id();
    let (_, random) = mint_token(&prefix());
    let r = random.expose_secret();
    with_checksum(format!("st_{id}{}", &r[3 + 11..r.len() - 6]))
}

/// The same key id and secret under another prefix, checksum recomputed.
fn swap_prefix(real: &str, from: &str, to: &str) -> String {
    let body = &real[from.len()..real.len() - 6];
    with_checksum(format!("{to}{body}"))
}

#[tokio::test]
async fn a_wrong_secret_first_does_not_lock_the_owner_out() {
    let f = fixture();
    let key = f.issue("alice").await;
    let v = f.fresh_verifier();
    assert_eq!(
        reason(v.verify(&forge(key.token.expose_secret())).await),
        RejectReason::WrongSecret
    );
    // Before the secret check, this answered "throttled" for a second.
    v.verify(key.token.expose_secret()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_is_served_during_and_after_a_flood_of_wrong_secrets() {
    let f = fixture();
    let key = f.issue("alice").await;
    let token: Arc<str> = key.token.expose_secret().into();
    let runs_before = f.hasher.runs();
    let mut owner_cold_verifications = 0;
    for _round in 0..5 {
        // A restarted instance: nothing cached.
        let v = f.fresh_verifier();
        let flood: Vec<_> = (0..4)
            .map(|_| {
                let (v, t) = (v.clone(), token.clone());
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let forged = forge(&t);
                        assert_eq!(reason(v.verify(&forged).await), RejectReason::WrongSecret);
                    }
                })
            })
            .collect();
        // The owner, in the middle of the flood, on the uncached instance.
        let ctx = v
            .verify(&token)
            .await
            .expect("owner refused during a flood");
        assert_eq!(ctx.key_id(), Some(key.record.id));
        owner_cold_verifications += 1;
        for t in flood {
            t.await.unwrap();
        }
        // And right after it.
        v.verify(&token).await.expect("owner refused after a flood");
    }
    // After the flood, on yet another fresh instance, right after a wrong secret.
    let v = f.fresh_verifier();
    assert!(v.verify(&forge(&token)).await.is_err());
    v.verify(&token).await.unwrap();
    owner_cold_verifications += 1;
    // 2,000+ wrong secrets cost no argon2: only the owner's cold verifications ran.
    assert_eq!(f.hasher.runs() - runs_before, owner_cold_verifications);
}

#[tokio::test]
async fn a_wrong_secret_costs_no_argon2_and_after_the_first_no_store_read() {
    let f = fixture();
    let key = f.issue("alice").await;
    let v = f.fresh_verifier();
    let (runs, gets) = (f.hasher.runs(), f.store.gets());
    for _ in 0..50 {
        assert_eq!(
            reason(v.verify(&forge(key.token.expose_secret())).await),
            RejectReason::WrongSecret
        );
    }
    assert_eq!(f.hasher.runs(), runs, "no argon2 for wrong secrets");
    assert_eq!(f.store.gets() - gets, 1, "the check is remembered");
}

#[tokio::test]
async fn legacy_records_keep_working_and_move_to_the_check_on_success() {
    let f = fixture();
    let key = f.issue_legacy("alice").await;
    let token = key.token.expose_secret();
    let v = f.fresh_verifier();
    // Without a check, the old per-id backoff still protects the CPU.
    assert_eq!(
        reason(v.verify(&forge(token)).await),
        RejectReason::WrongSecret
    );
    assert_eq!(
        reason(v.verify(&forge(token)).await),
        RejectReason::Throttled
    );
    f.clock.advance(Duration::from_secs(2));
    v.verify(token).await.unwrap();
    // The successful verification re-hashes with the current parameters and fills the check.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = f.store.inner().get(key.record.id).await.unwrap().unwrap();
        if r.check.is_some() && !f.hasher.needs_rehash(&r.hash) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record not migrated"
        );
        tokio::task::yield_now().await;
    }
    // Migrated: wrong secrets are refused without argon2 and never throttle the owner.
    let v = f.fresh_verifier();
    let runs = f.hasher.runs();
    for _ in 0..10 {
        assert_eq!(
            reason(v.verify(&forge(token)).await),
            RejectReason::WrongSecret
        );
    }
    assert_eq!(f.hasher.runs(), runs);
    v.verify(token).await.unwrap();
}

#[tokio::test]
async fn the_password_grade_default_of_old_records_is_rehashed_to_the_current_one() {
    let current = SecretHasher::default();
    assert_eq!(current.params(), HashParams::RANDOM_SECRET);
    let old = SecretHasher::new(HashParams::OWASP_PASSWORD).unwrap();
    let phc = old.hash(&[3; 32]).await.unwrap();
    assert!(
        current.needs_rehash(&phc),
        "weaker or stronger, records move to the configured parameters"
    );
    assert!(!current.needs_rehash(&current.hash(&[3; 32]).await.unwrap()));
}

#[tokio::test]
async fn the_prefix_is_bound_to_the_stored_key() {
    let store = Arc::new(MemoryKeyStore::new());
    let hasher = SecretHasher::for_tests();
    let test_prefix = TokenPrefix::new("sk_test_").unwrap();
    let live_prefix = TokenPrefix::new("sk_live_").unwrap();
    let issuer = KeyIssuer::new(store.clone(), hasher.clone(), test_prefix.clone());
    let key = issuer
        .issue(NewKey::new(
            Principal::user("dev"),
            "test",
            ScopeSet::empty(),
        ))
        .await
        .unwrap();
    let as_live = swap_prefix(key.token.expose_secret(), "sk_test_", "sk_live_");
    assert!(
        ParsedToken::parse(&as_live).is_ok(),
        "well formed, checksum holds"
    );
    let verifier = || {
        Verifier::builder(store.clone())
            .hasher(hasher.clone())
            .prefix(test_prefix.clone())
            .prefix(live_prefix.clone())
            .build()
    };
    // Uncached: refused before argon2.
    let v = verifier();
    let runs = hasher.runs();
    assert!(v.verify(&as_live).await.is_err());
    assert_eq!(hasher.runs(), runs);
    // Cached under its real prefix: still refused under the other.
    v.verify(key.token.expose_secret()).await.unwrap();
    assert!(v.verify(&as_live).await.is_err());

    // Records from before the check are bound through their hint.
    let key = issuer
        .issue(NewKey::new(
            Principal::user("dev"),
            "old",
            ScopeSet::empty(),
        ))
        .await
        .unwrap();
    let mut record = key.record.clone();
    record.check = None;
    let store2 = Arc::new(MemoryKeyStore::new());
    store2.insert(&record).await.unwrap();
    let v = Verifier::builder(store2)
        .hasher(hasher.clone())
        .prefix(test_prefix)
        .prefix(live_prefix)
        .build();
    let as_live = swap_prefix(key.token.expose_secret(), "sk_test_", "sk_live_");
    assert_eq!(reason(v.verify(&as_live).await), RejectReason::WrongPrefix);
    v.verify(key.token.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn a_huge_grace_period_saturates_instead_of_overflowing() {
    let f = fixture();
    let key = f.issue("alice").await;
    let new = f
        .issuer
        .rotate(key.record.id, Duration::MAX)
        .await
        .expect("no panic, no error");
    let old = f.store.inner().get(key.record.id).await.unwrap().unwrap();
    let ends = old.revoked_at.unwrap();
    assert_eq!(ends.year(), 9999);
    assert_eq!(old.replaced_by, Some(new.record.id));
    // Both keys work.
    let v = f.fresh_verifier();
    v.verify(key.token.expose_secret()).await.unwrap();
    v.verify(new.token.expose_secret()).await.unwrap();
    // A grace just past the end of time saturates too.
    let key = f.issue("bob").await;
    f.issuer
        .rotate(key.record.id, Duration::from_secs(400 * 365 * 86_400 * 25))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_resync_costs_no_argon2_for_cached_keys_and_closes_no_healthy_connection() {
    let f = fixture();
    let v = f.fresh_verifier();
    let healthy = [f.issue("a").await, f.issue("b").await];
    let revoked_elsewhere = f.issue("c").await;
    for k in healthy.iter().chain([&revoked_elsewhere]) {
        v.verify(k.token.expose_secret()).await.unwrap();
    }
    let mut open: Vec<_> = healthy
        .iter()
        .map(|k| Box::pin(v.key_ended(k.record.id)))
        .collect();
    let ended_elsewhere = v.key_ended(revoked_elsewhere.record.id);
    for c in &mut open {
        assert!(c.now_or_never().is_none());
    }
    let (runs, gets) = (f.hasher.runs(), f.store.gets());

    // Another instance revokes a key; this one misses the notification,
    // then its feed resynchronises (a reconnect, a missed heartbeat, a
    // payload it does not understand).
    f.store.set_silent(true);
    f.issuer.revoke(revoked_elsewhere.record.id).await.unwrap();
    f.store.changes().publish(&KeyChange::All);

    // Cached keys are confirmed against the store: one read each, no argon2.
    for k in &healthy {
        v.verify(k.token.expose_secret()).await.unwrap();
        v.verify(k.token.expose_secret()).await.unwrap();
    }
    assert_eq!(
        reason(v.verify(revoked_elsewhere.token.expose_secret()).await),
        RejectReason::Revoked
    );
    assert_eq!(f.hasher.runs(), runs, "a resync costs no argon2");
    assert_eq!(
        f.store.gets() - gets,
        3,
        "one confirmation read per cached key"
    );
    assert_eq!(v.cached_keys(), 2, "the revoked key left the cache");

    // The connection of the revoked key closes; healthy ones stay open
    // (re-checks are spread over a few seconds: let them all run).
    tokio::time::timeout(Duration::from_secs(60), ended_elsewhere)
        .await
        .expect("the revoked key's connection stays open");
    for c in open {
        assert!(
            tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .is_err(),
            "a healthy connection was closed by a resync"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_blip_during_a_resync_does_not_close_healthy_connections() {
    let f = fixture();
    let v = f.fresh_verifier();
    let key = f.issue("a").await;
    v.verify(key.token.expose_secret()).await.unwrap();
    let mut ended = Box::pin(v.key_ended(key.record.id));
    assert!((&mut ended).now_or_never().is_none());
    // The store is down when the resync happens, back a moment later.
    f.store.set_reads_down(true);
    f.store.changes().publish(&KeyChange::All);
    let store = f.store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.set_reads_down(false);
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(60), ended)
            .await
            .is_err(),
        "a short store outage closed a healthy connection"
    );
}

/// The cache is keyed by the key id field as the token spells it, without
/// decoding it: a cached key's token with that field changed must never be
/// served from the cache, whatever the field now spells.
#[tokio::test]
async fn an_altered_key_id_field_never_hits_the_cache() {
    let f = fixture();
    let (key, other) = (f.issue("alice").await, f.issue("bob").await);
    let v = f.fresh_verifier();
    for k in [&key, &other] {
        v.verify(k.token.expose_secret()).await.unwrap();
    }
    let real = key.token.expose_secret();
    let id_at = "st_".len();
    let with_field = |field: &str| {
        let body = format!("st_{field}{}", &real[id_at + 11..real.len() - 6]);
        with_checksum(body)
    };
    let other_id = other.record.id.to_string();
    let cases = [
        // Not base62: no id at all.
        (with_field("-0000000000"), RejectReason::Malformed),
        // Base62, but above the largest id.
        (with_field("zzzzzzzzzzz"), RejectReason::Malformed),
        // Another cached key's id with this key's secret.
        (with_field(&other_id), RejectReason::WrongSecret),
    ];
    for (token, want) in cases {
        assert_eq!(reason(v.verify(&token).await), want, "{token}");
        if let Some(cached) = v.verify_cached_bytes(token.as_bytes(), None) {
            assert_eq!(reason(cached), want, "{token} (synchronous path)");
        }
    }
    // Both keys are still served.
    for k in [&key, &other] {
        v.verify(k.token.expose_secret()).await.unwrap();
    }
}
