//! JWT credentials signed with per-user secrets (HS256):
//! claims `sub`, `iat`, `iss`; no expiry unless the service asks for one;
//! regenerating a user's secret invalidates every token signed with the old one.
//!
//! Secrets are random 256-bit values sealed with a [`MasterKey`] in a
//! [`UserSecretStore`]. Verification checks the header's `alg` against the
//! configured one (so `none` and algorithm confusion are refused), the issuer
//! and the signature (`jsonwebtoken`, constant-time HMAC compare). A verified
//! token is cached by a keyed digest, like API keys; regeneration drops the
//! user's cached tokens at once through the store's change feed.

mod master_key;
mod secrets;

use std::{
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use dashmap::DashMap;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::{rngs::OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use master_key::{MasterKey, MasterKeyError};
pub use secrets::{MemoryUserSecrets, SealedSecret, UserSecretStore};

use crate::{
    clock::SystemClock,
    clock::WallClock,
    digest::{Digest, DigestKey},
    store::ChangeListener,
    store::KeyChange,
    store::StoreError,
    AuthContext, AuthError, CredentialKind, Principal, RejectReason, ScopeSet,
};

/// Longest JWT looked at.
pub const MAX_JWT_LEN: usize = 4096;
/// Longest `sub` accepted.
pub const MAX_SUBJECT_LEN: usize = 128;

/// Whether `token` has the shape of a JWT (`eyJ…` with two dots). API-key
/// tokens never contain a dot, so the kind is told apart without trying both.
#[inline]
pub fn looks_like_jwt(token: &str) -> bool {
    jwt_parts(token).is_some()
}

/// The signed part and signature of a JWT-shaped token: the verifier finds
/// them once and hands them to [`JwtAuthority::verify_cached_parts`].
/// Inlined, so that an API key costs one 3-byte compare.
#[inline]
pub(crate) fn jwt_parts(token: &str) -> Option<(&str, &str)> {
    if token.starts_with("eyJ") {
        split_jwt(token)
    } else {
        None
    }
}

/// A JWT's signed part (header and payload) and its signature, if `token`
/// has exactly two dots. `memchr`'s vector search reads the token once;
/// `str`'s char searches (`rsplit_once`) and a byte-wise count cost several
/// times as much on a 150-byte token.
fn split_jwt(token: &str) -> Option<(&str, &str)> {
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let (_, second) = (dots.next()?, dots.next()?);
    if dots.next().is_some() {
        return None;
    }
    // A dot is ASCII, so both sides are on character boundaries.
    Some((&token[..second], &token[second + 1..]))
}

/// What the cache keys a token by: its parts, or the whole token as the
/// "signature" of one that is not JWT-shaped.
fn cache_parts(token: &str) -> (&str, &str) {
    split_jwt(token).unwrap_or(("", token))
}

/// The claims of our tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Expiry (Unix seconds), only when the service asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// Issuing or regenerating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The user id is empty or too long.
    #[error("invalid user id")]
    InvalidUser,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored secret does not open with the master key.
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Issues and verifies per-user-secret JWTs. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_core::jwt::{JwtAuthority, MasterKey, MemoryUserSecrets};
/// let jwt = JwtAuthority::new(Arc::new(MemoryUserSecrets::new()), MasterKey::generate(), "tools");
/// let old = jwt.token_for("user-1").await.unwrap();
/// assert_eq!(jwt.verify(&old).await.unwrap().effective_user(), "user-1");
/// let new = jwt.regenerate("user-1").await.unwrap();
/// assert!(jwt.verify(&old).await.is_err());
/// assert!(jwt.verify(&new).await.is_ok());
/// # });
/// ```
#[derive(Clone)]
pub struct JwtAuthority {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn UserSecretStore>,
    master: MasterKey,
    issuer: String,
    scopes: ScopeSet,
    expires_after: Option<Duration>,
    clock: Arc<dyn WallClock>,
    digest_key: DigestKey,
    /// Seeds the 64-bit check of a cached token's header and payload.
    signed_hasher: foldhash::fast::RandomState,
    cache: Arc<JwtCache>,
}

impl std::fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("issuer", &self.inner.issuer)
            .field("cached_tokens", &self.inner.cache.tokens.len())
            .finish_non_exhaustive()
    }
}

struct CachedToken {
    /// [`JwtAuthority::cache_key`]'s check of header and payload.
    signed: u64,
    user: Arc<str>,
    exp: Option<i64>,
    ctx: AuthContext,
}

struct JwtCache {
    /// Keyed by a keyed digest (random to an attacker), so a fast hash is
    /// safe. A lock-free map, as the key cache's: reads write nothing shared.
    tokens: papaya::HashMap<Digest, CachedToken, foldhash::fast::RandomState>,
    /// Subjects found to have no secret, until when (ns): a flood of tokens
    /// naming unknown users costs one store read per user, like unknown key
    /// ids. Keyed by attacker-chosen strings, so with the default SipHash.
    unknown: DashMap<Box<str>, i64>,
    epoch: AtomicU64,
    capacity: usize,
    /// Tells open connections: `Some(user)` regenerated, `None` anything.
    ended: tokio::sync::broadcast::Sender<Option<Arc<str>>>,
}

/// How long a subject without a secret is remembered.
const UNKNOWN_SUBJECT_TTL: i64 = 60_000_000_000;

impl ChangeListener for JwtCache {
    fn on_change(&self, change: &KeyChange) {
        match change {
            KeyChange::UserSecret(user) => {
                self.epoch.fetch_add(1, Ordering::AcqRel);
                self.tokens.pin().retain(|_, t| &*t.user != user.as_str());
                self.unknown.remove(user.as_str());
                let _ = self.ended.send(Some(user.as_str().into()));
            }
            KeyChange::All => {
                self.epoch.fetch_add(1, Ordering::AcqRel);
                self.tokens.pin().clear();
                self.unknown.clear();
                let _ = self.ended.send(None);
            }
            _ => {}
        }
    }
}

/// Configures a [`JwtAuthority`].
pub struct JwtAuthorityBuilder {
    store: Arc<dyn UserSecretStore>,
    master: MasterKey,
    issuer: String,
    scopes: ScopeSet,
    expires_after: Option<Duration>,
    clock: Arc<dyn WallClock>,
}

// By hand: the secret store is a trait object, and the master key stays out.
impl std::fmt::Debug for JwtAuthorityBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthorityBuilder")
            .field("issuer", &self.issuer)
            .field("scopes", &self.scopes)
            .field("expires_after", &self.expires_after)
            .finish_non_exhaustive()
    }
}

impl JwtAuthorityBuilder {
    /// Scopes every JWT grants (e.g. all of them, for full access). Default: none.
    pub fn scopes(mut self, scopes: ScopeSet) -> Self {
        self.scopes = scopes;
        self
    }

    /// Issue tokens with `exp = iat + after`, and require `exp` when verifying.
    pub fn expiry(mut self, after: Duration) -> Self {
        self.expires_after = Some(after);
        self
    }

    /// The clock for `iat` and `exp`.
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the authority and subscribes it to the store's change feed.
    pub fn build(self) -> JwtAuthority {
        let cache = Arc::new(JwtCache {
            tokens: papaya::HashMap::default(),
            unknown: DashMap::new(),
            epoch: AtomicU64::new(0),
            capacity: 100_000,
            ended: tokio::sync::broadcast::channel(64).0,
        });
        let weak: std::sync::Weak<dyn ChangeListener> =
            Arc::downgrade(&(cache.clone() as Arc<dyn ChangeListener>));
        self.store.secret_changes().subscribe(weak);
        JwtAuthority {
            inner: Arc::new(Inner {
                store: self.store,
                master: self.master,
                issuer: self.issuer,
                scopes: self.scopes,
                expires_after: self.expires_after,
                clock: self.clock,
                digest_key: DigestKey::random(),
                signed_hasher: foldhash::fast::RandomState::default(),
                cache,
            }),
        }
    }
}

impl JwtAuthority {
    /// An authority issuing tokens with `iss = issuer`, secrets in `store`,
    /// no scopes and no expiry.
    pub fn new(
        store: Arc<dyn UserSecretStore>,
        master: MasterKey,
        issuer: impl Into<String>,
    ) -> Self {
        Self::builder(store, master, issuer).build()
    }

    /// Starts configuring an authority.
    pub fn builder(
        store: Arc<dyn UserSecretStore>,
        master: MasterKey,
        issuer: impl Into<String>,
    ) -> JwtAuthorityBuilder {
        JwtAuthorityBuilder {
            store,
            master,
            issuer: issuer.into(),
            scopes: ScopeSet::empty(),
            expires_after: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The user's current token, making their secret on first use.
    ///
    /// Two concurrent first calls agree on one secret (the store inserts it
    /// only if absent; the loser reads the winner's), so neither token dies.
    pub async fn token_for(&self, user_id: &str) -> Result<String, JwtError> {
        check_user(user_id)?;
        let store = &self.inner.store;
        let secret = match store.get_secret(user_id).await? {
            Some(s) => self.inner.master.open(user_id, &s.sealed)?,
            None => {
                let (secret, sealed) = self.new_secret(user_id);
                if store.insert_secret_if_absent(user_id, &sealed).await? {
                    secret
                } else {
                    let s = store.get_secret(user_id).await?.ok_or_else(|| {
                        StoreError::Conflict("user secret removed while being made".into())
                    })?;
                    self.inner.master.open(user_id, &s.sealed)?
                }
            }
        };
        self.sign(user_id, &secret)
    }

    /// Replaces the user's secret: every token signed with the old one stops
    /// working at once. Returns a token signed with the new secret.
    /// The store numbers the new secret's generation in the same write
    /// ([`UserSecretStore::replace_secret`]), so concurrent regenerations
    /// each end the connections of the others' tokens.
    pub async fn regenerate(&self, user_id: &str) -> Result<String, JwtError> {
        check_user(user_id)?;
        let (secret, sealed) = self.new_secret(user_id);
        self.inner.store.replace_secret(user_id, &sealed).await?;
        self.sign(user_id, &secret)
    }

    /// A fresh secret and its sealed form.
    fn new_secret(&self, user_id: &str) -> (Zeroizing<[u8; 32]>, Vec<u8>) {
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut secret[..]);
        let sealed = self.inner.master.seal(user_id, &secret);
        (secret, sealed)
    }

    /// Where the users' secrets are kept.
    pub(crate) fn secret_store(&self) -> Arc<dyn UserSecretStore> {
        self.inner.store.clone()
    }

    /// Resolves once `user_id`'s signing secret is no longer at
    /// `generation` (regenerated), or cannot be confirmed (fail closed).
    /// For connections authenticated once by a JWT: close them when it
    /// resolves. Use [`AuthContext::secret_generation`] of the connection's
    /// context, or simply [`Verifier::credential_ended`](crate::Verifier::credential_ended).
    pub fn secret_ended(
        &self,
        user_id: &str,
        generation: i64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Subscribed before the store is read, so no change slips between.
        let mut changes = self.inner.cache.ended.subscribe();
        let store = self.inner.store.clone();
        let user: Arc<str> = user_id.into();
        async move {
            let mut after_resync = false;
            loop {
                let current = {
                    let (store, user) = (&store, &user);
                    crate::recheck::recheck(after_resync, move || async move {
                        store
                            .get_secret(user)
                            .await
                            .map(|s| s.map(|s| s.generation))
                    })
                    .await
                };
                match current {
                    Ok(Some(g)) if g == generation => {}
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot confirm a connection's user secret; ending it");
                        return;
                    }
                }
                after_resync = loop {
                    match changes.recv().await {
                        Ok(Some(u)) if *u != *user => continue,
                        Ok(Some(_)) => break false,
                        Ok(None) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            break true
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            return std::future::pending().await
                        }
                    }
                };
            }
        }
    }

    fn sign(&self, user_id: &str, secret: &[u8; 32]) -> Result<String, JwtError> {
        let now = self.inner.clock.now().unix_timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            iat: now,
            iss: self.inner.issuer.clone(),
            exp: self.inner.expires_after.map(|d| now + d.as_secs() as i64),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .map_err(|e| JwtError::Sign(e.into()))
    }

    /// The synchronous hot path: `Some` for a token decided without I/O (a
    /// verified token in the cache, or one too long to look at).
    pub fn verify_cached(&self, token: &str) -> Option<Result<AuthContext, AuthError>> {
        self.verify_cached_parts(token, cache_parts(token))
    }

    /// [`JwtAuthority::verify_cached`] with the token's parts already found.
    pub(crate) fn verify_cached_parts(
        &self,
        token: &str,
        parts: (&str, &str),
    ) -> Option<Result<AuthContext, AuthError>> {
        let inner = &*self.inner;
        if token.len() > MAX_JWT_LEN {
            return Some(Err(AuthError::unauthorized(RejectReason::Malformed)));
        }
        // While other instances' regenerations may go unseen (the store's
        // feed is out of sync), every token is checked against the store.
        if !inner.store.secret_changes().is_in_sync() {
            return None;
        }
        let (digest, signed) = self.cache_key(parts);
        let tokens = inner.cache.tokens.pin();
        let hit = tokens.get(&digest)?;
        if hit.signed != signed {
            // Same signature, other header or payload: let the full check refuse it.
            return None;
        }
        if hit
            .exp
            .is_some_and(|exp| exp <= inner.clock.now_nanos() / 1_000_000_000)
        {
            return Some(Err(AuthError::unauthorized(RejectReason::Expired)));
        }
        Some(Ok(hit.ctx.clone()))
    }

    /// A token's cache key and a check of the rest: a keyed digest of the
    /// signature and a 64-bit seeded hash of header and payload. A hit needs
    /// both, so a token that differs anywhere misses. The signature is the
    /// unforgeable part (nobody without the token can aim at its digest), and
    /// a third of the ~150-byte token; the 64-bit check only stops the holder
    /// of a verified token from reusing its signature with another payload,
    /// which could at most grant that token's own cached context anyway.
    /// `parts` are the token's signed part and signature ([`cache_parts`]).
    fn cache_key(&self, (signed, signature): (&str, &str)) -> (Digest, u64) {
        let inner = &*self.inner;
        let digest = inner.digest_key.digest(signature.as_bytes());
        (digest, inner.signed_hasher.hash_one(signed))
    }

    /// Verifies a token: algorithm, issuer, signature, expiry if required.
    pub async fn verify(&self, token: &str) -> Result<AuthContext, AuthError> {
        match self.verify_cached(token) {
            Some(result) => result,
            None => self.verify_uncached(token).await,
        }
    }

    /// The slow path, after [`JwtAuthority::verify_cached`] missed: header,
    /// store read, signature.
    pub(crate) async fn verify_uncached(&self, token: &str) -> Result<AuthContext, AuthError> {
        let inner = &*self.inner;
        let (digest, signed) = self.cache_key(cache_parts(token));
        let now = inner.clock.now().unix_timestamp();
        let epoch = inner.cache.epoch.load(Ordering::Acquire);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::unauthorized(RejectReason::Malformed))?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::unauthorized(RejectReason::Malformed));
        }
        let sub = unverified_subject(token)?;
        let now_ns = inner.clock.now_nanos();
        if inner
            .cache
            .unknown
            .get(sub.as_str())
            .is_some_and(|until| *until > now_ns)
        {
            return Err(AuthError::unauthorized(RejectReason::UnknownKey));
        }
        let sealed = inner.store.get_secret(&sub).await.map_err(|e| {
            tracing::warn!(error = %e, "user secret store read failed");
            AuthError::unavailable("Authentication service temporarily unavailable")
        })?;
        let Some(sealed) = sealed else {
            self.remember_unknown(&sub, now_ns, epoch);
            return Err(AuthError::unauthorized(RejectReason::UnknownKey));
        };
        let secret = inner.master.open(&sub, &sealed.sealed).map_err(|e| {
            tracing::error!(error = %e, "cannot open a user secret: wrong master key?");
            AuthError::unavailable("Authentication service temporarily unavailable")
        })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[inner.issuer.as_str()]);
        validation.leeway = 0;
        // Expiry is checked below against our clock, not the system's.
        validation.validate_exp = false;
        if inner.expires_after.is_some() {
            validation.set_required_spec_claims(&["sub", "iss", "exp"]);
        } else {
            validation.set_required_spec_claims(&["sub", "iss"]);
        }
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&secret[..]),
            &validation,
        )
        .map_err(|e| {
            AuthError::unauthorized(match e.kind() {
                ErrorKind::InvalidSignature => RejectReason::WrongSecret,
                ErrorKind::ExpiredSignature => RejectReason::Expired,
                _ => RejectReason::Malformed,
            })
        })?;
        if data.claims.sub != sub {
            return Err(AuthError::unauthorized(RejectReason::Malformed));
        }
        let exp = if inner.expires_after.is_some() {
            data.claims.exp
        } else {
            None
        };
        if exp.is_some_and(|exp| exp <= now) {
            return Err(AuthError::unauthorized(RejectReason::Expired));
        }
        let ctx = AuthContext::for_user(
            CredentialKind::Jwt,
            Principal::user(sub.as_str()),
            inner.scopes.clone(),
        )
        .with_secret_generation(sealed.generation);
        let tokens = inner.cache.tokens.pin();
        if tokens.len() >= inner.cache.capacity {
            tokens.clear();
        }
        tokens.insert(
            digest,
            CachedToken {
                signed,
                user: sub.as_str().into(),
                exp,
                ctx: ctx.clone(),
            },
        );
        // A regeneration that raced this verification wins.
        if inner.cache.epoch.load(Ordering::Acquire) != epoch {
            tokens.remove(&digest);
        }
        Ok(ctx)
    }
}

impl JwtAuthority {
    /// Remembers that `sub` has no secret, unless a secret was made since
    /// `epoch` was read (then the user's tokens must work at once).
    fn remember_unknown(&self, sub: &str, now: i64, epoch: u64) {
        let cache = &self.inner.cache;
        if cache.unknown.len() >= cache.capacity {
            cache.unknown.retain(|_, until| *until > now);
            if cache.unknown.len() >= cache.capacity {
                cache.unknown.clear();
            }
        }
        cache
            .unknown
            .insert(sub.into(), now.saturating_add(UNKNOWN_SUBJECT_TTL));
        if cache.epoch.load(Ordering::Acquire) != epoch {
            cache.unknown.remove(sub);
        }
    }
}

fn check_user(user_id: &str) -> Result<(), JwtError> {
    if user_id.is_empty() || user_id.len() > MAX_SUBJECT_LEN {
        return Err(JwtError::InvalidUser);
    }
    Ok(())
}

/// The `sub` claim before the signature is checked: only used to find the
/// key; nothing is trusted until `decode` has verified the signature.
fn unverified_subject(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.insecure_disable_signature_validation();
    v.validate_exp = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Sub>(token, &DecodingKey::from_secret(&[]), &v)
        .map_err(|_| AuthError::unauthorized(RejectReason::Malformed))?;
    if data.claims.sub.is_empty() || data.claims.sub.len() > MAX_SUBJECT_LEN {
        return Err(AuthError::unauthorized(RejectReason::Malformed));
    }
    Ok(data.claims.sub)
}
