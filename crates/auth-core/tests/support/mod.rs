//! Helpers of auth-core's test binaries; what other crates' tests use too
//! is in `keygate-test-support`, re-exported here.
#![allow(dead_code)]

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

#[allow(unused_imports)] // Each test binary uses part of it.
pub(crate) use keygate_test_support::{eventually, fixtures::*};

use async_trait::async_trait;
use auth_core::*;
use parking_lot::Mutex;
use time::OffsetDateTime;

/// Records every change published on a feed.
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Vec<KeyChange>>);

impl Recorder {
    pub(crate) fn subscribe(store: &dyn KeyStore) -> Arc<Self> {
        let r = Arc::new(Self::default());
        let weak: std::sync::Weak<dyn ChangeListener> =
            Arc::downgrade(&(r.clone() as Arc<dyn ChangeListener>));
        store.changes().subscribe(weak);
        r
    }

    pub(crate) fn seen(&self) -> Vec<KeyChange> {
        self.0.lock().clone()
    }
}

impl ChangeListener for Recorder {
    fn on_change(&self, change: &KeyChange) {
        self.0.lock().push(change.clone());
    }
}

/// Delegates to a store and counts reads: proves the cached path does none.
#[derive(Debug)]
pub(crate) struct CountingStore {
    pub inner: Arc<dyn KeyStore>,
    gets: AtomicUsize,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn KeyStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gets: AtomicUsize::new(0),
        })
    }

    pub(crate) fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyStore for CountingStore {
    async fn insert(&self, r: &KeyRecord) -> Result<(), StoreError> {
        self.inner.insert(r).await
    }
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(id).await
    }
    async fn list_by_owner(&self, u: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list_by_owner(u).await
    }
    async fn revoke(&self, id: KeyId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.inner.revoke(id, at).await
    }
    async fn rotate(
        &self,
        old: KeyId,
        ends: OffsetDateTime,
        now: OffsetDateTime,
        new: &KeyRecord,
    ) -> Result<(), StoreError> {
        self.inner.rotate(old, ends, now, new).await
    }
    async fn update_hash(&self, id: KeyId, hash: &str) -> Result<(), StoreError> {
        self.inner.update_hash(id, hash).await
    }
    async fn update_hash_and_check(
        &self,
        id: KeyId,
        hash: &str,
        check: SecretCheck,
    ) -> Result<(), StoreError> {
        self.inner.update_hash_and_check(id, hash, check).await
    }
    async fn update(&self, id: KeyId, update: &KeyUpdate) -> Result<KeyRecord, StoreError> {
        self.inner.update(id, update).await
    }
    async fn spend_credit(
        &self,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        self.inner.spend_credit(id, now).await
    }
    async fn record_use(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        self.inner.record_use(uses).await
    }
    fn changes(&self) -> &ChangeFeed {
        self.inner.changes()
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use std::{str::FromStr, time::Duration};

    use rand::RngCore;
    use sqlx::{
        postgres::{PgConnectOptions, PgPool, PgPoolOptions},
        Connection, PgConnection,
    };

    use super::*;

    pub(crate) use keygate_test_support::services::database_url;

    /// A schema of its own for one test, so tests run in parallel.
    pub(crate) struct TestSchema {
        pub url: String,
        pub name: String,
    }

    impl TestSchema {
        /// `None` (test skipped, or failed under CI) without DATABASE_URL; panics if PostgreSQL is unreachable.
        pub(crate) async fn new(test: &str) -> Option<Self> {
            let url = database_url(test)?;
            let name = format!("kgt_{:016x}", rand::rngs::OsRng.next_u64());
            let mut conn = PgConnection::connect(&url).await.unwrap_or_else(|e| {
                panic!("DATABASE_URL is set but PostgreSQL is unreachable: {e}")
            });
            sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
                .execute(&mut conn)
                .await
                .unwrap();
            Some(Self { url, name })
        }

        pub(crate) fn options(&self) -> PgConnectOptions {
            PgConnectOptions::from_str(&self.url)
                .unwrap()
                .options([("search_path", &self.name)])
        }

        pub(crate) async fn store(&self) -> PostgresKeyStore {
            PostgresKeyStore::connect_with_schema(&self.url, &self.name)
                .await
                .unwrap()
        }

        /// A pool on this schema, tagged so the test can find its connections.
        pub(crate) fn pool(&self, options: PgConnectOptions, application_name: &str) -> PgPool {
            PgPoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_millis(500))
                .connect_lazy_with(
                    options
                        .options([("search_path", &self.name)])
                        .application_name(application_name),
                )
        }

        pub(crate) async fn connection(&self) -> PgConnection {
            PgConnection::connect_with(&self.options()).await.unwrap()
        }

        pub(crate) async fn drop_schema(self) {
            let mut conn = PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}
