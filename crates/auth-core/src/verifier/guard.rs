//! The attack path: remember failures so a flood of bad tokens costs no argon2.
//!
//! Unknown key ids are remembered for a while (no store read for a repeat).
//! A key's secret check, once read from the store, is remembered too: a
//! wrong secret for that id is then refused with one fast hash, no store
//! read, no argon2 and no backoff (the association of an id with its check
//! never changes: rotation makes a new id). For a known id, the last few
//! secrets that failed argon2 are remembered (a repeat costs nothing).
//! Only legacy records without a check get a per-id backoff after a failure
//! (at most one argon2 run per `backoff`). Every map is bounded.

use dashmap::DashMap;

use crate::{
    digest::{digests_equal, Digest},
    token::SecretCheck,
    KeyId,
};

const WRONG_DIGESTS: usize = 4;

pub(crate) struct AttackGuard {
    unknown: DashMap<KeyId, i64>,
    failures: DashMap<KeyId, Failures>,
    checks: DashMap<KeyId, SecretCheck>,
    ttl: i64,
    backoff: i64,
    capacity: usize,
}

struct Failures {
    last_at: i64,
    /// Whether a new secret is throttled for `backoff` (legacy records only).
    throttle: bool,
    digests: [Digest; WRONG_DIGESTS],
    next: usize,
}

pub(crate) enum Verdict {
    /// Nothing known against this token: go on.
    Unknown,
    /// The key id is known not to exist.
    NoSuchKey,
    /// This exact secret already failed.
    KnownWrong,
    /// A different secret failed too recently; not checked.
    Throttled,
}

impl AttackGuard {
    pub(super) fn new(ttl_nanos: i64, backoff_nanos: i64, capacity: usize) -> Self {
        Self {
            unknown: DashMap::new(),
            failures: DashMap::new(),
            checks: DashMap::new(),
            ttl: ttl_nanos,
            backoff: backoff_nanos,
            capacity: capacity.max(16),
        }
    }

    pub(super) fn check(&self, id: KeyId, digest: &Digest, now: i64) -> Verdict {
        if let Some(until) = self.unknown.get(&id) {
            if *until > now {
                return Verdict::NoSuchKey;
            }
        }
        if let Some(f) = self.failures.get(&id) {
            // Every slot compared, so the time does not tell which matched.
            let wrong = f
                .digests
                .iter()
                .fold(false, |any, d| any | digests_equal(d, digest));
            if wrong && now - f.last_at < self.ttl {
                return Verdict::KnownWrong;
            }
            if f.throttle && now - f.last_at < self.backoff {
                return Verdict::Throttled;
            }
        }
        Verdict::Unknown
    }

    pub(super) fn record_unknown(&self, id: KeyId, now: i64) {
        Self::bound(&self.unknown, self.capacity, |until| *until > now);
        self.unknown.insert(id, now.saturating_add(self.ttl));
    }

    /// A secret failed argon2 for `id`. With `throttle` (a legacy record
    /// without a check), other secrets for `id` wait for the backoff.
    pub(super) fn record_wrong(&self, id: KeyId, digest: Digest, now: i64, throttle: bool) {
        let ttl = self.ttl;
        Self::bound(&self.failures, self.capacity, |f| now - f.last_at < ttl);
        let mut f = self.failures.entry(id).or_insert(Failures {
            last_at: now,
            throttle,
            digests: [Digest::ZERO; WRONG_DIGESTS],
            next: 0,
        });
        f.last_at = now;
        f.throttle = throttle;
        let i = f.next;
        f.digests[i] = digest;
        f.next = (i + 1) % WRONG_DIGESTS;
    }

    /// The stored check of `id`, if it was read before.
    pub(super) fn known_check(&self, id: KeyId) -> Option<SecretCheck> {
        self.checks.get(&id).map(|c| *c)
    }

    pub(super) fn remember_check(&self, id: KeyId, check: SecretCheck) {
        // Forgetting checks costs store reads, never safety.
        Self::bound(&self.checks, self.capacity, |_| false);
        self.checks.insert(id, check);
    }

    pub(super) fn forget(&self, id: KeyId) {
        self.unknown.remove(&id);
        self.failures.remove(&id);
    }

    /// Forgets failures (a resync): checks stay, since they never go stale.
    pub(super) fn clear(&self) {
        self.unknown.clear();
        self.failures.clear();
    }

    /// Keeps a map under `capacity`: drop stale entries, and if that is not
    /// enough, everything (forgetting failures only costs CPU, never safety).
    fn bound<V>(map: &DashMap<KeyId, V>, capacity: usize, live: impl Fn(&V) -> bool) {
        if map.len() >= capacity {
            map.retain(|_, v| live(v));
            if map.len() >= capacity {
                map.clear();
            }
        }
    }
}
