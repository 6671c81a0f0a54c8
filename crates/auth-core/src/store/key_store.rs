//! The [`KeyStore`] trait every backend implements.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    ChangeFeed, IssuingPrefix, KeyPage, KeyQuery, KeyRecord, KeyUpdate, KeyUse, StoreError,
};
use crate::{policy::CreditSpend, token::SecretCheck, KeyId, TokenPrefix};

/// Where key records live.
///
/// Implementations publish every successful `insert`, `update`, `revoke` and
/// `rotate` on [`KeyStore::changes`] before returning, and stores shared by
/// several processes carry them to the others. `update_hash`, `record_use`
/// and `spend_credit` do not change what a verifier caches and publish
/// nothing.
#[async_trait]
pub trait KeyStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores a new key. Durable when it returns.
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError>;

    /// The key with this id.
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Every key owned by the user, newest first.
    async fn list_by_owner(&self, user_id: &str) -> Result<Vec<KeyRecord>, StoreError>;

    /// Revokes the key at `at` (an earlier revocation time is kept).
    /// `Ok(false)` if there is no such key.
    async fn revoke(&self, id: KeyId, at: OffsetDateTime) -> Result<bool, StoreError>;

    /// Atomically retires `old` and stores `new`.
    ///
    /// When both have credits, `new` takes `old`'s as they stand in the
    /// store at that moment (its `remaining` lowered to `old`'s, and `old`'s
    /// refill time), in the same transaction: credits `old` spent after
    /// `new` was built are not given back.
    ///
    /// `old` must exist ([`StoreError::NotFound`]), not have been replaced
    /// already and not be revoked at `now` ([`StoreError::Conflict`]: of two
    /// concurrent rotations exactly one wins). Its `revoked_at` becomes
    /// `old_ends_at` (or stays earlier) and its `replaced_by` becomes `new.id`.
    async fn rotate(
        &self,
        old: KeyId,
        old_ends_at: OffsetDateTime,
        now: OffsetDateTime,
        new: &KeyRecord,
    ) -> Result<(), StoreError>;

    /// Applies a partial edit and returns the record as stored
    /// ([`StoreError::NotFound`] if there is no such key). Publishes
    /// [`KeyChange::Updated`](crate::store::KeyChange::Updated) before returning, so every verifier drops the
    /// key from its cache and reads the new record on its next use (a
    /// disabled key is refused on the very next request).
    async fn update(&self, id: KeyId, update: &KeyUpdate) -> Result<KeyRecord, StoreError>;

    /// Spends one of the key's credits at `now`, atomically across every
    /// instance sharing the store: first refilled if a refill period began
    /// since the last refill (`remaining = amount`, `refilled_at` = the
    /// period's start), then decremented unless it is zero.
    /// [`CreditSpend::Unlimited`] for a key without credits;
    /// [`StoreError::NotFound`] if there is no such key. Publishes nothing.
    async fn spend_credit(&self, id: KeyId, now: OffsetDateTime)
        -> Result<CreditSpend, StoreError>;

    /// Takes `amount` of the key's credits at `now` if that many are left,
    /// else nothing, atomically across every instance sharing the store
    /// (refilled first, as [`KeyStore::spend_credit`]): how an instance
    /// leases a batch of credits to spend locally. [`CreditSpend::Spent`]
    /// holds the credits left after taking; [`CreditSpend::Exhausted`] means
    /// fewer than `amount` were left and nothing was taken. Publishes
    /// nothing.
    ///
    /// The memory, SQLite and PostgreSQL stores implement it in one
    /// statement; wrappers should delegate. The default takes one credit
    /// with [`KeyStore::spend_credit`] and refuses larger amounts as
    /// `Exhausted`, so a caller falls back to taking one at a time.
    async fn take_credits(
        &self,
        id: KeyId,
        amount: u64,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        match amount {
            0 | 1 => self.spend_credit(id, now).await,
            _ => Ok(CreditSpend::Exhausted),
        }
    }

    /// Gives back `amount` credits taken with [`KeyStore::take_credits`] at
    /// `taken_at` and not spent, unless the key's credits were set or
    /// refilled after `taken_at` (they belonged to a period that is over, or
    /// to a count that was replaced). `Ok(true)` when they were added back.
    /// Publishes nothing.
    ///
    /// The memory, SQLite and PostgreSQL stores implement it; wrappers
    /// should delegate. The default gives nothing back (`Ok(false)`): unspent
    /// credits are lost, never handed out twice.
    async fn return_credits(
        &self,
        id: KeyId,
        amount: u64,
        taken_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let _ = (id, amount, taken_at);
        Ok(false)
    }

    /// Lowers the key's remaining credits to `remaining` when that is below
    /// the stored count (`remaining = MIN(remaining, ?)`), never raising it
    /// and touching no other column: the batched write-back of credits
    /// counted elsewhere (Redis). Publishes nothing, so verifiers keep their
    /// cached keys (a [`KeyChange::Updated`](crate::store::KeyChange::Updated) per key per interval would cost
    /// every instance a store read and an argon2 run). Does nothing for a key
    /// without credits; [`StoreError::NotFound`] if there is no such key.
    ///
    /// The memory, SQLite and PostgreSQL stores implement it; wrappers
    /// should delegate. The default fails.
    async fn lower_credits(&self, id: KeyId, remaining: u64) -> Result<(), StoreError> {
        let _ = (id, remaining);
        Err(StoreError::unavailable(
            "this key store cannot write credit counts back",
        ))
    }

    /// Replaces the hash after a re-hash with other parameters.
    async fn update_hash(&self, id: KeyId, hash: &str) -> Result<(), StoreError>;

    /// Replaces the hash and sets the secret check: how a record made before
    /// checks existed moves to the current scheme on its next successful
    /// verification. The secret is unchanged, so this publishes nothing.
    ///
    /// The default stores the hash only (the record keeps no check and stays
    /// on the slower legacy path); the memory, SQLite and PostgreSQL stores
    /// store both, and wrappers should delegate.
    async fn update_hash_and_check(
        &self,
        id: KeyId,
        hash: &str,
        check: SecretCheck,
    ) -> Result<(), StoreError> {
        let _ = check;
        self.update_hash(id, hash).await
    }

    /// Records last uses, batched. Later times win, and bring their address
    /// with them (a use without an address keeps the one stored).
    async fn record_use(&self, uses: &[KeyUse]) -> Result<(), StoreError>;

    /// Every key matching `query` (state decided at `now`), newest first,
    /// a page at a time: the administrators' view. The SQL stores filter in
    /// `WHERE` and page by `(created_at, id)`.
    ///
    /// The memory, SQLite and PostgreSQL stores implement it; wrappers
    /// should delegate. The default fails.
    async fn list_keys(
        &self,
        query: &KeyQuery,
        now: OffsetDateTime,
    ) -> Result<KeyPage, StoreError> {
        let _ = (query, now);
        Err(StoreError::unavailable(
            "this key store cannot list all keys",
        ))
    }

    /// Keys whose expiry lies in `(after, until]`, that will expire before
    /// they are revoked, and whose "expiring soon" notice has not been
    /// delivered for their current expiry ([`KeyStore::mark_expiry_noticed`]):
    /// ordered by `(expires_at, id)`, at most `limit`. With `after_id`, keys
    /// expiring exactly at `after` with an id after it are included too: a
    /// cursor `(after, after_id)` past the last key of the previous batch,
    /// so a pass moves on past keys whose notice failed. Read by
    /// [`ExpiryNotifier`](crate::expiry_notice::ExpiryNotifier).
    ///
    /// The memory, SQLite and PostgreSQL stores implement it (an index on
    /// `expires_at`); wrappers should delegate. The default fails, so a
    /// store that cannot remember notices never sends them twice.
    async fn expiring_unnoticed(
        &self,
        after: OffsetDateTime,
        after_id: Option<KeyId>,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let _ = (after, after_id, until, limit);
        Err(StoreError::unavailable(
            "this key store keeps no expiry notices",
        ))
    }

    /// Remembers that the notice for `id` expiring at `expires_at` was
    /// delivered, durably: it is not sent again after a restart. Changes
    /// nothing about whether the key works, so it publishes nothing.
    /// `Ok(false)` if there is no such key. The default fails, like
    /// [`KeyStore::expiring_unnoticed`]'s.
    async fn mark_expiry_noticed(
        &self,
        id: KeyId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let _ = (id, expires_at);
        Err(StoreError::unavailable(
            "this key store keeps no expiry notices",
        ))
    }

    /// The feed of changes for caches.
    fn changes(&self) -> &ChangeFeed;

    /// Checks that the backend answers now (a readiness probe): a trivial
    /// round trip for a database, nothing for a store in memory.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Remembers that a service issues `prefix` tokens from this store, as
    /// of `at` (a later record of the same prefix moves its time forward),
    /// so that other tools on the same database, such as the admin command
    /// line, issue keys that service accepts. [`Keys::builder`](crate::Keys::builder)
    /// records its prefix when built, and [`KeyIssuer::record_prefix`](crate::KeyIssuer::record_prefix)
    /// does it on demand. Changes no key, so it publishes nothing.
    ///
    /// The SQLite and PostgreSQL stores keep the prefixes; wrappers should
    /// delegate. The default keeps nothing: no other process can open a
    /// store that lives in memory.
    async fn record_issuing_prefix(
        &self,
        prefix: &TokenPrefix,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let _ = (prefix, at);
        Ok(())
    }

    /// The prefixes recorded by [`KeyStore::record_issuing_prefix`], most
    /// recently recorded first (empty for a store none was recorded in, and
    /// for the default, which keeps none).
    async fn issuing_prefixes(&self) -> Result<Vec<IssuingPrefix>, StoreError> {
        Ok(Vec::new())
    }
}
