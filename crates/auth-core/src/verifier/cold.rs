//! The cold path: a cache miss (or a hit to confirm) read from the store,
//! checked with argon2 once per key id at a time, then cached.

use std::{
    net::IpAddr,
    sync::{atomic::Ordering::Acquire, Arc},
    time::Duration,
};

use super::{
    cache::{CacheEntry, SlotKey},
    guard::Verdict,
    hot::{token_reason, Cached},
    unauthorized, Verifier,
};
use crate::{
    clock::nanos,
    digest::{digests_equal, Digest},
    hash::HashError,
    policy::KeyPolicy,
    store::KeyRecord,
    token::ParsedToken,
    token::SecretCheck,
    AuthContext, AuthError, KeyId, RejectReason,
};

/// A store failure: logged here, answered with a generic 503 (the detail may
/// describe infrastructure).
pub(super) fn store_failed(e: crate::store::StoreError) -> AuthError {
    tracing::warn!(error = %e, "key store read failed");
    AuthError::unavailable("Authentication service temporarily unavailable")
}

/// How long a client told "busy" should wait.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A hasher failure: a full queue is 503 with `Retry-After`; anything else
/// (a corrupt stored hash) a generic 503.
pub(super) fn hash_failed(id: KeyId) -> impl FnOnce(HashError) -> AuthError {
    move |e| match e {
        HashError::Busy => {
            tracing::warn!(key_id = %id, "argon2 queue full; refusing with 503");
            AuthError::unavailable("Authentication service busy; retry shortly")
                .with_retry_after(BUSY_RETRY_AFTER)
        }
        e => {
            tracing::error!(key_id = %id, error = %e, "stored hash unusable");
            AuthError::unavailable("Authentication service temporarily unavailable")
        }
    }
}

impl Verifier {
    pub(super) async fn verify_uncached(
        &self,
        token: &str,
        id: KeyId,
        digest: Digest,
        client: Option<IpAddr>,
    ) -> Result<AuthContext, AuthError> {
        let inner = &*self.inner;
        if let Some(result) = self.check_cached(id, &digest, client).await {
            return self.refine(token.as_bytes(), result);
        }
        let parsed = self
            .parse(token)
            .map_err(|e| unauthorized(token_reason(e)))?;
        self.check_guard(id, &digest)?;
        self.check_known(&parsed)?;

        // One argon2 run per key id at a time; the others wait and hit the cache.
        let lock = inner.inflight.entry(id).or_default().clone();
        let result = {
            let _running = lock.lock().await;
            match self.check_cached(id, &digest, client).await {
                Some(result) => result,
                None => self.verify_cold(&parsed, digest, client).await,
            }
        };
        drop(lock);
        inner
            .inflight
            .remove_if(&id, |_, l| Arc::strong_count(l) == 1);
        result
    }

    /// `None` on a miss. A hit with a different digest is a wrong secret,
    /// decided without argon2.
    pub(super) async fn check_cached(
        &self,
        id: KeyId,
        digest: &Digest,
        client: Option<IpAddr>,
    ) -> Option<Result<AuthContext, AuthError>> {
        match self.check_cached_now(SlotKey::of(id), digest, client) {
            Cached::Hit(result) => Some(result),
            Cached::Miss => None,
            Cached::Confirm(hash) => self.confirm(id, digest, &hash, client).await,
        }
    }

    /// Other instances' changes may be missed (the feed is out of sync, or
    /// was resynchronised since the entry was confirmed): confirm a hit
    /// against the store by comparing the record, without argon2. `None`
    /// when the stored hash changed (the cold path decides).
    pub(super) async fn confirm(
        &self,
        id: KeyId,
        digest: &Digest,
        hash: &str,
        client: Option<IpAddr>,
    ) -> Option<Result<AuthContext, AuthError>> {
        let inner = &*self.inner;
        // Read before the store: a resync during the read confirms again.
        let resync = inner.cache.resync.load(Acquire);
        let refused = |reason| {
            // An entry verified with another secret is not this token's to drop.
            let _ = inner
                .cache
                .entries
                .pin()
                .remove_if(&SlotKey::of(id), |_, e| digests_equal(&e.digest, digest));
            Some(Err(unauthorized(reason)))
        };
        match crate::metrics::timed_read(inner.store.get(id)).await {
            Err(e) => Some(Err(store_failed(e))),
            Ok(None) => refused(RejectReason::UnknownKey),
            Ok(Some(r)) => {
                if let Err(reason) = r.check_active(inner.clock.now()) {
                    return refused(reason);
                }
                if *r.hash != *hash {
                    return None;
                }
                // An edit made elsewhere (scopes, policy) may have been
                // missed too: the context is rebuilt from the record.
                let ctx = self.context_for(&r);
                let in_sync = inner.store.changes().is_in_sync();
                let replaced = inner.cache.replace_if(id, digest, |entry| {
                    // A revocation time set elsewhere (a rotation's grace)
                    // may have been missed: take the record's.
                    entry.ends = r.ends().map(|(t, why)| (nanos(t), why));
                    entry.ctx = ctx.clone();
                    if in_sync {
                        *entry.confirmed.get_mut() = resync;
                    }
                });
                if replaced {
                    if let Some(entry) = inner.cache.entries.pin().get(&SlotKey::of(id)) {
                        self.report_use(entry, client);
                    }
                }
                Some(Ok(ctx))
            }
        }
    }

    pub(super) async fn verify_cold(
        &self,
        parsed: &ParsedToken<'_>,
        digest: Digest,
        client: Option<IpAddr>,
    ) -> Result<AuthContext, AuthError> {
        let inner = &*self.inner;
        let (id, secret) = (parsed.key_id(), parsed.secret());
        let epoch = inner.cache.epoch.load(Acquire);
        let resync = inner.cache.resync.load(Acquire);
        let record = crate::metrics::timed_read(inner.store.get(id))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "key store read failed");
                AuthError::unavailable("Authentication service temporarily unavailable")
            })?;
        let now = inner.clock.now_nanos();
        let Some(record) = record else {
            inner.guard.record_unknown(id, now);
            return Err(unauthorized(RejectReason::UnknownKey));
        };
        record
            .check_active(inner.clock.now())
            .map_err(unauthorized)?;
        // The prefix is bound to the key: a `sk_test_` key presented as
        // `sk_live_` (checksum recomputed) is refused, old records included.
        if record.token_prefix() != Some(parsed.prefix()) {
            return Err(unauthorized(RejectReason::WrongPrefix));
        }
        let legacy = match record.check {
            Some(stored) => {
                inner.guard.remember_check(id, stored);
                if !stored.matches(SecretCheck::compute(id, parsed.prefix(), secret)) {
                    return Err(unauthorized(RejectReason::WrongSecret));
                }
                false
            }
            None => {
                // Another waiter may have failed while we queued.
                if let Verdict::KnownWrong | Verdict::Throttled =
                    inner.guard.check(id, &digest, now)
                {
                    return Err(unauthorized(RejectReason::Throttled));
                }
                true
            }
        };
        let ok = inner
            .hasher
            .verify(secret, &record.hash)
            .await
            .map_err(hash_failed(id))?;
        if !ok {
            // Only legacy records throttle the id: with a check, a secret
            // reaching argon2 and failing is a 1-in-2^32 event.
            inner
                .guard
                .record_wrong(id, digest, inner.clock.now_nanos(), legacy);
            return Err(unauthorized(RejectReason::WrongSecret));
        }
        let ctx = self.context_for(&record);
        let entry = CacheEntry {
            digest,
            ends: record.ends().map(|(t, r)| (nanos(t), r)),
            ctx: ctx.clone(),
            hash: record.hash.as_str().into(),
            last_reported: Default::default(),
            confirmed: resync.into(),
        };
        self.report_use(&entry, client);
        inner.cache.insert_if_unchanged(id, entry, epoch, now);
        if legacy || inner.hasher.needs_rehash(&record.hash) {
            self.spawn_rehash(id, parsed.prefix(), *secret, digest);
        }
        Ok(ctx)
    }

    pub(super) fn context_for(&self, record: &KeyRecord) -> AuthContext {
        let ctx = AuthContext::for_key(
            record.id,
            record.name.as_str(),
            record.owner.clone(),
            self.inner.policy.expand(&record.scopes),
        );
        match KeyPolicy::of(record) {
            Some(policy) => ctx.with_key_policy(policy),
            None => ctx,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        response::ErrorFormat, KeyIssuer, MemoryKeyStore, NewKey, Principal, ScopeSet,
        SecretHasher, TokenPrefix,
    };

    #[tokio::test]
    async fn a_full_argon2_queue_answers_503_with_retry_after() {
        let store = Arc::new(MemoryKeyStore::new());
        let prefix = TokenPrefix::new("st_").unwrap();
        let key = KeyIssuer::new(store.clone(), SecretHasher::for_tests(), prefix)
            .issue(NewKey::new(Principal::user("a"), "k", ScopeSet::empty()))
            .await
            .unwrap();
        let hasher = SecretHasher::with_concurrency(SecretHasher::for_tests().params(), 1)
            .unwrap()
            .with_queue(0);
        let verifier = Verifier::builder(store).hasher(hasher.clone()).build();
        // Every worker busy, no room to wait: refused at once, not queued.
        let workers = hasher.occupy_workers();
        let err = verifier
            .verify(key.token.expose_secret())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503);
        assert_eq!(err.retry_after(), Some(BUSY_RETRY_AFTER));
        let res = ErrorFormat::Flat.render(&err);
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
        // Nothing was remembered against the key: it works once there is room.
        drop(workers);
        verifier.verify(key.token.expose_secret()).await.unwrap();
    }
}
