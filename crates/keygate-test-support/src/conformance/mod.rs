//! The key-store conformance suite: what every [`KeyStore`] (with the
//! [`AuditLog`] next to it) must do, written once and run by auth-core
//! against its memory, SQLite and PostgreSQL stores. Another implementation
//! runs the same cases with [`key_store_conformance!`](crate::key_store_conformance):
//!
//! ```ignore
//! use keygate_test_support::{conformance::StoreUnderTest, key_store_conformance};
//!
//! // A fresh, empty store for each case (`None` skips the case, e.g. when
//! // its service is not configured).
//! async fn my_store(_test: &str) -> Option<StoreUnderTest> {
//!     let store = std::sync::Arc::new(MyKeyStore::connect("...").await.unwrap());
//!     Some(StoreUnderTest::new(store.clone(), std::sync::Arc::new(store.audit_log())))
//! }
//!
//! mod my_store_conformance {
//!     keygate_test_support::key_store_conformance!(super::my_store);
//! }
//! ```
//!
//! The macro writes one `#[tokio::test]` (multi-threaded: the calling
//! crate needs tokio's `macros` and `rt-multi-thread`) per function of
//! [`cases`], so each case passes or fails on its own.

use std::{num::NonZeroU32, sync::Arc};

use auth_core::{
    audit::AuditLog,
    audit::UsageCount,
    clock::FakeClock,
    policy::{Credits, KeyRateLimit, Refill, RefillEvery},
    store::KeyRecord,
    AuthContext, AuthError, KeyId, KeyIssuer, KeyStore, Principal, RejectReason, ScopeSet,
    SecretHasher, Verifier,
};
use time::{macros::datetime, OffsetDateTime};

use crate::fixtures::issuer;

pub mod cases;

/// The time the cases' clocks start at.
pub const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

type Teardown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A key store and the audit log beside it, as the cases take them.
pub struct StoreUnderTest {
    /// The key store.
    pub keys: Arc<dyn KeyStore>,
    /// Its audit log.
    pub audit: Arc<dyn AuditLog>,
    teardown: Option<Teardown>,
}

impl StoreUnderTest {
    /// A store and its audit log, with nothing to clean up.
    pub fn new(keys: Arc<dyn KeyStore>, audit: Arc<dyn AuditLog>) -> Self {
        Self {
            keys,
            audit,
            teardown: None,
        }
    }

    /// Runs `teardown` after the case, once the store and log are dropped
    /// (e.g. dropping the case's database schema).
    pub fn with_teardown(
        mut self,
        teardown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.teardown = Some(Box::pin(teardown));
        self
    }

    /// Drops the store and log, then runs the teardown.
    pub async fn finish(self) {
        let Self {
            keys,
            audit,
            teardown,
        } = self;
        drop((keys, audit));
        if let Some(teardown) = teardown {
            teardown.await;
        }
    }
}

impl std::fmt::Debug for StoreUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUnderTest")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// One `#[tokio::test]` per conformance case against the stores `$open`
/// makes: an async function `(test: &str) -> Option<S>` with
/// `S: Into<StoreUnderTest>`, called once per case with the test's name
/// (`None` skips the case). See [`conformance`](crate::conformance).
#[macro_export]
macro_rules! key_store_conformance {
    ($open:path) => {
        $crate::key_store_conformance!(@cases $open:
            insert_and_get,
            list_by_owner_newest_first,
            revoke_keeps_the_earliest_time,
            rotate_without_grace,
            rotate_with_grace,
            rotate_refusals_change_nothing,
            created_by_is_kept,
            expiry,
            last_used,
            concurrent_rotations_exactly_one_wins,
            update_hash,
            update_hash_and_check,
            audit_query_and_purge,
            audit_usage_per_bucket,
            expiry_notices,
            failing_expiry_notices_do_not_block_later_ones,
            list_keys_filters_and_pages,
            policy_fields_round_trip,
            update_changes_only_what_is_given,
            disabled_keys_are_refused_until_enabled,
            edits_reach_the_verifiers_context,
            last_used_ip_comes_with_the_latest_use,
            credits_spend_down_and_refill,
            concurrent_spends_never_overspend,
            lower_credits_never_raises_and_publishes_nothing,
            edits_compare_and_set,
            take_credits_all_or_nothing_and_give_back_within_the_period,
            rotation_carries_credits_as_they_stand,
        );
    };
    (@cases $open:path: $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let test = concat!(module_path!(), "::", stringify!($case));
                if let Some(subject) = $open(test).await {
                    let subject: $crate::conformance::StoreUnderTest = subject.into();
                    $crate::conformance::cases::$case(&subject).await;
                    subject.finish().await;
                }
            }
        )*
    };
}

/// A record of `owner`'s (in org `acme`) created at `created_at`, with
/// scopes, an expiry 30 days later and a hash that matches no secret.
pub fn record(owner: &str, created_at: OffsetDateTime) -> KeyRecord {
    let mut k = KeyRecord::new(
        KeyId::random(),
        Principal::in_org(owner, "acme"),
        "n8n automation",
        ScopeSet::parse(["write:entities", "hub-protocol.read"]).unwrap(),
        created_at,
        "st_…k9Qz",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    );
    k.expires_at = Some(created_at + time::Duration::days(30));
    k
}

/// An issuer and a verifier on `keys` sharing a manual clock at [`T0`].
pub(crate) fn issuing(keys: &Arc<dyn KeyStore>) -> (KeyIssuer, Verifier, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new(T0));
    let issuer = issuer(keys.clone()).clock(clock.clone());
    let verifier = Verifier::builder(keys.clone())
        .hasher(SecretHasher::for_tests())
        .clock(clock.clone())
        .build();
    (issuer, verifier, clock)
}

/// A record using every policy field.
pub(crate) fn with_policy(owner: &str, created_at: OffsetDateTime) -> KeyRecord {
    let meta = serde_json::json!({
        "plan": "pro",
        "seats": 3,
        "tags": ["ci", "eu"],
        "nested": {"ok": true, "ratio": 0.5, "none": null},
        "unicode": "Zürich ☃"
    });
    {
        let mut k = record(owner, created_at);
        k.meta = meta.as_object().unwrap().clone();
        k.external_id = Some("cust_42/é".into());
        k.disabled_at = Some(created_at + time::Duration::minutes(3));
        k.ip_allowlist = vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
            "198.51.100.7/32".parse().unwrap(),
        ];
        k.last_used_ip = Some("2001:db8::1".parse().unwrap());
        k.rate_limit = Some(rate_limit(100, 60));
        k.credits =
            Some(Credits::new(41, created_at).with_refill(Refill::new(50, RefillEvery::Month)));
        k
    }
}

/// The usage bucket starting at `start` with these counts.
pub fn count(start: OffsetDateTime, success: u64, refused: u64, rate_limited: u64) -> UsageCount {
    let mut c = UsageCount::empty(start);
    c.success = success;
    c.refused = refused;
    c.rate_limited = rate_limited;
    c
}

pub(crate) fn rate_limit(limit: u32, period_seconds: u32) -> KeyRateLimit {
    KeyRateLimit::new(
        NonZeroU32::new(limit).unwrap(),
        NonZeroU32::new(period_seconds).unwrap(),
    )
}

pub(crate) fn reason(r: Result<AuthContext, AuthError>) -> RejectReason {
    r.expect_err("should be refused").reason()
}
