//! Issuing, rotating and revoking keys: the only place plaintext tokens exist.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;

use crate::{
    clock::SystemClock, clock::WallClock, policy::KeyPolicy, store::KeyRecord, store::StoreError,
    token::mint_token, token::ParsedToken, token::SecretCheck, token_format::display_hint, KeyId,
    KeyStore, PlaintextToken, Principal, ScopeSet, SecretHasher, TokenPrefix,
};

/// Longest key name accepted.
pub const MAX_NAME_LEN: usize = 100;

/// What to issue.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewKey {
    /// The owner.
    pub owner: Principal,
    /// A label, 1-100 printable characters.
    pub name: String,
    /// Granted scopes.
    pub scopes: ScopeSet,
    /// When it stops working on its own, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// The key creating this one, if a key does (the key-management API);
    /// `None` from the command line or a session.
    pub created_by: Option<KeyId>,
    /// Metadata, allowlist, rate limit and credits (default: none).
    pub policy: KeyPolicy,
}

impl NewKey {
    /// A key that never expires.
    pub fn new(owner: Principal, name: impl Into<String>, scopes: ScopeSet) -> Self {
        Self {
            owner,
            name: name.into(),
            scopes,
            expires_at: None,
            created_by: None,
            policy: KeyPolicy::default(),
        }
    }

    /// Gives the key metadata, an allowlist, a rate limit or credits.
    pub fn policy(mut self, policy: KeyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets an expiry.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Records the key that creates this one.
    pub fn created_by(mut self, key: KeyId) -> Self {
        self.created_by = Some(key);
        self
    }
}

/// A freshly issued key: its record and the plaintext, shown once.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssuedKey {
    /// What was stored.
    pub record: KeyRecord,
    /// The token. Show it to the owner once; it cannot be recovered.
    pub token: PlaintextToken,
}

/// Issuing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The name is empty, too long or has control characters.
    #[error("key name must be 1-{MAX_NAME_LEN} characters with no control characters")]
    InvalidName,
    /// The expiry is not in the future.
    #[error("expires_at must be in the future")]
    InvalidExpiry,
    /// No such key.
    #[error("key not found")]
    NotFound,
    /// The key is revoked, expired or already rotated.
    #[error("{0}")]
    Conflict(String),
    /// The hasher failed.
    #[error(transparent)]
    Hash(#[from] crate::hash::HashError),
    /// The store failed ([`StoreError::Unavailable`] or
    /// [`StoreError::Corrupt`]); `source()` is the backend's error.
    #[error(transparent)]
    Unavailable(StoreError),
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(m) => Self::Conflict(m),
            e => Self::Unavailable(e),
        }
    }
}

/// Mints keys, stores only their argon2 hashes, and rotates and revokes them.
#[derive(Clone)]
pub struct KeyIssuer {
    store: Arc<dyn KeyStore>,
    hasher: SecretHasher,
    prefix: TokenPrefix,
    pub(crate) clock: Arc<dyn WallClock>,
}

impl std::fmt::Debug for KeyIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIssuer")
            .field("prefix", &self.prefix)
            .field("hasher", &self.hasher)
            .finish_non_exhaustive()
    }
}

impl KeyIssuer {
    /// An issuer of `prefix` tokens into `store`.
    pub fn new(store: Arc<dyn KeyStore>, hasher: SecretHasher, prefix: TokenPrefix) -> Self {
        Self {
            store,
            hasher,
            prefix,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for created/expiry/revocation times (default
    /// [`SystemClock`]; tests pass a [`FakeClock`](crate::clock::FakeClock)).
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The prefix of issued tokens.
    pub fn prefix(&self) -> &TokenPrefix {
        &self.prefix
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// The clock behind created, expiry and revocation times (named apart
    /// from the [`clock`](Self::clock) setter).
    pub fn wall_clock(&self) -> &Arc<dyn WallClock> {
        &self.clock
    }

    /// The hasher keys are hashed with.
    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    /// Now, to the microsecond: what SQL stores keep, so a record reads back
    /// exactly as it was issued.
    pub(crate) fn now(&self) -> OffsetDateTime {
        let t = self.clock.now();
        t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
            .unwrap_or(t)
    }

    /// Records this issuer's prefix in its store
    /// ([`KeyStore::record_issuing_prefix`]), so that the admin command line
    /// issues keys with it by default. [`Keys::builder`](crate::Keys::builder)
    /// does this when built; an issuer made with [`KeyIssuer::new`] records
    /// its prefix only when this is called.
    pub async fn record_prefix(&self) -> Result<(), StoreError> {
        self.store
            .record_issuing_prefix(&self.prefix, self.now())
            .await
    }

    /// Issues a key. The plaintext is in the result and nowhere else.
    pub async fn issue(&self, new: NewKey) -> Result<IssuedKey, IssueError> {
        let now = self.now();
        validate_name(&new.name)?;
        if new.expires_at.is_some_and(|t| t <= now) {
            return Err(IssueError::InvalidExpiry);
        }
        let (mut record, token) = self
            .mint(new.owner, new.name, new.scopes, new.expires_at, now)
            .await?;
        record.created_by = new.created_by;
        set_policy(&mut record, new.policy);
        self.store.insert(&record).await?;
        Ok(IssuedKey { record, token })
    }

    async fn mint(
        &self,
        owner: Principal,
        name: String,
        scopes: ScopeSet,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(KeyRecord, PlaintextToken), IssueError> {
        let (id, token) = mint_token(&self.prefix);
        let parsed = ParsedToken::parse(token.expose_secret())
            .map_err(|e| IssueError::Hash(crate::hash::HashError::Failed(e.into())))?;
        let hash = self.hasher.hash(parsed.secret()).await?;
        let check = SecretCheck::compute(id, parsed.prefix(), parsed.secret());
        let mut record = KeyRecord::new(
            id,
            owner,
            name,
            scopes,
            now,
            display_hint(token.expose_secret()),
            hash,
        );
        record.expires_at = expires_at;
        record.check = Some(check);
        Ok((record, token))
    }

    /// Replaces a key with a new one (same owner, name, scopes, expiry and
    /// policy; its credits carry over as they stand in the store when the
    /// rotation commits, so rotating never refills them and never gives
    /// back a credit spent meanwhile).
    ///
    /// The old key keeps its own credits during a grace period, so a grace
    /// period on a key with credits lets both spend them: the key router
    /// refuses that (422 `grace_not_allowed_with_credits`); callers of this
    /// method should pass `Duration::ZERO` for such keys.
    ///
    /// The old key keeps working for `grace` (never past its own expiry);
    /// with `Duration::ZERO` it stops at once. Of two concurrent rotations of
    /// one key, exactly one succeeds; the other gets [`IssueError::Conflict`].
    pub async fn rotate(&self, id: KeyId, grace: Duration) -> Result<IssuedKey, IssueError> {
        self.rotate_by(id, grace, None).await
    }

    /// [`rotate`](Self::rotate), recording `created_by` as the key that
    /// made the replacement (the key-management API passes the calling key).
    pub async fn rotate_by(
        &self,
        id: KeyId,
        grace: Duration,
        created_by: Option<KeyId>,
    ) -> Result<IssuedKey, IssueError> {
        self.rotate_within(id, grace, created_by, None).await
    }

    /// [`rotate_by`](Self::rotate_by), with the replacement expiring no
    /// later than `latest` (a service-wide maximum lifetime): the old key's
    /// expiry, or `latest` if that is earlier or the old key has none.
    pub async fn rotate_within(
        &self,
        id: KeyId,
        grace: Duration,
        created_by: Option<KeyId>,
        latest: Option<OffsetDateTime>,
    ) -> Result<IssuedKey, IssueError> {
        let old = self.store.get(id).await?.ok_or(IssueError::NotFound)?;
        let now = self.now();
        let expires_at = match (old.expires_at, latest) {
            (Some(e), Some(l)) => Some(e.min(l)),
            (e, l) => e.or(l),
        };
        if old.replaced_by.is_some() || old.check_active(now).is_err() {
            return Err(IssueError::Conflict(
                "key is revoked, expired or already rotated".into(),
            ));
        }
        let mut ends = grace_end(now, grace);
        if let Some(exp) = old.expires_at {
            ends = ends.min(exp);
        }
        let policy = KeyPolicy::of(&old).unwrap_or_default();
        let (mut record, token) = self
            .mint(old.owner, old.name, old.scopes, expires_at, now)
            .await?;
        record.created_by = created_by;
        set_policy(&mut record, policy);
        self.store.rotate(id, ends, now, &record).await?;
        Ok(IssuedKey { record, token })
    }

    /// Revokes a key at once. `Ok(false)` if there is no such key.
    pub async fn revoke(&self, id: KeyId) -> Result<bool, StoreError> {
        self.store.revoke(id, self.now()).await
    }

    /// The user's keys, newest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.store.list_by_owner(user_id).await
    }

    /// One key.
    pub async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.store.get(id).await
    }
}

fn set_policy(record: &mut KeyRecord, policy: KeyPolicy) {
    record.meta = policy.meta;
    record.external_id = policy.external_id;
    record.ip_allowlist = policy.ip_allowlist;
    record.rate_limit = policy.rate_limit;
    record.credits = policy.credits;
}

/// The latest instant a grace period can end: the end of year 9999, which
/// every store can represent.
const LATEST: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59.999999 UTC);

/// `now + grace`, saturating at [`LATEST`] (a huge grace means "until the
/// key's own expiry, if any"), never a panic.
pub(crate) fn grace_end(now: OffsetDateTime, grace: Duration) -> OffsetDateTime {
    time::Duration::try_from(grace)
        .ok()
        .and_then(|g| now.checked_add(g))
        .map_or(LATEST, |t| t.min(LATEST))
}

/// Checks a key name: 1-100 characters, none of them control characters.
pub fn validate_name(name: &str) -> Result<(), IssueError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_LEN || name.chars().any(char::is_control) || name.trim().is_empty() {
        return Err(IssueError::InvalidName);
    }
    Ok(())
}
