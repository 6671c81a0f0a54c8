//! The cases, one public async function each, against the store and
//! audit log of a [`StoreUnderTest`]. Run them all with
//! [`key_store_conformance!`](crate::key_store_conformance), or call one.
//! Each case starts from an empty store, so each needs its own.

use std::{net::IpAddr, sync::Arc, time::Duration};

use auth_core::*;
use auth_core::{
    audit::AuditOutcome, audit::AuditQuery, audit::UsageBucket, audit::UsageQuery,
    expiry_notice::ExpiryNotifier, expiry_notice::NoticeError, policy::CreditSpend,
    policy::KeyPolicy, response::ErrorFormat, store::KeyChange, store::KeyCursor,
    store::KeyMetadata, store::KeyQuery, store::KeyState, store::KeyUpdate, store::KeyUse,
    store::StateFilter, store::StoreError, store::DEFAULT_EXPIRING_WITHIN, token::SecretCheck,
};

use super::*;
use crate::{fixtures::*, stores::Recorder};

/// The administrators' listing: every filter, alone, and pages that
/// together hold every key once, newest first.
pub async fn list_keys_filters_and_pages(b: &StoreUnderTest) {
    let day = time::Duration::days(1);
    let hour = time::Duration::hours(1);
    let mut a = record("alice", T0 - day * 5);
    a.last_used_at = Some(T0 - day);
    let mut bob = record("bob", T0 - day * 4);
    bob.revoked_at = Some(T0 - hour);
    let mut carol = record("carol", T0 - day * 3);
    carol.owner = Principal::in_org("carol", "globex");
    carol.expires_at = Some(T0 - hour);
    let mut disabled = record("alice", T0 - day * 2);
    disabled.disabled_at = Some(T0 - day);
    let mut made = record("alice", T0 - day);
    made.created_by = Some(a.id);
    for r in [&a, &bob, &carol, &disabled, &made] {
        b.keys.insert(r).await.unwrap();
    }
    let list = |q: KeyQuery| {
        let keys = b.keys.clone();
        async move {
            let limit = if q.limit == 0 { 100 } else { q.limit };
            let page = keys.list_keys(&q.limit(limit), T0).await.unwrap();
            (
                page.keys.into_iter().map(|r| r.id).collect::<Vec<_>>(),
                page.next,
            )
        }
    };
    let all = [made.id, disabled.id, carol.id, bob.id, a.id];
    assert_eq!(list(KeyQuery::default()).await.0, all);
    assert_eq!(
        list(KeyQuery::default().owner("alice")).await.0,
        [made.id, disabled.id, a.id]
    );
    assert_eq!(list(KeyQuery::default().org("globex")).await.0, [carol.id]);
    for (state, want) in [
        (StateFilter::Active, vec![made.id, a.id]),
        (StateFilter::Revoked, vec![bob.id]),
        (StateFilter::Expired, vec![carol.id]),
        (StateFilter::Disabled, vec![disabled.id]),
    ] {
        let q = KeyQuery::default().state(state);
        assert_eq!(list(q).await.0, want, "{state:?}");
    }
    assert_eq!(
        list(KeyQuery::default().last_used_before(T0 - day * 2))
            .await
            .0,
        [made.id, disabled.id, carol.id, bob.id],
        "never used keys count as unused"
    );
    assert_eq!(
        list(KeyQuery::default().created_by(a.id)).await.0,
        [made.id]
    );
    // Filters combine.
    assert_eq!(
        list(
            KeyQuery::default()
                .owner("alice")
                .state(StateFilter::Active)
                .org("acme")
        )
        .await
        .0,
        [made.id, a.id]
    );

    // Pages of two, the cursor through its text form.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (ids, next) = list(KeyQuery::default().after(after).limit(2)).await;
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match next {
            Some(c) => after = Some(c.to_string().parse::<KeyCursor>().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, all);
}

/// Keys expiring soon are found once each, soonest first; revoked and
/// already noticed ones are not; a notice is remembered only once the
/// listener took it, and a new notifier (a restart) does not repeat it.
pub async fn expiry_notices(b: &StoreUnderTest) {
    let day = time::Duration::days(1);
    let expiring = |days: i64| {
        let mut r = record("nora", T0 - day);
        r.expires_at = Some(T0 + time::Duration::days(days));
        r
    };
    let soon = expiring(3);
    let later = expiring(6);
    let outside = expiring(10);
    let mut revoked_first = expiring(2);
    revoked_first.revoked_at = Some(T0 + day);
    let mut rotated_after = expiring(4);
    rotated_after.revoked_at = Some(T0 + day * 5);
    let expired = expiring(-1);
    let mut forever = record("nora", T0);
    forever.expires_at = None;
    for r in [
        &soon,
        &later,
        &outside,
        &revoked_first,
        &rotated_after,
        &expired,
        &forever,
    ] {
        b.keys.insert(r).await.unwrap();
    }
    let ids = |v: Vec<KeyRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let until = T0 + day * 7;
    assert_eq!(
        ids(b
            .keys
            .expiring_unnoticed(T0, None, until, 100)
            .await
            .unwrap()),
        [soon.id, rotated_after.id, later.id]
    );
    assert_eq!(
        ids(b.keys.expiring_unnoticed(T0, None, until, 1).await.unwrap()),
        [soon.id]
    );
    assert!(b
        .keys
        .mark_expiry_noticed(soon.id, soon.expires_at.unwrap())
        .await
        .unwrap());
    assert!(!b
        .keys
        .mark_expiry_noticed(KeyId::random(), T0)
        .await
        .unwrap());
    assert_eq!(
        ids(b
            .keys
            .expiring_unnoticed(T0, None, until, 100)
            .await
            .unwrap()),
        [rotated_after.id, later.id]
    );
    // Noticed for another expiry (it was moved): due again.
    assert!(b
        .keys
        .mark_expiry_noticed(later.id, T0 + day * 9)
        .await
        .unwrap());
    assert_eq!(
        ids(b
            .keys
            .expiring_unnoticed(T0, None, until, 100)
            .await
            .unwrap()),
        [rotated_after.id, later.id]
    );

    // The notifier, with a listener that refuses: nothing is remembered.
    let clock = Arc::new(FakeClock::new(T0));
    let refusing = ExpiryNotifier::new(b.keys.clone(), |_key: KeyMetadata| async {
        Err::<(), NoticeError>("mail server down".into())
    })
    .clock(clock.clone());
    let pass = refusing.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.failed), (0, 2));

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = {
        let seen = seen.clone();
        move |key: KeyMetadata| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(key.id);
                Ok::<(), NoticeError>(())
            }
        }
    };
    let notifier = ExpiryNotifier::new(b.keys.clone(), listener.clone()).clock(clock.clone());
    assert_eq!(notifier.run_once().await.unwrap().delivered, 2);
    assert_eq!(notifier.run_once().await.unwrap().delivered, 0);
    // A new notifier on the same store, as after a restart: nothing again.
    let restarted = ExpiryNotifier::new(b.keys.clone(), listener).clock(clock.clone());
    assert_eq!(restarted.run_once().await.unwrap().delivered, 0);
    assert_eq!(*seen.lock().unwrap(), [rotated_after.id, later.id]);

    // Five days on, the ten-day key is within the week.
    clock.advance(Duration::from_secs(5 * 86_400));
    assert_eq!(restarted.run_once().await.unwrap().delivered, 1);
    assert_eq!(seen.lock().unwrap().last(), Some(&outside.id));
}

/// More keys than one store batch whose notices always fail, all
/// expiring at the same instant, ahead of one that works: the pass moves
/// past them (a `(expires_at, id)` cursor) and delivers it; the failing
/// ones are tried again on every pass.
pub async fn failing_expiry_notices_do_not_block_later_ones(b: &StoreUnderTest) {
    let day = time::Duration::days(1);
    let expiring = |at: OffsetDateTime| {
        let mut r = record("nora", T0 - day);
        r.expires_at = Some(at);
        r
    };
    let mut poisoned = std::collections::HashSet::new();
    for _ in 0..130 {
        let r = expiring(T0 + day * 2);
        poisoned.insert(r.id);
        b.keys.insert(&r).await.unwrap();
    }
    let good = expiring(T0 + day * 3);
    b.keys.insert(&good).await.unwrap();

    // The cursor includes keys at the same instant after its id only.
    let until = T0 + day * 7;
    let first = b
        .keys
        .expiring_unnoticed(T0, None, until, 100)
        .await
        .unwrap();
    assert_eq!(first.len(), 100);
    let last = first.last().unwrap();
    let rest = b
        .keys
        .expiring_unnoticed(last.expires_at.unwrap(), Some(last.id), until, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 31);
    assert_eq!(rest.last().unwrap().id, good.id);
    assert!(rest.iter().all(|r| first.iter().all(|f| f.id != r.id)));

    let poisoned = Arc::new(poisoned);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = {
        let (poisoned, seen) = (poisoned.clone(), seen.clone());
        move |key: KeyMetadata| {
            let (poisoned, seen) = (poisoned.clone(), seen.clone());
            async move {
                if poisoned.contains(&key.id) {
                    return Err::<(), NoticeError>("mailbox rejected".into());
                }
                seen.lock().unwrap().push(key.id);
                Ok(())
            }
        }
    };
    let clock = Arc::new(FakeClock::new(T0));
    let notifier = ExpiryNotifier::new(b.keys.clone(), listener).clock(clock.clone());
    let pass = notifier.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.failed), (1, 130));
    assert_eq!(*seen.lock().unwrap(), [good.id]);
    // Next pass: the failing ones are retried, the delivered one is not.
    clock.advance(Duration::from_secs(3600));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.failed), (0, 130));
}

/// Case: insert and get.
pub async fn insert_and_get(b: &StoreUnderTest) {
    let changes = Recorder::subscribe(&*b.keys);
    let mut r = record("alice", T0);
    r.owner = Principal::user("alice");
    r.expires_at = None;
    b.keys.insert(&r).await.unwrap();
    assert_eq!(b.keys.get(r.id).await.unwrap(), Some(r.clone()));
    assert!(changes.seen().contains(&KeyChange::Updated(r.id)));

    let mut full = record("alice", T0);
    full.revoked_at = Some(T0 + time::Duration::hours(1));
    full.last_used_at = Some(T0 + time::Duration::microseconds(1));
    full.replaced_by = Some(KeyId::random());
    // The largest check survives the round trip (stored as an integer).
    full.check = Some(SecretCheck::from_u32(u32::MAX));
    full.created_by = Some(KeyId::random());
    b.keys.insert(&full).await.unwrap();
    assert_eq!(b.keys.get(full.id).await.unwrap(), Some(full.clone()));

    assert_eq!(b.keys.get(KeyId::random()).await.unwrap(), None);
    assert!(matches!(
        b.keys.insert(&r).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Case: list by owner newest first.
pub async fn list_by_owner_newest_first(b: &StoreUnderTest) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = record("alice", T0 + time::Duration::seconds(i));
        b.keys.insert(&r).await.unwrap();
        ids.push(r.id);
    }
    b.keys.insert(&record("bob", T0)).await.unwrap();
    let listed: Vec<KeyId> = b
        .keys
        .list_by_owner("alice")
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert_eq!(b.keys.list_by_owner("bob").await.unwrap().len(), 1);
    assert!(b.keys.list_by_owner("carol").await.unwrap().is_empty());
}

/// Case: revoke keeps the earliest time.
pub async fn revoke_keeps_the_earliest_time(b: &StoreUnderTest) {
    let r = record("alice", T0);
    b.keys.insert(&r).await.unwrap();
    let changes = Recorder::subscribe(&*b.keys);
    let at = |m| Some(T0 + time::Duration::minutes(m));

    assert!(b
        .keys
        .revoke(r.id, T0 + time::Duration::minutes(5))
        .await
        .unwrap());
    assert_eq!(b.keys.get(r.id).await.unwrap().unwrap().revoked_at, at(5));
    assert!(changes.seen().contains(&KeyChange::Revoked(r.id)));

    assert!(b
        .keys
        .revoke(r.id, T0 + time::Duration::minutes(9))
        .await
        .unwrap());
    assert_eq!(b.keys.get(r.id).await.unwrap().unwrap().revoked_at, at(5));
    assert!(b
        .keys
        .revoke(r.id, T0 + time::Duration::minutes(2))
        .await
        .unwrap());
    assert_eq!(b.keys.get(r.id).await.unwrap().unwrap().revoked_at, at(2));

    assert!(!b.keys.revoke(KeyId::random(), T0).await.unwrap());
}

/// Case: rotate without grace.
pub async fn rotate_without_grace(b: &StoreUnderTest) {
    let (issuer, verifier, _clock) = issuing(&b.keys);
    let old = issuer.issue(new_key("alice")).await.unwrap();
    verifier.verify(old.token.expose_secret()).await.unwrap();

    let new = issuer.rotate(old.record.id, Duration::ZERO).await.unwrap();
    assert_eq!(
        reason(verifier.verify(old.token.expose_secret()).await),
        RejectReason::Revoked
    );
    let ctx = verifier.verify(new.token.expose_secret()).await.unwrap();
    assert_eq!(ctx.key_id(), Some(new.record.id));

    let stored = b.keys.get(old.record.id).await.unwrap().unwrap();
    assert_eq!(stored.replaced_by, Some(new.record.id));
    assert_eq!(stored.revoked_at, Some(T0));
    // (last_used_at may already have been written by the verifier.)
    let stored_new = b.keys.get(new.record.id).await.unwrap().unwrap();
    assert_eq!(
        {
            let mut k = stored_new;
            k.last_used_at = None;
            k
        },
        new.record
    );
}

/// Case: created by is kept.
pub async fn created_by_is_kept(b: &StoreUnderTest) {
    let (issuer, _verifier, _clock) = issuing(&b.keys);
    let cli = issuer.issue(new_key("alice")).await.unwrap();
    assert_eq!(cli.record.created_by, None);
    let minted = issuer
        .issue(new_key("alice").created_by(cli.record.id))
        .await
        .unwrap();
    assert_eq!(minted.record.created_by, Some(cli.record.id));
    let stored = b.keys.get(minted.record.id).await.unwrap().unwrap();
    assert_eq!(stored.created_by, Some(cli.record.id));
    assert_eq!(stored.metadata().created_by, Some(cli.record.id));

    // A rotation records who rotated: the calling key, or nobody.
    let rotated = issuer
        .rotate_by(minted.record.id, Duration::ZERO, Some(minted.record.id))
        .await
        .unwrap();
    let stored = b.keys.get(rotated.record.id).await.unwrap().unwrap();
    assert_eq!(stored.created_by, Some(minted.record.id));
    let by_cli = issuer.rotate(cli.record.id, Duration::ZERO).await.unwrap();
    let stored = b.keys.get(by_cli.record.id).await.unwrap().unwrap();
    assert_eq!(stored.created_by, None);
    let listed = b.keys.list_by_owner("alice").await.unwrap();
    assert!(listed
        .iter()
        .any(|r| r.id == rotated.record.id && r.created_by == Some(minted.record.id)));
}

/// Case: rotate with grace.
pub async fn rotate_with_grace(b: &StoreUnderTest) {
    let (issuer, verifier, clock) = issuing(&b.keys);
    let old = issuer.issue(new_key("alice")).await.unwrap();
    let new = issuer
        .rotate(old.record.id, Duration::from_secs(60))
        .await
        .unwrap();

    verifier.verify(old.token.expose_secret()).await.unwrap();
    verifier.verify(new.token.expose_secret()).await.unwrap();
    assert_eq!(
        b.keys.get(old.record.id).await.unwrap().unwrap().revoked_at,
        Some(T0 + time::Duration::seconds(60))
    );

    clock.advance(Duration::from_secs(61));
    assert_eq!(
        reason(verifier.verify(old.token.expose_secret()).await),
        RejectReason::Revoked
    );
    verifier.verify(new.token.expose_secret()).await.unwrap();
    // A key in its grace period cannot be rotated again.
    assert!(matches!(
        issuer.rotate(old.record.id, Duration::ZERO).await,
        Err(IssueError::Conflict(_))
    ));
}

/// Case: rotate refusals change nothing.
pub async fn rotate_refusals_change_nothing(b: &StoreUnderTest) {
    let now = T0 + time::Duration::hours(1);
    let replacement = record("alice", now);
    let refused =
        |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");

    let unknown = b.keys.rotate(KeyId::random(), now, now, &replacement).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)));

    let revoked = record("alice", T0);
    b.keys.insert(&revoked).await.unwrap();
    b.keys.revoke(revoked.id, T0).await.unwrap();
    refused(b.keys.rotate(revoked.id, now, now, &replacement).await);

    let mut expired = record("alice", T0);
    expired.expires_at = Some(now);
    b.keys.insert(&expired).await.unwrap();
    refused(b.keys.rotate(expired.id, now, now, &replacement).await);

    let rotated = record("alice", T0);
    b.keys.insert(&rotated).await.unwrap();
    let first = record("alice", now);
    b.keys
        .rotate(rotated.id, now + time::Duration::hours(1), now, &first)
        .await
        .unwrap();
    refused(b.keys.rotate(rotated.id, now, now, &replacement).await);
    assert_eq!(
        b.keys.get(rotated.id).await.unwrap().unwrap().replaced_by,
        Some(first.id)
    );

    // A new id that already exists is refused too, and the old key is untouched.
    let live = record("alice", T0);
    b.keys.insert(&live).await.unwrap();
    refused(b.keys.rotate(live.id, now, now, &first).await);
    assert_eq!(b.keys.get(live.id).await.unwrap(), Some(live.clone()));

    assert_eq!(b.keys.get(replacement.id).await.unwrap(), None);
}

/// Case: expiry.
pub async fn expiry(b: &StoreUnderTest) {
    let (issuer, verifier, clock) = issuing(&b.keys);
    let expires = T0 + time::Duration::hours(1);
    let key = issuer
        .issue(new_key("alice").expires_at(expires))
        .await
        .unwrap();
    assert_eq!(
        b.keys.get(key.record.id).await.unwrap().unwrap().expires_at,
        Some(expires)
    );
    verifier.verify(key.token.expose_secret()).await.unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        reason(verifier.verify(key.token.expose_secret()).await),
        RejectReason::Expired
    );
    // A fresh verifier (cold cache) reads the expiry from the store.
    let (_, cold, cold_clock) = issuing(&b.keys);
    cold_clock.advance(Duration::from_secs(3600));
    assert_eq!(
        reason(cold.verify(key.token.expose_secret()).await),
        RejectReason::Expired
    );
}

/// Case: last used.
pub async fn last_used(b: &StoreUnderTest) {
    let (x, y) = (record("alice", T0), record("alice", T0));
    b.keys.insert(&x).await.unwrap();
    b.keys.insert(&y).await.unwrap();
    let t = |s| T0 + time::Duration::seconds(s);
    b.keys
        .record_use(&[
            KeyUse::new(x.id, t(20)),
            KeyUse::new(y.id, t(10)),
            KeyUse::new(x.id, t(15)),
            KeyUse::new(KeyId::random(), t(5)),
        ])
        .await
        .unwrap();
    assert_eq!(
        b.keys.get(x.id).await.unwrap().unwrap().last_used_at,
        Some(t(20))
    );
    assert_eq!(
        b.keys.get(y.id).await.unwrap().unwrap().last_used_at,
        Some(t(10))
    );
    // Older reports never move it back.
    b.keys.record_use(&[KeyUse::new(x.id, t(1))]).await.unwrap();
    assert_eq!(
        b.keys.get(x.id).await.unwrap().unwrap().last_used_at,
        Some(t(20))
    );
    b.keys.record_use(&[]).await.unwrap();

    // Through the verifier: batched, written on flush.
    let (issuer, verifier, clock) = issuing(&b.keys);
    let key = issuer.issue(new_key("bob")).await.unwrap();
    clock.advance(Duration::from_secs(7));
    verifier.verify(key.token.expose_secret()).await.unwrap();
    verifier.flush_usage().await;
    assert_eq!(
        b.keys
            .get(key.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(t(7))
    );
}

/// Case: concurrent rotations exactly one wins.
pub async fn concurrent_rotations_exactly_one_wins(b: &StoreUnderTest) {
    let (issuer, verifier, _clock) = issuing(&b.keys);
    let key = issuer.issue(new_key("alice")).await.unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let issuer = issuer.clone();
            tokio::spawn(async move { issuer.rotate(key.record.id, Duration::ZERO).await })
        })
        .collect();
    let mut winners = Vec::new();
    for a in attempts {
        match a.await.unwrap() {
            Ok(new) => winners.push(new),
            Err(IssueError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let winner = &winners[0];
    assert_eq!(
        b.keys
            .get(key.record.id)
            .await
            .unwrap()
            .unwrap()
            .replaced_by,
        Some(winner.record.id)
    );
    // The losers' keys were never stored.
    assert_eq!(b.keys.list_by_owner("alice").await.unwrap().len(), 2);
    verifier.verify(winner.token.expose_secret()).await.unwrap();
}

/// Case: update hash.
pub async fn update_hash(b: &StoreUnderTest) {
    let r = record("alice", T0);
    b.keys.insert(&r).await.unwrap();
    b.keys
        .update_hash(r.id, "$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3")
        .await
        .unwrap();
    assert_eq!(
        b.keys.get(r.id).await.unwrap().unwrap().hash,
        "$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3"
    );
    assert!(matches!(
        b.keys.update_hash(KeyId::random(), "x").await,
        Err(StoreError::NotFound)
    ));
}

/// Case: update hash and check.
pub async fn update_hash_and_check(b: &StoreUnderTest) {
    let changes = Recorder::subscribe(&*b.keys);
    let r = record("alice", T0);
    b.keys.insert(&r).await.unwrap();
    let check = SecretCheck::from_u32(0x8000_0001);
    b.keys
        .update_hash_and_check(r.id, "$argon2id$v=19$m=256,t=1,p=1$bmV3$bmV3", check)
        .await
        .unwrap();
    let stored = b.keys.get(r.id).await.unwrap().unwrap();
    assert_eq!(stored.hash, "$argon2id$v=19$m=256,t=1,p=1$bmV3$bmV3");
    assert_eq!(stored.check, Some(check));
    assert!(matches!(
        b.keys
            .update_hash_and_check(KeyId::random(), "x", check)
            .await,
        Err(StoreError::NotFound)
    ));
    // The secret did not change: nothing to tell caches.
    assert_eq!(changes.seen(), vec![KeyChange::Updated(r.id)]);
}

/// The activity chart's counts: per hour or day, by outcome, only the
/// key asked for, only since the start of `since`'s bucket.
pub async fn audit_usage_per_bucket(b: &StoreUnderTest) {
    let (a, other) = (KeyId::random(), KeyId::random());
    let at = |minutes: i64, outcome, reason| {
        let mut e = audit_event(
            Some(a),
            Some("alice"),
            T0 + time::Duration::minutes(minutes),
        );
        e.outcome = outcome;
        e.reason = reason;
        e.status = Some(if outcome == AuditOutcome::Success {
            200
        } else {
            401
        });
        e
    };
    use AuditOutcome::{Failure, Success};
    b.audit.record(at(-90, Success, None)); // the day before: outside
    b.audit.record(at(5, Success, None)); // 00:05
    b.audit.record(at(59, Success, None)); // 00:59
    b.audit
        .record(at(30, Failure, Some(RejectReason::WrongSecret)));
    b.audit.record(at(30, Failure, None));
    b.audit
        .record(at(60, Failure, Some(RejectReason::RateLimited))); // 01:00
    b.audit.record(at(60 * 26, Success, None)); // next day, 02:00
    b.audit.record(audit_event(
        Some(other),
        Some("bob"),
        T0 + time::Duration::minutes(10),
    ));
    b.audit.flush().await.unwrap();

    let hours = b
        .audit
        .usage(&UsageQuery::new(
            a,
            T0 + time::Duration::minutes(20), // the 00:00 bucket counts whole
            UsageBucket::Hour,
        ))
        .await
        .unwrap();
    let h = time::Duration::HOUR;
    assert_eq!(
        hours,
        [
            count(T0, 2, 2, 0),
            count(T0 + h, 0, 0, 1),
            count(T0 + h * 26, 1, 0, 0),
        ]
    );
    let days = b
        .audit
        .usage(&UsageQuery::new(
            a,
            T0 - time::Duration::days(1),
            UsageBucket::Day,
        ))
        .await
        .unwrap();
    assert_eq!(
        days,
        [
            count(T0 - time::Duration::DAY, 1, 0, 0),
            count(T0, 2, 2, 1),
            count(T0 + time::Duration::DAY, 1, 0, 0),
        ]
    );
    let none = b
        .audit
        .usage(&UsageQuery::new(KeyId::random(), T0, UsageBucket::Day))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Case: audit query and purge.
pub async fn audit_query_and_purge(b: &StoreUnderTest) {
    let (a, other) = (KeyId::random(), KeyId::random());
    for i in 0..7 {
        b.audit.record(audit_event(
            Some(a),
            Some("alice"),
            T0 + time::Duration::minutes(i),
        ));
    }
    let mut full = audit_event(Some(other), Some("bob"), T0 + time::Duration::days(2));
    full.subject = Some("stu1".into());
    full.outcome = AuditOutcome::Failure;
    full.reason = Some(RejectReason::InsufficientScope);
    full.method = http::Method::POST;
    full.status = Some(403);
    full.client_ip = Some("2001:db8::1".parse().unwrap());
    full.user_agent = None;
    full.created_key = Some(KeyId::random());
    b.audit.record(full.clone());
    for i in 0..2 {
        b.audit.record(audit_event(
            None,
            None,
            T0 + time::Duration::days(3) + time::Duration::seconds(i),
        ));
    }
    b.audit.flush().await.unwrap();

    // By key, newest first, three per page.
    let q = AuditQuery::default().key_id(a).limit(3);
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = b.audit.query(&q.clone().before(cursor)).await.unwrap();
        pages.push(page.events.len());
        let ats: Vec<_> = page.events.iter().map(|e| e.at).collect();
        assert!(
            ats.windows(2).all(|w| w[0] > w[1]),
            "not newest first: {ats:?}"
        );
        assert!(page
            .events
            .iter()
            .all(|e| e.key_id == Some(a) && cursor.is_none_or(|c| e.id < Some(c))));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, vec![3, 3, 1]);

    // By actor: every field round-trips.
    let bob = b
        .audit
        .query(&AuditQuery::default().actor("bob").limit(10))
        .await
        .unwrap();
    assert_eq!(bob.events.len(), 1);
    assert!(bob.events[0].id.is_some());
    assert_eq!(
        {
            let mut e = bob.events[0].clone();
            e.id = None;
            e
        },
        full
    );
    assert_eq!(bob.next_cursor, None);

    let all = b
        .audit
        .query(&AuditQuery::default().limit(100))
        .await
        .unwrap();
    assert_eq!(all.events.len(), 10);
    assert_eq!(all.events[0].key_id, None);

    // Retention: everything before day 1 goes.
    let purged = b
        .audit
        .purge_before(T0 + time::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(purged, 7);
    let left = b
        .audit
        .query(&AuditQuery::default().limit(100))
        .await
        .unwrap();
    assert_eq!(left.events.len(), 3);
    assert!(b.audit.query(&q).await.unwrap().events.is_empty());
}

/// Case: policy fields round trip.
pub async fn policy_fields_round_trip(b: &StoreUnderTest) {
    let full = with_policy("alice", T0);
    b.keys.insert(&full).await.unwrap();
    assert_eq!(b.keys.get(full.id).await.unwrap(), Some(full.clone()));
    let mut unlimited_refill = record("alice", T0 + time::Duration::seconds(1));
    unlimited_refill.credits = Some(Credits::new(0, T0));
    unlimited_refill.rate_limit = Some(rate_limit(u32::MAX, u32::MAX));
    b.keys.insert(&unlimited_refill).await.unwrap();
    assert_eq!(
        b.keys.list_by_owner("alice").await.unwrap(),
        vec![unlimited_refill.clone(), full.clone()]
    );

    let listed = full.metadata_at(T0, DEFAULT_EXPIRING_WITHIN);
    assert_eq!(listed.state, KeyState::Disabled);
    assert_eq!(listed.meta, full.meta);
    assert_eq!(listed.external_id.as_deref(), Some("cust_42/é"));
    assert_eq!(listed.ip_allowlist, full.ip_allowlist);
    assert_eq!(listed.last_used_ip, full.last_used_ip);
    assert_eq!(listed.credits, full.credits);
    let json = serde_json::to_value(&listed).unwrap();
    assert_eq!(json["state"], "disabled");
    assert_eq!(json["ip_allowlist"][1], "2001:db8::/32");
    assert_eq!(
        json["rate_limit"],
        serde_json::json!({"limit": 100, "period_seconds": 60})
    );
    assert_eq!(
        json["credits"]["refill"],
        serde_json::json!({"amount": 50, "every": "month"})
    );
    assert!(json.get("hash").is_none());
}

/// Case: update changes only what is given.
pub async fn update_changes_only_what_is_given(b: &StoreUnderTest) {
    let original = record("alice", T0);
    b.keys.insert(&original).await.unwrap();
    let changes = Recorder::subscribe(&*b.keys);
    let policy = with_policy("alice", T0);
    let updates = [
        KeyUpdate::default().name("renamed"),
        KeyUpdate::default().scopes(ScopeSet::parse(["hub-protocol.read"]).unwrap()),
        KeyUpdate::default().expires_at(Some(T0 + time::Duration::days(2))),
        KeyUpdate::default().meta(policy.meta.clone()),
        KeyUpdate::default().external_id(policy.external_id.clone()),
        KeyUpdate::default().disabled_at(Some(T0 + time::Duration::seconds(9))),
        KeyUpdate::default().ip_allowlist(policy.ip_allowlist.clone()),
        KeyUpdate::default().rate_limit(policy.rate_limit),
        KeyUpdate::default().credits(policy.credits),
        // Everything cleared again in one edit.
        KeyUpdate::default()
            .expires_at(None)
            .meta(Default::default())
            .external_id(None)
            .disabled_at(None)
            .ip_allowlist(Vec::new())
            .rate_limit(None)
            .credits(None),
        KeyUpdate::default(),
    ];
    let mut expected = original.clone();
    for u in &updates {
        u.apply_to(&mut expected);
        let heard = changes.seen().len();
        let returned = b.keys.update(original.id, u).await.unwrap();
        // Published before returning (a shared store may also hear
        // its own announcement back later).
        assert!(
            changes.seen().len() > heard,
            "no change published for {u:?}"
        );
        assert_eq!(returned, expected, "after {u:?}");
        assert_eq!(
            b.keys.get(original.id).await.unwrap(),
            Some(expected.clone())
        );
    }
    assert_eq!(expected.name, "renamed");
    assert_eq!(expected.meta, Default::default());
    assert_eq!(expected.credits, None);
    assert!(changes
        .seen()
        .iter()
        .all(|c| *c == KeyChange::Updated(original.id)));
    assert!(matches!(
        b.keys.update(KeyId::random(), &updates[0]).await,
        Err(StoreError::NotFound)
    ));
}

/// Case: disabled keys are refused until enabled.
pub async fn disabled_keys_are_refused_until_enabled(b: &StoreUnderTest) {
    let (issuer, verifier, _clock) = issuing(&b.keys);
    let key = issuer.issue(new_key("alice")).await.unwrap();
    verifier.verify(key.token.expose_secret()).await.unwrap();
    let disable = KeyUpdate::default().disabled_at(Some(T0));
    let stored = b.keys.update(key.record.id, &disable).await.unwrap();
    assert_eq!(stored.disabled_at, Some(T0));
    // The very next request: the cached entry is gone.
    let err = verifier
        .verify(key.token.expose_secret())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), RejectReason::Disabled);
    assert_eq!(err.reason().as_str(), "disabled");
    // From outside, the same answer as a key that does not exist.
    let unknown = AuthError::unauthorized(RejectReason::UnknownKey);
    assert_eq!(
        ErrorFormat::Flat.render(&err).body(),
        ErrorFormat::Flat.render(&unknown).body()
    );
    assert_eq!(err.status(), unknown.status());
    // A cold verifier reads it from the store.
    let (_, cold, _) = issuing(&b.keys);
    assert_eq!(
        reason(cold.verify(key.token.expose_secret()).await),
        RejectReason::Disabled
    );
    // A disabled key cannot be rotated into a working one.
    assert!(matches!(
        issuer.rotate(key.record.id, Duration::ZERO).await,
        Err(IssueError::Conflict(_))
    ));
    let replacement = record("alice", T0);
    assert!(matches!(
        b.keys.rotate(key.record.id, T0, T0, &replacement).await,
        Err(StoreError::Conflict(_))
    ));

    let enable = KeyUpdate::default().disabled_at(None);
    b.keys.update(key.record.id, &enable).await.unwrap();
    verifier.verify(key.token.expose_secret()).await.unwrap();
    cold.verify(key.token.expose_secret()).await.unwrap();
}

/// Case: edits reach the verifiers context.
pub async fn edits_reach_the_verifiers_context(b: &StoreUnderTest) {
    let (issuer, verifier, _clock) = issuing(&b.keys);
    let key = issuer
        .issue(new_key("alice").policy(KeyPolicy::default().external_id("cust_1")))
        .await
        .unwrap();
    let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
    assert_eq!(ctx.external_id(), Some("cust_1"));
    assert!(ctx.meta().is_none() && ctx.ip_allowlist().is_empty());

    let policy = with_policy("alice", T0);
    let edit = KeyUpdate::default()
        .scopes(ScopeSet::empty())
        .meta(policy.meta.clone())
        .external_id(Some("cust_2".into()))
        .ip_allowlist(policy.ip_allowlist.clone())
        .rate_limit(policy.rate_limit)
        .credits(policy.credits);
    b.keys.update(key.record.id, &edit).await.unwrap();
    let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
    assert!(!ctx.scopes().has("read"));
    assert_eq!(ctx.external_id(), Some("cust_2"));
    assert_eq!(ctx.meta(), Some(&policy.meta));
    assert_eq!(ctx.ip_allowlist(), &policy.ip_allowlist[..]);
    assert_eq!(ctx.key_rate_limit(), policy.rate_limit);
    assert_eq!(ctx.credits(), policy.credits.as_ref());

    // A key without a policy carries none.
    let plain = issuer.issue(new_key("alice")).await.unwrap();
    let ctx = verifier.verify(plain.token.expose_secret()).await.unwrap();
    assert!(ctx.key_policy().is_none());

    // Rotation keeps the policy, and the credits as they stand.
    let rotated = issuer.rotate(key.record.id, Duration::ZERO).await.unwrap();
    assert_eq!(
        KeyPolicy::of(&rotated.record),
        KeyPolicy::of(&b.keys.get(key.record.id).await.unwrap().unwrap())
    );
    let stored = b.keys.get(rotated.record.id).await.unwrap().unwrap();
    assert_eq!(stored.credits, policy.credits);
    assert_eq!(stored.external_id.as_deref(), Some("cust_2"));
}

/// Case: last used ip comes with the latest use.
pub async fn last_used_ip_comes_with_the_latest_use(b: &StoreUnderTest) {
    let x = record("alice", T0);
    b.keys.insert(&x).await.unwrap();
    let t = |s| T0 + time::Duration::seconds(s);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    b.keys
        .record_use(&[
            KeyUse::new(x.id, t(20)).from_ip(ip("203.0.113.20")),
            KeyUse::new(x.id, t(30)).from_ip(ip("2001:db8::30")),
            KeyUse::new(x.id, t(10)).from_ip(ip("203.0.113.10")),
        ])
        .await
        .unwrap();
    let stored = b.keys.get(x.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(t(30)));
    assert_eq!(stored.last_used_ip, Some(ip("2001:db8::30")));
    // An older use never moves the address back.
    b.keys
        .record_use(&[KeyUse::new(x.id, t(25)).from_ip(ip("203.0.113.25"))])
        .await
        .unwrap();
    assert_eq!(
        b.keys.get(x.id).await.unwrap().unwrap().last_used_ip,
        Some(ip("2001:db8::30"))
    );
    // A later use without an address keeps the last known one.
    b.keys
        .record_use(&[KeyUse::new(x.id, t(40))])
        .await
        .unwrap();
    let stored = b.keys.get(x.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(t(40)));
    assert_eq!(stored.last_used_ip, Some(ip("2001:db8::30")));
    b.keys
        .record_use(&[KeyUse::new(x.id, t(50)).from_ip(ip("198.51.100.50"))])
        .await
        .unwrap();
    assert_eq!(
        b.keys.get(x.id).await.unwrap().unwrap().last_used_ip,
        Some(ip("198.51.100.50"))
    );
}

/// Case: credits spend down and refill.
pub async fn credits_spend_down_and_refill(b: &StoreUnderTest) {
    let unlimited = record("alice", T0);
    b.keys.insert(&unlimited).await.unwrap();
    assert_eq!(
        b.keys.spend_credit(unlimited.id, T0).await.unwrap(),
        CreditSpend::Unlimited
    );
    assert!(matches!(
        b.keys.spend_credit(KeyId::random(), T0).await,
        Err(StoreError::NotFound)
    ));

    let mut once = record("alice", T0);
    once.credits = Some(Credits::new(2, T0));
    b.keys.insert(&once).await.unwrap();
    let spend = |id, at| {
        let keys = b.keys.clone();
        async move { keys.spend_credit(id, at).await.unwrap() }
    };
    assert_eq!(
        spend(once.id, T0).await,
        CreditSpend::Spent { remaining: 1 }
    );
    assert_eq!(
        spend(once.id, T0).await,
        CreditSpend::Spent { remaining: 0 }
    );
    assert_eq!(spend(once.id, T0).await, CreditSpend::Exhausted);
    let later = T0 + time::Duration::days(400);
    assert_eq!(spend(once.id, later).await, CreditSpend::Exhausted);
    let stored = b.keys.get(once.id).await.unwrap().unwrap();
    assert_eq!(stored.credits, Some(Credits::new(0, T0)));

    // Daily refill: 10:30 on day one, exhausted, back at midnight.
    let t = T0 + time::Duration::minutes(630);
    let mut daily = record("alice", T0);
    daily.credits = Some(Credits::new(1, t).with_refill(Refill::new(3, RefillEvery::Day)));
    b.keys.insert(&daily).await.unwrap();
    assert_eq!(
        spend(daily.id, t).await,
        CreditSpend::Spent { remaining: 0 }
    );
    let before_midnight = T0 + time::Duration::days(1) - time::Duration::seconds(1);
    assert_eq!(
        spend(daily.id, before_midnight).await,
        CreditSpend::Exhausted
    );
    let next_day = T0 + time::Duration::days(1) + time::Duration::hours(5);
    assert_eq!(
        spend(daily.id, next_day).await,
        CreditSpend::Spent { remaining: 2 }
    );
    assert_eq!(
        spend(daily.id, next_day).await,
        CreditSpend::Spent { remaining: 1 }
    );
    let stored = b
        .keys
        .get(daily.id)
        .await
        .unwrap()
        .unwrap()
        .credits
        .unwrap();
    assert_eq!(stored.remaining, 1);
    assert_eq!(stored.refilled_at, T0 + time::Duration::days(1));
    // Hourly, weekly and monthly periods refill at their own boundaries.
    for (every, before, after) in [
        (
            RefillEvery::Hour,
            time::Duration::minutes(59),
            time::Duration::minutes(60),
        ),
        // T0 is a Thursday: the next week starts on Monday the 5th.
        (
            RefillEvery::Week,
            time::Duration::days(3),
            time::Duration::days(4),
        ),
        (
            RefillEvery::Month,
            time::Duration::days(30),
            time::Duration::days(31),
        ),
    ] {
        let mut k = record("alice", T0);
        k.credits = Some(Credits::new(0, T0).with_refill(Refill::new(5, every)));
        b.keys.insert(&k).await.unwrap();
        assert_eq!(
            spend(k.id, T0 + before).await,
            CreditSpend::Exhausted,
            "{every:?}"
        );
        assert_eq!(
            spend(k.id, T0 + after).await,
            CreditSpend::Spent { remaining: 4 },
            "{every:?}"
        );
    }
    // Spending changes nothing a verifier caches: nothing is published.
    let changes = Recorder::subscribe(&*b.keys);
    assert_eq!(
        spend(daily.id, next_day).await,
        CreditSpend::Spent { remaining: 0 }
    );
    assert!(changes.seen().is_empty());
}

/// Case: lower credits never raises and publishes nothing.
pub async fn lower_credits_never_raises_and_publishes_nothing(b: &StoreUnderTest) {
    let mut k = record("alice", T0);
    k.credits = Some(Credits::new(5, T0));
    let unlimited = record("bob", T0);
    b.keys.insert(&k).await.unwrap();
    b.keys.insert(&unlimited).await.unwrap();
    let changes = Recorder::subscribe(&*b.keys);
    let remaining = |id| {
        let keys = b.keys.clone();
        async move {
            keys.get(id)
                .await
                .unwrap()
                .unwrap()
                .credits
                .map(|c| c.remaining)
        }
    };
    b.keys.lower_credits(k.id, 3).await.unwrap();
    assert_eq!(remaining(k.id).await, Some(3));
    // A stale, higher count from another instance does not raise it.
    b.keys.lower_credits(k.id, 4).await.unwrap();
    b.keys.lower_credits(k.id, u64::MAX).await.unwrap();
    assert_eq!(remaining(k.id).await, Some(3));
    // A key without credits stays unlimited.
    b.keys.lower_credits(unlimited.id, 0).await.unwrap();
    assert_eq!(remaining(unlimited.id).await, None);
    assert!(matches!(
        b.keys.lower_credits(KeyId::random(), 1).await,
        Err(StoreError::NotFound)
    ));
    assert!(changes.seen().is_empty(), "{:?}", changes.seen());
}

/// Case: take credits all or nothing and give back within the period.
pub async fn take_credits_all_or_nothing_and_give_back_within_the_period(b: &StoreUnderTest) {
    let mut k = record("alice", T0);
    k.credits = Some(Credits::new(10, T0).with_refill(Refill::new(10, RefillEvery::Day)));
    let unlimited = record("bob", T0);
    b.keys.insert(&k).await.unwrap();
    b.keys.insert(&unlimited).await.unwrap();
    let changes = Recorder::subscribe(&*b.keys);
    let remaining = |id| {
        let keys = b.keys.clone();
        async move {
            keys.get(id)
                .await
                .unwrap()
                .unwrap()
                .credits
                .unwrap()
                .remaining
        }
    };
    let at = T0 + time::Duration::minutes(1);
    assert_eq!(
        b.keys.take_credits(k.id, 4, at).await.unwrap(),
        CreditSpend::Spent { remaining: 6 }
    );
    assert_eq!(
        b.keys.take_credits(k.id, 7, at).await.unwrap(),
        CreditSpend::Exhausted
    );
    assert_eq!(remaining(k.id).await, 6, "a refused take takes nothing");
    // Unspent credits go back while the period lasts.
    assert!(b.keys.return_credits(k.id, 3, at).await.unwrap());
    assert_eq!(remaining(k.id).await, 9);
    // Refilled the next day: what was taken before stays spent.
    let next_day = T0 + time::Duration::days(1);
    assert_eq!(
        b.keys.take_credits(k.id, 2, next_day).await.unwrap(),
        CreditSpend::Spent { remaining: 8 }
    );
    assert!(!b.keys.return_credits(k.id, 5, at).await.unwrap());
    assert_eq!(remaining(k.id).await, 8);
    assert_eq!(
        b.keys.take_credits(unlimited.id, 3, at).await.unwrap(),
        CreditSpend::Unlimited
    );
    assert!(matches!(
        b.keys.take_credits(KeyId::random(), 3, at).await,
        Err(StoreError::NotFound)
    ));
    assert!(changes.seen().is_empty(), "{:?}", changes.seen());
}

/// The replacement takes the credits as they stand in the store when
/// the rotation commits, not as they stood when it was built.
pub async fn rotation_carries_credits_as_they_stand(b: &StoreUnderTest) {
    let mut old = record("alice", T0);
    old.credits = Some(Credits::new(5, T0));
    b.keys.insert(&old).await.unwrap();
    // Built from a read of the old key...
    let mut new = record("alice", T0);
    new.credits = b.keys.get(old.id).await.unwrap().unwrap().credits;
    // ...which then spends three.
    for _ in 0..3 {
        b.keys.spend_credit(old.id, T0).await.unwrap();
    }
    let now = T0 + time::Duration::minutes(1);
    b.keys.rotate(old.id, now, now, &new).await.unwrap();
    let carried = b.keys.get(new.id).await.unwrap().unwrap().credits.unwrap();
    assert_eq!(carried.remaining, 2, "spent credits came back");
    // A replacement built with fewer keeps its fewer.
    let mut newer = record("alice", T0);
    newer.credits = Some(Credits::new(1, T0));
    b.keys.rotate(new.id, now, now, &newer).await.unwrap();
    let kept = b
        .keys
        .get(newer.id)
        .await
        .unwrap()
        .unwrap()
        .credits
        .unwrap();
    assert_eq!(kept.remaining, 1);
}

/// Case: concurrent spends never overspend.
pub async fn concurrent_spends_never_overspend(b: &StoreUnderTest) {
    let mut k = record("alice", T0);
    k.credits = Some(Credits::new(5, T0));
    b.keys.insert(&k).await.unwrap();
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let keys = b.keys.clone();
            tokio::spawn(async move { keys.spend_credit(k.id, T0).await.unwrap() })
        })
        .collect();
    let mut left = Vec::new();
    let mut exhausted = 0;
    for a in attempts {
        match a.await.unwrap() {
            CreditSpend::Spent { remaining } => left.push(remaining),
            CreditSpend::Exhausted => exhausted += 1,
            CreditSpend::Unlimited => panic!("credits lost"),
        }
    }
    left.sort_unstable();
    assert_eq!(left, vec![0, 1, 2, 3, 4]);
    assert_eq!(exhausted, 11);
    assert_eq!(
        b.keys
            .get(k.id)
            .await
            .unwrap()
            .unwrap()
            .credits
            .unwrap()
            .remaining,
        0
    );
}

/// Case: edits compare and set.
pub async fn edits_compare_and_set(b: &StoreUnderTest) {
    let mut original = with_policy("alice", T0);
    original.disabled_at = None;
    b.keys.insert(&original).await.unwrap();
    let read = b.keys.get(original.id).await.unwrap().unwrap();
    // As read: applied.
    let renamed = b
        .keys
        .update(
            read.id,
            &KeyUpdate::default().name("first").if_unchanged(&read),
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "first");
    // Decided on a stale read: refused, nothing changed.
    let stale = KeyUpdate::default()
        .scopes(ScopeSet::empty())
        .if_unchanged(&read);
    assert!(matches!(
        b.keys.update(read.id, &stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(b.keys.get(read.id).await.unwrap(), Some(renamed.clone()));
    // Use (last use, credits spent) is not a change of the key.
    b.keys
        .record_use(&[KeyUse::new(read.id, T0 + time::Duration::seconds(5))])
        .await
        .unwrap();
    b.keys
        .spend_credit(read.id, T0 + time::Duration::seconds(6))
        .await
        .unwrap();
    let used = KeyUpdate::default().name("second").if_unchanged(&renamed);
    assert_eq!(b.keys.update(read.id, &used).await.unwrap().name, "second");
    // A revocation is.
    let before = b.keys.get(read.id).await.unwrap().unwrap();
    b.keys
        .revoke(read.id, T0 + time::Duration::seconds(7))
        .await
        .unwrap();
    let late = KeyUpdate::default().name("third").if_unchanged(&before);
    assert!(matches!(
        b.keys.update(read.id, &late).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        b.keys.update(KeyId::random(), &late).await,
        Err(StoreError::NotFound)
    ));

    // Of concurrent edits decided on the same read, exactly one lands.
    let key = record("bob", T0);
    b.keys.insert(&key).await.unwrap();
    let read = b.keys.get(key.id).await.unwrap().unwrap();
    let edits: Vec<_> = (0..8)
        .map(|i| {
            let keys = b.keys.clone();
            let edit = KeyUpdate::default()
                .name(format!("edit {i}"))
                .if_unchanged(&read);
            tokio::spawn(async move { keys.update(key.id, &edit).await })
        })
        .collect();
    let mut landed = Vec::new();
    for edit in edits {
        match edit.await.unwrap() {
            Ok(r) => landed.push(r.name),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(landed.len(), 1, "{landed:?}");
    let stored = b.keys.get(key.id).await.unwrap().unwrap();
    assert_eq!(stored.name, landed[0]);
}
