//! The verifier: token in, [`AuthContext`] or [`AuthError`] out.
//!
//! Hot path: a token whose secret was verified once is checked against an
//! in-memory cache (keyed SipHash digest of the token, constant-time compare):
//! no argon2, no store read. Store changes (revoke, rotate) drop cache entries
//! synchronously through the store's [`ChangeFeed`](crate::store::ChangeFeed), so a
//! request made after `revoke` returns is refused.
//!
//! Cold path: parse and checksum (garbage never reaches the store), store read,
//! the record's secret check (32 bits of a fast hash: all but one wrong
//! secret in 2^32 stop here), then one argon2 run per key id at a time
//! (concurrent requests with the same token wait for it and then hit the
//! cache). Argon2 parameters are cheap by default (the secrets are random
//! 256-bit values), so a restarted instance serves every key at once.
//!
//! Attack path: see `guard.rs`: unknown ids cost one store read and are then
//! remembered; a key's secret check is remembered, so a wrong secret costs a
//! fast hash and no store read; no backoff locks the owner out (only legacy
//! records without a check keep a per-id backoff until they migrate).
//!
//! Resync: a [`KeyChange::All`](crate::store::KeyChange::All) makes every cached
//! entry confirm itself against the store on its next use (record compare,
//! no argon2); open connections re-check spread over a few seconds.

mod builder;
mod cache;
mod cold;
mod guard;
mod hot;
mod lifecycle;
mod usage;
mod watch;

use std::{net::IpAddr, sync::Arc};

use dashmap::DashMap;

pub use self::builder::VerifierBuilder;
pub use self::watch::{CredentialChange, CredentialWatch};
use self::{
    cache::{CacheInvalidator, KeyCache},
    guard::AttackGuard,
    hot::Cached,
    usage::UsageRecorder,
};
use crate::{
    clock::WallClock, digest::DigestKey, scope::ScopePolicy, AuthContext, AuthError, KeyId,
    KeyStore, RejectReason, SecretHasher, TokenPrefix,
};

/// A credential presented to [`Verifier::verify`]: the token, and the
/// address of the client that presented it when known.
///
/// A `&str` (or any `&impl AsRef<str>`) converts into one without a
/// client address.
#[derive(Clone, Copy)]
pub struct Credential<'a> {
    token: &'a str,
    client: Option<IpAddr>,
}

impl<'a> Credential<'a> {
    /// The token (an API key, or a JWT with the `jwt` feature), with no
    /// client address.
    pub fn new(token: &'a str) -> Self {
        Self {
            token,
            client: None,
        }
    }

    /// The resolved client address of the request: recorded as the key's
    /// last-used address (batched like `last_used_at`, at most once per key
    /// per [`last_used_interval`](VerifierBuilder::last_used_interval)). A
    /// use from outside the key's IP allowlist is not recorded (the auth
    /// layer refuses it).
    pub fn client(mut self, client: impl Into<Option<IpAddr>>) -> Self {
        self.client = client.into();
        self
    }
}

/// Any text: `&str`, `&String`, `&Arc<str>`.
impl<'a, T: AsRef<str> + ?Sized> From<&'a T> for Credential<'a> {
    fn from(token: &'a T) -> Self {
        Self::new(token.as_ref())
    }
}

// Never prints the token.
impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Verifies API-key tokens. Cheap to clone; clones share caches.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_core::*;
/// let store = Arc::new(MemoryKeyStore::new());
/// let hasher = SecretHasher::for_tests();
/// let prefix = TokenPrefix::new("sk_live_").unwrap();
/// // Or `Verifier::builder(store).hasher(..).prefix(..)` with a separate `KeyIssuer`.
/// let Keys { issuer, verifier, .. } = Keys::builder(store, prefix).hasher(hasher).build();
///
/// let key = issuer
///     .issue(NewKey::new(Principal::user("alice"), "n8n", ScopeSet::parse(["skills.invoke"]).unwrap()))
///     .await
///     .unwrap();
/// let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
/// assert!(ctx.scopes().has("skills.invoke"));
///
/// issuer.revoke(key.record.id).await.unwrap();
/// let err = verifier.verify(key.token.expose_secret()).await.unwrap_err();
/// assert_eq!(err.reason(), RejectReason::Revoked);
/// # });
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    hasher: SecretHasher,
    prefixes: Vec<TokenPrefix>,
    policy: ScopePolicy,
    clock: Arc<dyn WallClock>,
    digest_key: DigestKey,
    cache: Arc<KeyCache>,
    guard: Arc<AttackGuard>,
    inflight: DashMap<KeyId, Arc<tokio::sync::Mutex<()>>>,
    usage: UsageRecorder,
    #[cfg(feature = "jwt")]
    jwt: Option<crate::jwt::JwtAuthority>,
    // Keeps the feed subscription alive as long as the verifier.
    _invalidator: Arc<CacheInvalidator>,
    /// The shared watches of open connections' credentials.
    watches: Arc<watch::Watches>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("prefixes", &self.inner.prefixes)
            .field("cached_keys", &self.inner.cache.entries.len())
            .finish_non_exhaustive()
    }
}

fn unauthorized(reason: RejectReason) -> AuthError {
    AuthError::unauthorized(reason)
}

impl Verifier {
    /// The store behind this verifier.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// The clock this verifier reads.
    pub fn clock(&self) -> &Arc<dyn WallClock> {
        &self.inner.clock
    }

    /// The token prefixes accepted (empty: any).
    pub fn prefixes(&self) -> &[TokenPrefix] {
        &self.inner.prefixes
    }

    /// Number of keys in the verified cache.
    pub fn cached_keys(&self) -> usize {
        self.inner.cache.entries.len()
    }

    /// Verifies a credential: a token (`&str`), or a [`Credential`] that
    /// also names the client address the request came from.
    ///
    /// Errors are [`AuthError::unauthorized`] with the reason (malformed, bad
    /// checksum, unknown, revoked, expired, wrong secret, throttled), or
    /// [`AuthError::unavailable`] when the store fails: never a pass.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use auth_core::*;
    /// # let Keys { issuer, verifier, .. } = Keys::builder(Arc::new(MemoryKeyStore::new()), TokenPrefix::new("st_").unwrap())
    /// #   .hasher(SecretHasher::for_tests())
    /// #   .build();
    /// # let key = issuer.issue(NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty())).await.unwrap();
    /// let token = key.token.expose_secret();
    /// let client: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    /// let ctx = verifier.verify(Credential::new(token).client(client)).await.unwrap();
    /// assert_eq!(ctx.actor().user_id(), "ana");
    /// # });
    /// ```
    pub async fn verify<'a>(
        &self,
        credential: impl Into<Credential<'a>>,
    ) -> Result<AuthContext, AuthError> {
        let Credential { token, client } = credential.into();
        #[cfg(feature = "jwt")]
        if let Some(parts) = crate::jwt::jwt_parts(token) {
            return match &self.inner.jwt {
                Some(jwt) => match jwt.verify_cached_parts(token, parts) {
                    Some(result) => result,
                    None => Box::pin(jwt.verify_uncached(token)).await,
                },
                None => Err(unauthorized(RejectReason::Malformed)),
            };
        }
        let (slot, digest) = self.cache_key(token.as_bytes())?;
        let id = match self.check_cached_now(slot, &digest, client) {
            Cached::Hit(result) => return self.refine(token.as_bytes(), result),
            // The digest matched a verified token's, so this parses.
            Cached::Confirm(..) => self
                .parse(token)
                .map_err(|e| unauthorized(hot::token_reason(e)))?
                .key_id(),
            // Settle what needs no I/O before allocating the slow path.
            Cached::Miss => self.settle_miss(token, &digest)?,
        };
        // Boxed so the hot path's future stays small.
        Box::pin(self.verify_uncached(token, id, digest, client)).await
    }

    /// Writes out pending `last_used_at` updates (call on graceful shutdown).
    pub async fn flush_usage(&self) {
        self.inner.usage.flush().await;
    }
}
