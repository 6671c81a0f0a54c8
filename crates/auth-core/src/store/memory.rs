//! An in-memory store on dashmap: for tests, demos and single-process services
//! that can lose their keys on restart.

use async_trait::async_trait;
use dashmap::DashMap;
use time::OffsetDateTime;

use super::{
    ChangeFeed, KeyChange, KeyPage, KeyQuery, KeyRecord, KeyStore, KeyUpdate, KeyUse, StoreError,
};
use crate::{policy::CreditSpend, token::SecretCheck, KeyId};

/// Keys in memory. Lost on restart.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::sync::Arc;
/// use auth_core::{Keys, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix};
/// let store = Arc::new(MemoryKeyStore::new());
/// let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
///     .hasher(SecretHasher::for_tests())
///     .build();
/// let issued = issuer.issue(NewKey::new(Principal::user("alice"), "ci", ScopeSet::empty())).await.unwrap();
/// let ctx = verifier.verify(issued.token.expose_secret()).await.unwrap();
/// assert_eq!(ctx.effective_user(), "alice");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: DashMap<KeyId, KeyRecord>,
    /// The expiry each key's "expiring soon" notice was delivered for.
    expiry_notices: DashMap<KeyId, OffsetDateTime>,
    changes: ChangeFeed,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        use dashmap::mapref::entry::Entry;
        match self.keys.entry(record.id) {
            Entry::Occupied(_) => return Err(StoreError::Conflict("duplicate key id".into())),
            Entry::Vacant(v) => {
                v.insert(record.clone());
            }
        }
        self.changes.publish(&KeyChange::Updated(record.id));
        Ok(())
    }

    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.keys.get(&id).map(|r| r.clone()))
    }

    async fn list_by_owner(&self, user_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let mut v: Vec<KeyRecord> = self
            .keys
            .iter()
            .filter(|r| r.owner.user_id() == user_id)
            .map(|r| r.clone())
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(v)
    }

    async fn revoke(&self, id: KeyId, at: OffsetDateTime) -> Result<bool, StoreError> {
        let Some(mut r) = self.keys.get_mut(&id) else {
            return Ok(false);
        };
        r.revoked_at = Some(r.revoked_at.map_or(at, |t| t.min(at)));
        drop(r);
        self.changes.publish(&KeyChange::Revoked(id));
        Ok(true)
    }

    async fn rotate(
        &self,
        old: KeyId,
        old_ends_at: OffsetDateTime,
        now: OffsetDateTime,
        new: &KeyRecord,
    ) -> Result<(), StoreError> {
        // Checked before taking the shard lock below: dashmap deadlocks if a
        // shard is read while the same thread holds its write lock.
        if self.keys.contains_key(&new.id) {
            return Err(StoreError::Conflict("duplicate key id".into()));
        }
        let mut new = new.clone();
        {
            // The shard lock on `old` makes check-and-set atomic.
            let mut r = self.keys.get_mut(&old).ok_or(StoreError::NotFound)?;
            if r.replaced_by.is_some() {
                return Err(StoreError::Conflict("key was already rotated".into()));
            }
            if r.check_active(now).is_err() {
                return Err(StoreError::Conflict("key is revoked or expired".into()));
            }
            r.revoked_at = Some(r.revoked_at.map_or(old_ends_at, |t| t.min(old_ends_at)));
            r.replaced_by = Some(new.id);
            // Under the same lock as spends: none is given back.
            if let (Some(carried), Some(current)) = (&mut new.credits, &r.credits) {
                *carried = carried.carried_from(current);
            }
        }
        let new_id = new.id;
        self.keys.insert(new_id, new);
        self.changes.publish(&KeyChange::Revoked(old));
        self.changes.publish(&KeyChange::Updated(new_id));
        Ok(())
    }

    async fn update(&self, id: KeyId, update: &KeyUpdate) -> Result<KeyRecord, StoreError> {
        let record = {
            let mut r = self.keys.get_mut(&id).ok_or(StoreError::NotFound)?;
            // Checked under the shard lock: compare-and-set.
            if !update.still_as_read(&r) {
                return Err(super::key_update::changed_since_read());
            }
            update.apply_to(&mut r);
            r.clone()
        };
        self.changes.publish(&KeyChange::Updated(id));
        Ok(record)
    }

    async fn spend_credit(
        &self,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        self.take_credits(id, 1, now).await
    }

    async fn take_credits(
        &self,
        id: KeyId,
        amount: u64,
        now: OffsetDateTime,
    ) -> Result<CreditSpend, StoreError> {
        // The shard lock makes refill-and-take atomic.
        let mut r = self.keys.get_mut(&id).ok_or(StoreError::NotFound)?;
        Ok(match &mut r.credits {
            Some(credits) => credits.take(amount, now),
            None => CreditSpend::Unlimited,
        })
    }

    async fn return_credits(
        &self,
        id: KeyId,
        amount: u64,
        taken_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut r = self.keys.get_mut(&id).ok_or(StoreError::NotFound)?;
        Ok(match &mut r.credits {
            Some(credits) => credits.give_back(amount, taken_at),
            None => false,
        })
    }

    async fn lower_credits(&self, id: KeyId, remaining: u64) -> Result<(), StoreError> {
        let mut r = self.keys.get_mut(&id).ok_or(StoreError::NotFound)?;
        if let Some(credits) = &mut r.credits {
            credits.remaining = credits.remaining.min(remaining);
        }
        Ok(())
    }

    async fn update_hash(&self, id: KeyId, hash: &str) -> Result<(), StoreError> {
        let mut r = self.keys.get_mut(&id).ok_or(StoreError::NotFound)?;
        r.hash = hash.to_owned();
        Ok(())
    }

    async fn update_hash_and_check(
        &self,
        id: KeyId,
        hash: &str,
        check: SecretCheck,
    ) -> Result<(), StoreError> {
        let mut r = self.keys.get_mut(&id).ok_or(StoreError::NotFound)?;
        r.hash = hash.to_owned();
        r.check = Some(check);
        Ok(())
    }

    async fn record_use(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        for u in uses {
            if let Some(mut r) = self.keys.get_mut(&u.id) {
                if r.last_used_at.is_none_or(|t| t < u.at) {
                    r.last_used_at = Some(u.at);
                    if u.ip.is_some() {
                        r.last_used_ip = u.ip;
                    }
                }
            }
        }
        Ok(())
    }

    async fn list_keys(
        &self,
        query: &KeyQuery,
        now: OffsetDateTime,
    ) -> Result<KeyPage, StoreError> {
        let limit = query.effective_limit();
        let mut v: Vec<KeyRecord> = self
            .keys
            .iter()
            .filter(|r| query.matches(r, now))
            .map(|r| r.clone())
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        v.truncate(limit + 1);
        Ok(KeyPage::from_overfetch(v, limit))
    }

    async fn expiring_unnoticed(
        &self,
        after: OffsetDateTime,
        after_id: Option<KeyId>,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut v: Vec<KeyRecord> = self
            .keys
            .iter()
            .filter(|r| {
                r.expires_at.is_some_and(|e| {
                    (e > after || (e == after && after_id.is_some_and(|a| r.id > a)))
                        && e <= until
                        && r.revoked_at.is_none_or(|rev| rev > e)
                        && self.expiry_notices.get(&r.id).is_none_or(|n| *n != e)
                })
            })
            .map(|r| r.clone())
            .collect();
        v.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then(a.id.cmp(&b.id)));
        v.truncate(limit);
        Ok(v)
    }

    async fn mark_expiry_noticed(
        &self,
        id: KeyId,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if !self.keys.contains_key(&id) {
            return Ok(false);
        }
        self.expiry_notices.insert(id, expires_at);
        Ok(true)
    }

    fn changes(&self) -> &ChangeFeed {
        &self.changes
    }
}
