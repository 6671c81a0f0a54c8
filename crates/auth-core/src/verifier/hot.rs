//! The hot path: a token decided without I/O, from the verified cache and
//! what the attack guard remembers.

use std::{
    net::IpAddr,
    sync::{atomic::Ordering::Relaxed, Arc},
};

use super::{
    cache::{CacheEntry, SlotKey},
    guard::Verdict,
    unauthorized, Verifier,
};
use crate::{
    digest::{digests_equal, Digest},
    token::ParsedToken,
    token::SecretCheck,
    token::TokenError,
    AuthContext, AuthError, KeyId, RejectReason,
};

pub(super) enum Cached {
    Hit(Result<AuthContext, AuthError>),
    Miss,
    /// A hit to confirm against the store: the hash it was verified with.
    Confirm(Arc<str>),
}

pub(super) fn token_reason(e: TokenError) -> RejectReason {
    match e {
        TokenError::TooLong | TokenError::Malformed => RejectReason::Malformed,
        TokenError::WrongPrefix => RejectReason::WrongPrefix,
        TokenError::BadChecksum => RejectReason::BadChecksum,
    }
}

impl Verifier {
    /// The synchronous hot path of the auth layer: `Some` when the
    /// credential is decided without I/O (a cache hit, or a token that is
    /// not well formed), `None` when [`Verifier::verify`] would have to
    /// read the store or run argon2. `client` is recorded as with
    /// [`Credential::client`](crate::Credential::client).
    ///
    /// It takes the credential's bytes as they arrived (a header value,
    /// trimmed), before any check of its characters: a token the cache
    /// knows is that token, so it needs none, and any other is refused as
    /// malformed unless it is a well-formed token. The decision is the one
    /// the same bytes as `&str` would get from [`Verifier::verify`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use auth_core::*;
    ///
    /// let store = Arc::new(MemoryKeyStore::new());
    /// let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
    /// #   .hasher(SecretHasher::for_tests())
    ///     .build();
    /// let key = issuer
    ///     .issue(NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty()))
    ///     .await
    ///     .unwrap();
    /// let token = key.token.expose_secret();
    /// assert!(verifier.verify_cached_bytes(token.as_bytes(), None).is_none(), "not verified yet");
    /// verifier.verify(token).await.unwrap();
    /// assert!(verifier.verify_cached_bytes(token.as_bytes(), None).unwrap().is_ok());
    ///
    /// let not_text = verifier.verify_cached_bytes(b"st_\xff", None).unwrap().unwrap_err();
    /// assert_eq!(not_text.reason(), RejectReason::Malformed);
    /// # });
    /// ```
    #[doc(hidden)]
    pub fn verify_cached_bytes(
        &self,
        token: &[u8],
        client: Option<IpAddr>,
    ) -> Option<Result<AuthContext, AuthError>> {
        // A JWT-shaped credential (checked as text only then).
        #[cfg(feature = "jwt")]
        if token.starts_with(b"eyJ") {
            let text = std::str::from_utf8(token).ok();
            if let Some((text, parts)) = text.and_then(|t| Some((t, crate::jwt::jwt_parts(t)?))) {
                let jwt = self.inner.jwt.as_ref();
                return jwt.and_then(|jwt| jwt.verify_cached_parts(text, parts));
            }
        }
        let (slot, digest) = match self.cache_key(token) {
            Ok(k) => k,
            Err(e) => return Some(Err(e)),
        };
        match self.check_cached_now(slot, &digest, client) {
            Cached::Hit(result) => {
                crate::metrics::cache_hit();
                Some(self.refine(token, result))
            }
            Cached::Confirm(..) => {
                crate::metrics::cache_miss();
                None
            }
            // Bad checksums, remembered unknown ids and wrong secrets for a
            // key whose check is known are settled here too, so a flood of
            // them never leaves the synchronous path.
            Cached::Miss => {
                crate::metrics::cache_miss();
                let settled = match std::str::from_utf8(token) {
                    Ok(token) => self.settle_miss(token, &digest),
                    Err(_) => Err(unauthorized(RejectReason::Malformed)),
                };
                settled.err().map(Err)
            }
        }
    }

    /// What a cache miss can be refused for without I/O; else the key id.
    pub(super) fn settle_miss(&self, token: &str, digest: &Digest) -> Result<KeyId, AuthError> {
        let parsed = self
            .parse(token)
            .map_err(|e| unauthorized(token_reason(e)))?;
        let id = parsed.key_id();
        self.check_guard(id, digest)?;
        self.check_known(&parsed)?;
        Ok(id)
    }

    /// Cache slot and keyed digest of the token, from the token's shape (its
    /// key id field is not decoded: a field that spells no id matches no
    /// slot, and the miss is refused by the full parse).
    pub(super) fn cache_key(&self, token: &[u8]) -> Result<(SlotKey, Digest), AuthError> {
        let shape =
            crate::token_format::raw_shape(token).filter(|(prefix, _)| self.prefix_ok(prefix));
        let Some((_, id_field)) = shape else {
            let reason = self.parse_bytes(token).err();
            return Err(unauthorized(reason.unwrap_or(RejectReason::Malformed)));
        };
        // The whole token, so a token that differs anywhere (checksum and
        // prefix included) misses, and is then judged by the full parse.
        let digest = self.inner.digest_key.digest(token);
        Ok((SlotKey::of_field(id_field), digest))
    }

    /// `token` parsed, or why it is not a well-formed token.
    fn parse_bytes<'t>(&self, token: &'t [u8]) -> Result<ParsedToken<'t>, RejectReason> {
        let text = std::str::from_utf8(token).map_err(|_| RejectReason::Malformed)?;
        self.parse(text).map_err(token_reason)
    }

    /// A cache hit that failed on the digest may be a typo: say "bad checksum".
    #[inline]
    pub(super) fn refine(
        &self,
        token: &[u8],
        result: Result<AuthContext, AuthError>,
    ) -> Result<AuthContext, AuthError> {
        match result {
            Err(e) if e.reason() == RejectReason::WrongSecret => Err(self.typo_or(token, e)),
            other => other,
        }
    }

    #[cold]
    fn typo_or(&self, token: &[u8], wrong_secret: AuthError) -> AuthError {
        match self.parse_bytes(token) {
            Ok(_) => wrong_secret,
            Err(reason) => unauthorized(reason),
        }
    }

    /// What the attack guard remembers against this token.
    pub(super) fn check_guard(&self, id: KeyId, digest: &Digest) -> Result<(), AuthError> {
        match self
            .inner
            .guard
            .check(id, digest, self.inner.clock.now_nanos())
        {
            Verdict::Unknown => Ok(()),
            Verdict::NoSuchKey => Err(unauthorized(RejectReason::UnknownKey)),
            Verdict::KnownWrong => Err(unauthorized(RejectReason::WrongSecret)),
            Verdict::Throttled => Err(unauthorized(RejectReason::Throttled)),
        }
    }

    /// A wrong secret for an id whose check was read before: refused with
    /// one fast hash, no store read, no argon2, no backoff.
    pub(super) fn check_known(&self, parsed: &ParsedToken<'_>) -> Result<(), AuthError> {
        let id = parsed.key_id();
        match self.inner.guard.known_check(id) {
            Some(stored)
                if !stored.matches(SecretCheck::compute(id, parsed.prefix(), parsed.secret())) =>
            {
                Err(unauthorized(RejectReason::WrongSecret))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn prefix_ok(&self, prefix: &[u8]) -> bool {
        let prefixes = &self.inner.prefixes;
        if prefixes.is_empty() {
            crate::token_format::is_valid_prefix(prefix)
        } else {
            prefixes.iter().any(|p| p.as_str().as_bytes() == prefix)
        }
    }

    pub(super) fn parse<'t>(&self, token: &'t str) -> Result<ParsedToken<'t>, TokenError> {
        if self.inner.prefixes.is_empty() {
            ParsedToken::parse(token)
        } else {
            ParsedToken::parse_with_prefix(token, &self.inner.prefixes)
        }
    }

    /// Decided under the map's guard (no lock), one refcount increment.
    pub(super) fn check_cached_now(
        &self,
        slot: SlotKey,
        digest: &Digest,
        client: Option<IpAddr>,
    ) -> Cached {
        let inner = &*self.inner;
        let entries = inner.cache.entries.pin();
        let Some(entry) = entries.get(&slot) else {
            return Cached::Miss;
        };
        // Two word XORs behind an optimisation barrier: constant time, and
        // a fraction of a byte-wise `subtle` loop on the hot path.
        if !digests_equal(&entry.digest, digest) {
            return Cached::Hit(Err(unauthorized(RejectReason::WrongSecret)));
        }
        // Only a key that ends needs the exact time.
        if let Some((t, reason)) = entry.ends {
            if inner.clock.now_nanos() >= t {
                return Cached::Hit(Err(unauthorized(reason)));
            }
        }
        if !inner.store.changes().is_in_sync()
            || entry.confirmed.load(Relaxed) != inner.cache.resync.load(Relaxed)
        {
            return Cached::Confirm(entry.hash.clone());
        }
        self.report_use(entry, client);
        Cached::Hit(Ok(entry.ctx.clone()))
    }

    /// Reports a use if the key's last report is older than the interval.
    /// The throttle reads the clock's last tick only (every reading of it,
    /// so that readings compare): cheaper than the exact time, which the
    /// report itself carries.
    /// The key is the entry's own (its context names it).
    pub(super) fn report_use(&self, entry: &CacheEntry, client: Option<IpAddr>) {
        let now = self.inner.clock.recent_nanos();
        let last = entry.last_reported.load(Relaxed);
        // A use the auth layer refuses (outside the allowlist) is not one.
        if now - last >= self.inner.usage.interval
            && entry.ctx.allows_ip(client)
            && entry
                .last_reported
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let Some(id) = entry.ctx.key_id() else {
                return;
            };
            self.inner.usage.report(crate::store::KeyUse {
                ip: client,
                ..crate::store::KeyUse::new(id, self.inner.clock.now())
            });
        }
    }
}
