//! The positive cache: keys whose secret was verified once by argon2.
//!
//! An entry holds a keyed digest of the secret, never the secret, so a hit is
//! a hash plus a constant-time compare. Store changes drop entries at once.
//! A resync of the change feed (`KeyChange::All`: a reconnect, a missed
//! heartbeat, an unreadable notification) drops nothing: it bumps the
//! cache's resync generation, and each entry is confirmed against the store
//! (one read, a record compare, no argon2) on its next use.
//!
//! The map is `papaya`'s: a read takes no lock and writes no shared memory.
//! A sharded map (`dashmap`) takes its shard's read lock on every get, an
//! atomic add on a cache line every reader of that shard shares, so one key
//! used from two threads at once makes every get a cache-line transfer;
//! `papaya`'s gets cost the same on one thread or two. Entries are never
//! changed in place: an update replaces the entry (rare: a confirmation
//! after a resync, a re-hash).

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc,
};

use crate::{
    base62::U64_WIDTH,
    digest::{digests_equal, Digest},
    store::ChangeListener,
    store::KeyChange,
    AuthContext, KeyId, RejectReason,
};

/// One cached key. Replaced, never changed in place, apart from its atomics.
pub(crate) struct CacheEntry {
    pub digest: Digest,
    /// First instant (ns) the key stops working, and why.
    pub ends: Option<(i64, RejectReason)>,
    pub ctx: AuthContext,
    /// The stored hash this entry was verified against (to confirm against the store).
    pub hash: Arc<str>,
    /// Last use reported to the store (ns).
    pub last_reported: AtomicI64,
    /// The cache's resync generation when this entry was last confirmed.
    pub confirmed: AtomicU64,
}

impl CacheEntry {
    /// A copy to change and put back in the entry's place.
    pub(super) fn copy(&self) -> Self {
        Self {
            digest: self.digest,
            ends: self.ends,
            ctx: self.ctx.clone(),
            hash: self.hash.clone(),
            last_reported: AtomicI64::new(self.last_reported.load(Ordering::Relaxed)),
            confirmed: AtomicU64::new(self.confirmed.load(Ordering::Relaxed)),
        }
    }
}

/// Ids in the cache are ours (random), so a fast seeded hash is safe here.
pub(crate) type FastMap<K, V> = papaya::HashMap<K, V, foldhash::fast::RandomState>;

/// A cache slot's key: a key id's base62 field as a token spells it, packed
/// into two words (a `u128` is aligned to 16 bytes, which padded every map
/// entry: 8 more bytes per cached key). A request's token is looked up by
/// its field as it arrived, without decoding it; a key is put in and
/// dropped by its id's field.
/// Each id has exactly one field and each valid field one id, so slots and
/// keys match one to one, and a field that spells no id matches no slot
/// (the miss is then refused by the full parse).
// Debug shows the packed id field: a key id is public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SlotKey(u64, u32);

impl SlotKey {
    /// The slot of the key id field `field`.
    #[inline]
    pub(crate) fn of_field(field: &[u8; U64_WIDTH]) -> Self {
        let (head, tail) = field.split_at(8);
        let mut rest = [0; 4];
        rest[..U64_WIDTH - 8].copy_from_slice(tail);
        let head: [u8; 8] = head.try_into().unwrap_or_default();
        Self(u64::from_le_bytes(head), u32::from_le_bytes(rest))
    }

    /// The slot of key `id`.
    pub(crate) fn of(id: KeyId) -> Self {
        Self::of_field(&id.field())
    }
}

pub(crate) struct KeyCache {
    pub entries: FastMap<SlotKey, CacheEntry>,
    /// Bumped on every change, so an insert racing a revoke is dropped.
    pub epoch: AtomicU64,
    /// Bumped on every resync: entries confirmed at an older value are
    /// confirmed against the store before they are trusted again.
    pub resync: AtomicU64,
    capacity: usize,
}

impl KeyCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: FastMap::default(),
            epoch: AtomicU64::new(0),
            resync: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Inserts unless a change happened since `epoch` was read.
    pub(super) fn insert_if_unchanged(&self, id: KeyId, entry: CacheEntry, epoch: u64, now: i64) {
        let entries = self.entries.pin();
        if entries.len() >= self.capacity {
            self.make_room(now);
        }
        let slot = SlotKey::of(id);
        entries.insert(slot, entry);
        // Re-check after inserting: a change that landed in between bumped the
        // epoch, and its own removal may have run before our insert.
        if self.epoch.load(Ordering::Acquire) != epoch {
            entries.remove(&slot);
        }
    }

    /// Replaces `id`'s entry by `change(copy)` if it is still the one
    /// verified with `digest`; whether it was.
    pub(super) fn replace_if<F>(&self, id: KeyId, digest: &Digest, mut change: F) -> bool
    where
        F: FnMut(&mut CacheEntry),
    {
        let entries = self.entries.pin();
        let outcome = entries.compute(SlotKey::of(id), |current| match current {
            Some((_, e)) if digests_equal(&e.digest, digest) => {
                let mut next = e.copy();
                change(&mut next);
                papaya::Operation::Insert(next)
            }
            _ => papaya::Operation::Abort(()),
        });
        matches!(outcome, papaya::Compute::Updated { .. })
    }

    /// Drops ended entries, then arbitrary ones, until a tenth is free.
    fn make_room(&self, now: i64) {
        let entries = self.entries.pin();
        entries.retain(|_, e| e.ends.is_none_or(|(t, _)| t > now));
        let target = self.capacity - self.capacity / 10;
        if entries.len() >= target {
            let excess = entries.len() + 1 - target;
            let victims: Vec<SlotKey> = entries.keys().take(excess).copied().collect();
            for slot in victims {
                entries.remove(&slot);
            }
        }
    }
}

/// Listens to the store's change feed.
pub(crate) struct CacheInvalidator {
    pub cache: Arc<KeyCache>,
    pub guard: Arc<super::guard::AttackGuard>,
    /// Tells long-lived connections: `Some(id)` revoked, rotated or edited, `None` anything.
    pub ended: tokio::sync::broadcast::Sender<Option<KeyId>>,
}

impl ChangeListener for CacheInvalidator {
    fn on_change(&self, change: &KeyChange) {
        self.cache.epoch.fetch_add(1, Ordering::AcqRel);
        match change {
            KeyChange::Revoked(id) => {
                self.cache.entries.pin().remove(&SlotKey::of(*id));
                self.guard.forget(*id);
                // No receiver is fine: nobody holds a connection open.
                let _ = self.ended.send(Some(*id));
            }
            KeyChange::Updated(id) => {
                self.cache.entries.pin().remove(&SlotKey::of(*id));
                self.guard.forget(*id);
                // Open connections re-check the key: it may be disabled now.
                let _ = self.ended.send(Some(*id));
            }
            KeyChange::All => {
                // Confirm every entry on its next use instead of dropping it
                // (which would cost every active key an argon2 run).
                self.cache.resync.fetch_add(1, Ordering::AcqRel);
                self.guard.clear();
                let _ = self.ended.send(None);
            }
            // User secrets concern JWT credentials, which have their own cache.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{token::mint_token, TokenPrefix};

    /// A token's field and its key's id meet in one slot; other ids do not.
    #[test]
    fn a_token_field_and_its_key_id_share_a_slot() {
        let prefix = TokenPrefix::new("st_").unwrap();
        for _ in 0..1000 {
            let (id, token) = mint_token(&prefix);
            let (_, field) =
                crate::token_format::raw_shape(token.expose_secret().as_bytes()).unwrap();
            assert_eq!(SlotKey::of_field(field), SlotKey::of(id));
            let other = KeyId::from_u64(id.as_u64() ^ 1);
            assert!(SlotKey::of_field(field) != SlotKey::of(other));
        }
        for v in [0, 1, 61, 62, u64::MAX - 1, u64::MAX] {
            let id = KeyId::from_u64(v);
            assert_eq!(crate::base62::decode_u64(&id.field()), Some(v));
        }
    }
}
