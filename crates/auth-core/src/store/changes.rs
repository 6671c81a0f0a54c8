//! The change feed: how stores tell caches that a key changed.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Weak,
};

use parking_lot::RwLock;

use crate::KeyId;

/// A change that may invalidate cached verifications.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyChange {
    /// The key was revoked, or rotated (its end moved closer).
    Revoked(KeyId),
    /// The key was created or its metadata changed.
    Updated(KeyId),
    /// A user's signing secret changed (JWT credentials).
    UserSecret(String),
    /// Anything may have changed (a resync): verifiers confirm every cached
    /// entry against the store before trusting it again.
    All,
}

/// Receives changes. Called synchronously: keep it short and non-blocking.
pub trait ChangeListener: Send + Sync {
    /// One change happened.
    fn on_change(&self, change: &KeyChange);
}

/// Fan-out of [`KeyChange`]s to listeners, plus an "in sync" flag.
///
/// A store publishes every local mutation before the mutating call returns,
/// so a revoke is visible to this process's caches at once. Stores shared
/// between processes also publish what other processes did, as soon as they
/// learn of it; while they cannot (a dropped notification connection), they
/// clear the flag and caches confirm every hit against the store.
#[derive(Default)]
pub struct ChangeFeed {
    listeners: RwLock<Vec<Weak<dyn ChangeListener>>>,
    out_of_sync: AtomicBool,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("listeners", &self.listeners.read().len())
            .field("in_sync", &self.is_in_sync())
            .finish()
    }
}

impl ChangeFeed {
    /// A feed with no listeners, in sync.
    pub fn new() -> Self {
        crate::metrics::change_feed_in_sync(true);
        Self::default()
    }

    /// Adds a listener; it is dropped from the feed once it is freed.
    pub fn subscribe(&self, listener: Weak<dyn ChangeListener>) {
        self.listeners.write().push(listener);
    }

    /// Tells every live listener.
    pub fn publish(&self, change: &KeyChange) {
        let mut dead = false;
        for l in self.listeners.read().iter() {
            match l.upgrade() {
                Some(l) => l.on_change(change),
                None => dead = true,
            }
        }
        if dead {
            self.listeners.write().retain(|l| l.strong_count() > 0);
        }
    }

    /// Whether every change made elsewhere is known to be delivered.
    pub fn is_in_sync(&self) -> bool {
        !self.out_of_sync.load(Ordering::Acquire)
    }

    /// Marks the feed in or out of sync; either way caches resynchronise
    /// ([`KeyChange::All`]).
    pub fn set_in_sync(&self, in_sync: bool) {
        let was_in_sync = !self.out_of_sync.swap(!in_sync, Ordering::AcqRel);
        crate::metrics::change_feed_in_sync(in_sync);
        if was_in_sync != in_sync {
            self.publish(&KeyChange::All);
        }
    }
}
