//! "Your key expires soon": a notice the application receives once per key
//! (e.g. to email the owner a week before), remembered by the store.

use std::{fmt, sync::Arc, time::Duration};

use crate::{
    clock::SystemClock, clock::WallClock, store::KeyMetadata, store::StoreError, KeyStore,
};
use async_trait::async_trait;

/// Default notice period: 7 days before the key expires.
pub const DEFAULT_EXPIRY_NOTICE: Duration = Duration::from_secs(7 * 86_400);
/// The shortest interval [`ExpiryNotifier::spawn`] runs passes at.
pub const MIN_NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// Keys read per store query during a pass.
const BATCH: usize = 100;

/// A delivery failed; the key is noticed again on the next pass.
pub type NoticeError = Box<dyn std::error::Error + Send + Sync>;

/// Receives "expiring soon" notices: the application's side of
/// [`ExpiryNotifier`]. Closures `Fn(KeyMetadata) -> impl Future<Output =
/// Result<(), NoticeError>>` implement it.
#[async_trait]
pub trait ExpiryListener: Send + Sync + 'static {
    /// `key` expires at `key.expires_at`, within the notice period. `Ok`
    /// once the notice is delivered (e.g. the email is queued); an error
    /// leaves it to be delivered again on the next pass.
    async fn key_expiring(&self, key: KeyMetadata) -> Result<(), NoticeError>;
}

#[async_trait]
impl<F, Fut> ExpiryListener for F
where
    F: Fn(KeyMetadata) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), NoticeError>> + Send + 'static,
{
    async fn key_expiring(&self, key: KeyMetadata) -> Result<(), NoticeError> {
        self(key).await
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoticePass {
    /// Notices delivered and remembered.
    pub delivered: usize,
    /// Notices the listener refused: tried again on the next pass.
    pub failed: usize,
}

/// Finds keys expiring within the notice period and hands each to an
/// [`ExpiryListener`], at least once per key and expiry: a notice is
/// remembered in the store ([`KeyStore::mark_expiry_noticed`]) only after
/// the listener took it, so a crash in between delivers it again, and a
/// restart does not repeat delivered ones. Keys revoked before they would
/// expire (including keys replaced by rotation) get no notice. A key whose
/// expiry is moved earlier is noticed again for the new date. With several
/// instances, each may deliver a notice another is delivering at the same
/// moment: run it on one, or make the listener idempotent.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use auth_core::{expiry_notice::{ExpiryNotifier, NoticeError}, store::KeyMetadata, clock::FakeClock, *};
///
/// let clock = Arc::new(FakeClock::new(time::macros::datetime!(2026-03-01 0:00 UTC)));
/// let store = Arc::new(MemoryKeyStore::new());
/// let issuer = KeyIssuer::new(store.clone(), SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap())
///     .clock(clock.clone());
/// let key = NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty())
///     .expires_at(time::macros::datetime!(2026-03-05 0:00 UTC));
/// issuer.issue(key).await.unwrap();
///
/// let notifier = ExpiryNotifier::new(store, |key: KeyMetadata| async move {
///     println!("email {}: key {} expires at {:?}", key.owner, key.name, key.expires_at);
///     Ok::<(), NoticeError>(())
/// })
/// .clock(clock);
/// assert_eq!(notifier.run_once().await.unwrap().delivered, 1);
/// assert_eq!(notifier.run_once().await.unwrap().delivered, 0); // not twice
/// // In a service: notifier.spawn(Duration::from_secs(3600));
/// # });
/// ```
#[derive(Clone)]
pub struct ExpiryNotifier {
    store: Arc<dyn KeyStore>,
    listener: Arc<dyn ExpiryListener>,
    clock: Arc<dyn WallClock>,
    notice: Duration,
}

impl fmt::Debug for ExpiryNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpiryNotifier")
            .field("notice", &self.notice)
            .finish_non_exhaustive()
    }
}

impl ExpiryNotifier {
    /// Notices of keys in `store`, to `listener`, [`DEFAULT_EXPIRY_NOTICE`]
    /// (7 days) ahead.
    pub fn new(store: Arc<dyn KeyStore>, listener: impl ExpiryListener) -> Self {
        Self {
            store,
            listener: Arc::new(listener),
            clock: Arc::new(SystemClock),
            notice: DEFAULT_EXPIRY_NOTICE,
        }
    }

    /// How long before the expiry the notice goes out.
    pub fn notice_period(mut self, notice: Duration) -> Self {
        self.notice = notice;
        self
    }

    /// The clock deciding what "soon" is (tests use a manual one).
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// One pass: every key expiring within the notice period that has not
    /// been noticed is handed to the listener, and remembered if it took it.
    /// A store failure ends the pass with the error (what was delivered
    /// stays delivered).
    pub async fn run_once(&self) -> Result<NoticePass, StoreError> {
        let now = self.clock.now();
        let until = crate::issuer::grace_end(now, self.notice);
        // Listed keys say "expiring" within the same period.
        let window = time::Duration::try_from(self.notice).unwrap_or(time::Duration::MAX);
        let mut pass = NoticePass::default();
        // Cursor past the last key tried, so keys whose notice keeps failing
        // (they come first in `(expires_at, id)` order) do not block the
        // ones after them; they are retried on the next pass.
        let (mut after, mut after_id) = (now, None);
        loop {
            let due = self
                .store
                .expiring_unnoticed(after, after_id, until, BATCH)
                .await?;
            let full = due.len() == BATCH;
            for record in due {
                let Some(expires_at) = record.expires_at else {
                    continue;
                };
                let id = record.id;
                (after, after_id) = (expires_at, Some(id));
                match self
                    .listener
                    .key_expiring(record.metadata_at(now, window))
                    .await
                {
                    Ok(()) => {
                        self.store.mark_expiry_noticed(id, expires_at).await?;
                        pass.delivered += 1;
                    }
                    Err(e) => {
                        tracing::warn!(key_id = %id, error = %e, "expiry notice not delivered; retried next pass");
                        pass.failed += 1;
                    }
                }
            }
            if !full {
                return Ok(pass);
            }
        }
    }

    /// Runs a pass every `every` on the tokio runtime, until the handle is
    /// aborted. Failures are logged; the next pass retries. An interval
    /// shorter than [`MIN_NOTICE_INTERVAL`] (one second), including zero, is
    /// raised to it rather than panicking or spinning on the store.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        let every = every.max(MIN_NOTICE_INTERVAL);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.run_once().await {
                    Ok(pass) if pass.delivered + pass.failed > 0 => {
                        tracing::info!(
                            delivered = pass.delivered,
                            failed = pass.failed,
                            "expiry notices"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiry notice pass failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clock::FakeClock, MemoryKeyStore};

    #[tokio::test(start_paused = true)]
    async fn a_zero_interval_is_clamped_not_a_panic() {
        let clock = Arc::new(FakeClock::new(time::macros::datetime!(2026-03-01 0:00 UTC)));
        let notifier =
            ExpiryNotifier::new(Arc::new(MemoryKeyStore::new()), |_k: KeyMetadata| async {
                Ok::<(), NoticeError>(())
            })
            .clock(clock);
        let handle = notifier.spawn(Duration::ZERO);
        // Let the task start and run its first passes on the paused clock.
        tokio::time::advance(MIN_NOTICE_INTERVAL * 3).await;
        tokio::task::yield_now().await;
        assert!(!handle.is_finished(), "the task did not panic");
        handle.abort();
        let err = handle.await.unwrap_err();
        assert!(err.is_cancelled(), "{err}");
    }
}
