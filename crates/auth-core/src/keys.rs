//! One entry point for the issuer and the verifier of a store, so the two
//! are made from one hasher, one prefix and one clock and cannot disagree.

use std::sync::Arc;

use crate::{
    clock::WallClock, KeyIssuer, KeyStore, SecretHasher, TokenPrefix, Verifier, VerifierBuilder,
};

/// The [`KeyIssuer`] and the [`Verifier`] of one store, made by
/// [`Keys::builder`] from one hasher, prefix and clock.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_core::*;
///
/// let store = Arc::new(MemoryKeyStore::new());
/// let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
///     .hasher(SecretHasher::default())
/// #   .hasher(SecretHasher::for_tests())
///     .verifier(|v| v.cache_capacity(10_000))
///     .build();
///
/// let key = issuer
///     .issue(NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty()))
///     .await
///     .unwrap();
/// assert!(verifier.verify(key.token.expose_secret()).await.is_ok());
/// # });
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Keys {
    /// Issues, rotates and revokes keys.
    pub issuer: KeyIssuer,
    /// Verifies the tokens the issuer issues.
    pub verifier: Verifier,
}

impl Keys {
    /// Starts building the issuer of `prefix` tokens into `store` and a
    /// verifier accepting them.
    pub fn builder(store: Arc<dyn KeyStore>, prefix: TokenPrefix) -> KeysBuilder {
        KeysBuilder {
            verifier: Verifier::builder(store.clone()),
            store,
            prefix,
            hasher: None,
            clock: None,
        }
    }
}

/// Builds [`Keys`].
#[must_use]
pub struct KeysBuilder {
    store: Arc<dyn KeyStore>,
    prefix: TokenPrefix,
    hasher: Option<SecretHasher>,
    clock: Option<Arc<dyn WallClock>>,
    verifier: VerifierBuilder,
}

// By hand: the store is a trait object.
impl std::fmt::Debug for KeysBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysBuilder")
            .field("prefix", &self.prefix)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl KeysBuilder {
    /// The hasher keys are hashed and verified with. Default: argon2id
    /// defaults ([`SecretHasher::default`]).
    pub fn hasher(mut self, hasher: SecretHasher) -> Self {
        self.hasher = Some(hasher);
        self
    }

    /// The clock for issue, expiry and revocation times, on both sides.
    /// Default [`SystemClock`](crate::clock::SystemClock); tests pass a
    /// [`FakeClock`](crate::clock::FakeClock).
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The verifier's own settings (cache size, scope policy, JWTs, more
    /// accepted prefixes…). The hasher, prefix and clock given here are
    /// applied after `configure`, so they are the ones used.
    pub fn verifier(mut self, configure: impl FnOnce(VerifierBuilder) -> VerifierBuilder) -> Self {
        self.verifier = configure(self.verifier);
        self
    }

    /// The issuer and the verifier (subscribed to the store's change feed).
    ///
    /// Inside a Tokio runtime, this also records the prefix in the store in
    /// the background ([`KeyIssuer::record_prefix`]), so that the admin
    /// command line issues keys with it; a failure is logged as a warning.
    pub fn build(self) -> Keys {
        let hasher = self.hasher.unwrap_or_default();
        let mut verifier = self
            .verifier
            .hasher(hasher.clone())
            .prefix(self.prefix.clone());
        let mut issuer = KeyIssuer::new(self.store, hasher, self.prefix);
        // One clock, shared as it is (not wrapped again).
        if let Some(clock) = self.clock {
            verifier.clock = clock.clone();
            issuer.clock = clock;
        }
        record_prefix(&issuer);
        Keys {
            issuer,
            verifier: verifier.build(),
        }
    }
}

/// Records the issuer's prefix off the caller's path: building stays
/// synchronous, and a store that is down delays nothing.
fn record_prefix(issuer: &KeyIssuer) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let issuer = issuer.clone();
    runtime.spawn(async move {
        if let Err(e) = issuer.record_prefix().await {
            tracing::warn!(error = %e, prefix = %issuer.prefix(), "cannot record the issuing prefix in the key store");
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::{clock::FakeClock, MemoryKeyStore, NewKey, Principal, RejectReason, ScopeSet};

    #[tokio::test]
    async fn issuer_and_verifier_share_the_hasher_prefix_and_clock() {
        let clock = Arc::new(FakeClock::new(datetime!(2026-01-01 0:00 UTC)));
        let store = Arc::new(MemoryKeyStore::new());
        let keys = Keys::builder(store, TokenPrefix::new("st_").unwrap())
            .hasher(SecretHasher::for_tests())
            .clock(clock.clone())
            .verifier(|v| v.cache_capacity(10))
            .build();
        assert_eq!(keys.verifier.prefixes(), [keys.issuer.prefix().clone()]);
        assert_eq!(
            keys.issuer.hasher().params(),
            SecretHasher::for_tests().params()
        );

        let key = keys
            .issuer
            .issue(
                NewKey::new(Principal::user("a"), "k", ScopeSet::empty())
                    .expires_at(datetime!(2026-01-01 0:01 UTC)),
            )
            .await
            .unwrap();
        let token = key.token.expose_secret();
        keys.verifier.verify(token).await.unwrap();
        // The verifier reads the clock the issuer was given.
        clock.advance(Duration::from_secs(60));
        let err = keys.verifier.verify(token).await.unwrap_err();
        assert_eq!(err.reason(), RejectReason::Expired);
    }
}
