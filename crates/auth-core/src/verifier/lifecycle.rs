//! After verification: re-hashing records to the current scheme, and the
//! futures that tell long-lived connections their credential has ended.

use super::Verifier;
use crate::{digest::Digest, recheck::recheck, token::SecretCheck, AuthContext, KeyId};

impl Verifier {
    /// Re-hashes with the current parameters and fills the secret check:
    /// how records move to the current scheme.
    pub(super) fn spawn_rehash(&self, id: KeyId, prefix: &str, secret: [u8; 32], digest: Digest) {
        let secret = zeroize::Zeroizing::new(secret);
        let check = SecretCheck::compute(id, prefix, &secret);
        let this = self.clone();
        tokio::spawn(async move {
            let inner = &*this.inner;
            match inner.hasher.hash(&secret).await {
                Ok(phc) => match inner.store.update_hash_and_check(id, &phc, check).await {
                    Ok(()) => {
                        inner.guard.remember_check(id, check);
                        // The cached entry was verified with this secret:
                        // point it at the new hash instead of dropping it
                        // (which would cost another argon2 run).
                        let hash: std::sync::Arc<str> = phc.as_str().into();
                        inner
                            .cache
                            .replace_if(id, &digest, |e| e.hash = hash.clone());
                        tracing::info!(key_id = %id, "re-hashed key with current parameters");
                    }
                    Err(e) => tracing::warn!(key_id = %id, error = %e, "re-hash not stored"),
                },
                Err(e) => tracing::warn!(key_id = %id, error = %e, "re-hash failed"),
            }
        });
    }

    /// Resolves once key `id` stops working: revoked (at once, or when a
    /// rotation's grace period ends), expired, or gone. For connections that
    /// authenticate once and stay open (WebSockets): close them when it
    /// resolves, so revocation reaches them too. A store error while checking
    /// counts as ended (fail closed).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use auth_core::*;
    /// # let store = Arc::new(MemoryKeyStore::new());
    /// # let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
    /// #     .hasher(SecretHasher::for_tests())
    /// #     .build();
    /// # let key = issuer.issue(NewKey::new(Principal::user("a"), "ws", ScopeSet::empty())).await.unwrap();
    /// let ctx = verifier.verify(key.token.expose_secret()).await.unwrap();
    /// let ended = verifier.key_ended(ctx.key_id().unwrap());
    /// issuer.revoke(key.record.id).await.unwrap();
    /// ended.await; // close the connection here
    /// # });
    /// ```
    pub fn key_ended(&self, id: KeyId) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Subscribed before the store is read, so no change can slip between.
        let mut changes = self.inner._invalidator.ended.subscribe();
        let (store, clock) = (self.inner.store.clone(), self.inner.clock.clone());
        async move {
            let mut after_resync = false;
            loop {
                let record = recheck(after_resync, || store.get(id)).await;
                let ends = match record {
                    Ok(Some(r)) if r.check_active(clock.now()).is_ok() => r.ends().map(|(t, _)| t),
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(key_id = %id, error = %e, "cannot confirm a connection's key; ending it");
                        return;
                    }
                };
                let until_end = async {
                    match ends {
                        Some(t) => {
                            let left = (t - clock.now()).max(time::Duration::ZERO);
                            tokio::time::sleep(left.unsigned_abs()).await
                        }
                        None => std::future::pending().await,
                    }
                };
                let this_key_changed = async {
                    loop {
                        match changes.recv().await {
                            Ok(Some(other)) if other != id => continue,
                            Ok(Some(_)) => return false,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                // The verifier is gone: nothing more will be heard.
                                return std::future::pending().await;
                            }
                            // Everything, or missed messages: check again,
                            // spread out (every connection heard the same).
                            _ => return true,
                        }
                    }
                };
                after_resync = tokio::select! {
                    () = until_end => false,
                    resync = this_key_changed => resync,
                };
            }
        }
    }

    /// Resolves once the credential behind `ctx` stops working: for an API
    /// key, [`Verifier::key_ended`]; for a JWT, when its user's secret is
    /// regenerated ([`JwtAuthority::secret_ended`](crate::jwt::JwtAuthority::secret_ended)).
    /// Never resolves for a credential with nothing to watch (a JWT when
    /// this verifier has no JWT authority). Hold it next to a WebSocket or
    /// Socket.IO connection and close the connection when it resolves.
    pub fn credential_ended(
        &self,
        ctx: &AuthContext,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        if let Some(id) = ctx.key_id() {
            return Box::pin(self.key_ended(id));
        }
        #[cfg(feature = "jwt")]
        if let (Some(jwt), Some(generation)) = (&self.inner.jwt, ctx.secret_generation()) {
            return Box::pin(jwt.secret_ended(ctx.actor().user_id(), generation));
        }
        Box::pin(std::future::pending())
    }
}
