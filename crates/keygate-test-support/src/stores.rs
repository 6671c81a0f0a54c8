//! [`TestStore`]: a real key store (memory, or any other) wrapped so a test
//! can count its reads, take it down, lose its change notices, or hold a
//! write at a chosen moment. One double for what the suites need instead of
//! a hand-written `KeyStore` per test file. [`Recorder`]: the changes a
//! store published.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use auth_core::{store::StoreError, KeyId, KeyStore};
//! use keygate_test_support::stores::TestStore;
//!
//! let store = TestStore::memory();
//! assert!(store.get(KeyId::random()).await.unwrap().is_none());
//! assert_eq!(store.gets(), 1);
//!
//! store.set_down(true);
//! let err = store.get(KeyId::random()).await.unwrap_err();
//! assert!(matches!(err, StoreError::Unavailable(_)));
//! # });
//! ```

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc, Mutex, Weak,
};

use async_trait::async_trait;
use auth_core::{
    policy::CreditSpend,
    store::{
        ChangeFeed, ChangeListener, IssuingPrefix, KeyChange, KeyPage, KeyQuery, KeyRecord,
        KeyUpdate, KeyUse, StoreError,
    },
    token::SecretCheck,
    KeyId, KeyStore, MemoryKeyStore, TokenPrefix,
};
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// Records every change published on a store's feed.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<KeyChange>>);

impl Recorder {
    /// A recorder subscribed to `store`'s feed (for as long as it lives).
    pub fn subscribe(store: &dyn KeyStore) -> Arc<Self> {
        let r = Arc::new(Self::default());
        let weak: Weak<dyn ChangeListener> =
            Arc::downgrade(&(r.clone() as Arc<dyn ChangeListener>));
        store.changes().subscribe(weak);
        r
    }

    /// The changes seen so far, oldest first.
    pub fn seen(&self) -> Vec<KeyChange> {
        self.0.lock().unwrap().clone()
    }
}

impl ChangeListener for Recorder {
    fn on_change(&self, change: &KeyChange) {
        self.0.lock().unwrap().push(change.clone());
    }
}

/// What a store that is down answers: a backend detail that must stay in
/// the logs and never reach a client.
pub const DOWN: &str = "connection refused to db.internal:5432";

/// A key store wrapped for tests: every call is passed to `inner` unless the
/// store is down.
///
/// - [`gets`](TestStore::gets): how many times `get` was called (proves a
///   path reads nothing, or exactly once).
/// - [`set_down`](TestStore::set_down): every call fails with
///   [`StoreError::Unavailable`] ([`DOWN`]); [`set_reads_down`](TestStore::set_reads_down)
///   fails `get` only, so keys can still be issued.
/// - [`set_silent`](TestStore::set_silent): the memory store's change
///   notices are not passed on (a lost notification).
/// - [`update_gate`](TestStore::update_gate), [`rotate_gate`](TestStore::rotate_gate):
///   hold the next `update` or `rotate` to interleave two requests.
#[derive(Debug)]
pub struct TestStore {
    inner: Arc<dyn KeyStore>,
    // For `set_silent`: a feed of its own, fed from `inner`'s by `Forward`
    // (subscribed weakly, kept alive here). Without it, `inner`'s feed is
    // this store's, with its in-sync state.
    own_feed: Option<(Arc<ChangeFeed>, Arc<Forward>)>,
    gets: AtomicUsize,
    down: AtomicBool,
    reads_down: AtomicBool,
    update_gate: Gate,
    rotate_gate: Gate,
}

#[derive(Debug)]
struct Forward {
    feed: Arc<ChangeFeed>,
    silent: AtomicBool,
}

impl ChangeListener for Forward {
    fn on_change(&self, change: &KeyChange) {
        if !self.silent.load(Ordering::SeqCst) {
            self.feed.publish(change);
        }
    }
}

impl Default for TestStore {
    /// A [`MemoryKeyStore`], wrapped, with a feed of its own (see
    /// [`TestStore::set_silent`]).
    fn default() -> Self {
        let inner: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
        let feed = Arc::new(ChangeFeed::new());
        let forward = Arc::new(Forward {
            feed: feed.clone(),
            silent: AtomicBool::new(false),
        });
        let listener: Weak<dyn ChangeListener> =
            Arc::downgrade(&(forward.clone() as Arc<dyn ChangeListener>));
        inner.changes().subscribe(listener);
        Self {
            own_feed: Some((feed, forward)),
            ..Self::wrap(inner)
        }
    }
}

impl TestStore {
    /// `inner`, wrapped; its change feed is this store's.
    pub fn new(inner: Arc<dyn KeyStore>) -> Arc<Self> {
        Arc::new(Self::wrap(inner))
    }

    /// A [`MemoryKeyStore`], wrapped, with a feed of its own (see
    /// [`TestStore::set_silent`]).
    pub fn memory() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A [`MemoryKeyStore`] that is down from the start.
    pub fn down() -> Arc<Self> {
        let store = Self::memory();
        store.set_down(true);
        store
    }

    fn wrap(inner: Arc<dyn KeyStore>) -> Self {
        Self {
            inner,
            own_feed: None,
            gets: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            reads_down: AtomicBool::new(false),
            update_gate: Gate::default(),
            rotate_gate: Gate::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn KeyStore> {
        &self.inner
    }

    /// How many times `get` was called (also while down).
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// Takes every operation down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Takes `get` down (`true`) or brings it back; writes keep working.
    pub fn set_reads_down(&self, down: bool) {
        self.reads_down.store(down, Ordering::SeqCst);
    }

    /// Stops (`true`) or resumes passing on the inner store's change
    /// notices. Notices published while silent are lost.
    ///
    /// # Panics
    ///
    /// For a store made with [`TestStore::new`], which shares its inner
    /// store's feed.
    pub fn set_silent(&self, silent: bool) {
        let (_, forward) = self
            .own_feed
            .as_ref()
            .expect("set_silent needs TestStore::memory's own feed");
        forward.silent.store(silent, Ordering::SeqCst);
    }

    /// Holds the next `update` (after the down check) until released.
    pub fn update_gate(&self) -> &Gate {
        &self.update_gate
    }

    /// Holds the next `rotate` (after the down check) until released.
    pub fn rotate_gate(&self) -> &Gate {
        &self.rotate_gate
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::unavailable(DOWN))
        } else {
            Ok(())
        }
    }
}

/// Holds the next call that passes it until released: explicit signals to
/// interleave two requests, no sleeps.
#[derive(Debug, Default)]
pub struct Gate(Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>);

impl Gate {
    /// Arms the gate: the next call reports on the returned receiver that
    /// it has arrived, and waits until the returned sender is used (or
    /// dropped).
    pub fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (arrived_tx, arrived_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *self.0.lock().unwrap() = Some((arrived_tx, go_rx));
        (arrived_rx, go_tx)
    }

    async fn pass(&self) {
        let armed = self.0.lock().unwrap().take();
        if let Some((arrived, go)) = armed {
            let _ = arrived.send(());
            let _ = go.await;
        }
    }
}

#[async_trait]
impl KeyStore for TestStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert(record).await
    }

    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        if self.reads_down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable(DOWN));
        }
        self.inner.get(id).await
    }

    async fn list_by_owner(&self, user_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.check()?;
        self.inner.list_by_owner(user_id).await
    }

    async fn revoke(&self, id: KeyId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.revoke(id, at).await
    }

    async fn rotate(
        &self,
        old: KeyId,
        old_ends_at: OffsetDateTime,
        now: OffsetDateTime,
        new: &KeyRecord,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.rotate_gate.pass().await;
        self.inner.rotate(old, old_ends_at, now, new).await
    }

    async fn update(&self, id: KeyId, update: &KeyUpdate) -> Result<KeyRecord, StoreError> {
        self.check()?;
        self.update_gate.pass().await;
        self.inner.update(id, update).await
    }

    async fn spend_credit(
        &self,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        self.check()?;
        self.inner.spend_credit(id, now).await
    }

    async fn take_credits(
        &self,
        id: KeyId,
        amount: u64,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        self.check()?;
        self.inner.take_credits(id, amount, now).await
    }

    async fn return_credits(
        &self,
        id: KeyId,
        amount: u64,
        taken_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.return_credits(id, amount, taken_at).await
    }

    async fn lower_credits(&self, id: KeyId, remaining: u64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.lower_credits(id, remaining).await
    }

    async fn update_hash(&self, id: KeyId, hash: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.update_hash(id, hash).await
    }

    async fn update_hash_and_check(
        &self,
        id: KeyId,
        hash: &str,
        check: SecretCheck,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.update_hash_and_check(id, hash, check).await
    }

    async fn record_use(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_use(uses).await
    }

    async fn list_keys(
        &self,
        query: &KeyQuery,
        now: OffsetDateTime,
    ) -> Result<KeyPage, StoreError> {
        self.check()?;
        self.inner.list_keys(query, now).await
    }

    async fn expiring_unnoticed(
        &self,
        after: OffsetDateTime,
        after_id: Option<KeyId>,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.check()?;
        self.inner
            .expiring_unnoticed(after, after_id, until, limit)
            .await
    }

    async fn mark_expiry_noticed(
        &self,
        id: KeyId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.mark_expiry_noticed(id, expires_at).await
    }

    fn changes(&self) -> &ChangeFeed {
        match &self.own_feed {
            Some((feed, _)) => feed,
            None => self.inner.changes(),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }

    async fn record_issuing_prefix(
        &self,
        prefix: &TokenPrefix,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_issuing_prefix(prefix, at).await
    }

    async fn issuing_prefixes(&self) -> Result<Vec<IssuingPrefix>, StoreError> {
        self.check()?;
        self.inner.issuing_prefixes().await
    }
}
