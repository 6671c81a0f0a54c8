//! Revoking a key from its token alone: the answer to a leaked token.
//!
//! A secret scanner (or a person) reports a token seen in public. The token
//! names its key; it is revoked only if the token really is that key's
//! (prefix bound to the key, secret check compared in constant time, then
//! argon2), so a made-up token with someone's key id revokes nothing.

use std::net::IpAddr;

use crate::{
    audit::AuditOutcome, token::ParsedToken, token::SecretCheck, AuditEvent, AuditSink, IssueError,
    KeyId, KeyIssuer, RejectReason,
};

/// Where a revocation by token came from, for its audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevocationSource {
    /// The HTTP method of the reporting request, or a name for the caller
    /// (the default is `REVOKE`).
    pub method: http::Method,
    /// The route that received the report, or a name for the caller
    /// (the default is `revoke-by-token`).
    pub path: String,
    /// The reporter's address, if known.
    pub client_ip: Option<IpAddr>,
    /// The reporter's `User-Agent`, if known.
    pub user_agent: Option<String>,
}

impl RevocationSource {
    /// A report received as `method` on `path`, from an unknown client (set
    /// `client_ip` and `user_agent` when known).
    pub fn new(method: http::Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            client_ip: None,
            user_agent: None,
        }
    }
}

impl Default for RevocationSource {
    fn default() -> Self {
        Self {
            method: http::Method::from_bytes(b"REVOKE").expect("REVOKE is a method token"),
            path: "revoke-by-token".into(),
            client_ip: None,
            user_agent: None,
        }
    }
}

/// What a reported token turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRevocation {
    /// The token is a real key's: the key is revoked now (or was already,
    /// in which case its earlier revocation time is kept).
    Revoked {
        /// The key.
        key_id: KeyId,
        /// Whether the key was already revoked before this report.
        already_revoked: bool,
    },
    /// Not a token of ours: malformed, unknown id, other prefix, or a
    /// secret that does not verify. Nothing was revoked.
    NotOurs,
}

impl KeyIssuer {
    /// Revokes the key `token` belongs to, if the token verifies, and
    /// records an audit event (reason [`RejectReason::Leaked`]) naming the
    /// key and its owner. A token that does not verify revokes nothing and
    /// records nothing.
    ///
    /// The secret is checked like the verifier checks it: the record's
    /// secret check in constant time (a wrong secret costs no argon2), then
    /// argon2. Expired or already revoked keys still count as ours (the
    /// token is real), and are revoked with their earlier time kept. For a
    /// key already revoked, a matching secret check is enough and argon2 is
    /// not run, and nothing is written or audited: the key is dead either
    /// way, and a replayed report costs no argon2 and leaves no trace.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use auth_core::{audit::MemoryAuditLog, revoke_by_token::{RevocationSource, TokenRevocation}, *};
    ///
    /// let store = Arc::new(MemoryKeyStore::new());
    /// let audit = MemoryAuditLog::default();
    /// let issuer = KeyIssuer::new(store, SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
    /// let key = issuer.issue(NewKey::new(Principal::user("ana"), "ci", ScopeSet::empty())).await.unwrap();
    ///
    /// let found = issuer
    ///     .revoke_by_token(key.token.expose_secret(), &audit, &RevocationSource::default())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(found, TokenRevocation::Revoked { key_id: key.record.id, already_revoked: false });
    /// assert!(issuer.get(key.record.id).await.unwrap().unwrap().revoked_at.is_some());
    /// # });
    /// ```
    pub async fn revoke_by_token(
        &self,
        token: &str,
        audit: &dyn AuditSink,
        source: &RevocationSource,
    ) -> Result<TokenRevocation, IssueError> {
        let Ok(parsed) = ParsedToken::parse(token) else {
            return Ok(TokenRevocation::NotOurs);
        };
        let id = parsed.key_id();
        let Some(record) = self.store().get(id).await? else {
            return Ok(TokenRevocation::NotOurs);
        };
        // The prefix is bound to the key, as in the verifier.
        if record.token_prefix() != Some(parsed.prefix()) {
            return Ok(TokenRevocation::NotOurs);
        }
        let checked = match record.check {
            Some(stored) => {
                if !stored.matches(SecretCheck::compute(id, parsed.prefix(), parsed.secret())) {
                    return Ok(TokenRevocation::NotOurs);
                }
                true
            }
            None => false,
        };
        let now = self.now();
        let already_revoked = record.revoked_at.is_some_and(|t| t <= now);
        // A revoked key cannot be revoked harder: the constant-time check
        // answers "ours" without argon2, so replayed reports stay cheap.
        // Records without a check still need argon2.
        let argon2_needed = !already_revoked || !checked;
        if argon2_needed && !self.hasher().verify(parsed.secret(), &record.hash).await? {
            return Ok(TokenRevocation::NotOurs);
        }
        if already_revoked {
            // Nothing changes: no write, no change notification, no audit
            // event, however often a report is replayed.
            return Ok(TokenRevocation::Revoked {
                key_id: id,
                already_revoked,
            });
        }
        if !self.store().revoke(id, now).await? {
            // Deleted between the read and the revocation: nothing to revoke.
            return Ok(TokenRevocation::NotOurs);
        }
        audit.record(AuditEvent {
            id: None,
            at: now,
            key_id: Some(id),
            actor: Some(record.owner.shared_user_id().clone()),
            subject: None,
            outcome: AuditOutcome::Failure,
            reason: Some(RejectReason::Leaked),
            method: source.method.clone(),
            path: source.path.as_str().into(),
            status: None,
            client_ip: source.client_ip,
            user_agent: source.user_agent.as_deref().map(Into::into),
            created_key: None,
            key_management: true,
        });
        tracing::warn!(key_id = %id, "key revoked: its token was reported leaked");
        Ok(TokenRevocation::Revoked {
            key_id: id,
            already_revoked,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, token_format::encode_token,
        IssuedKey, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix,
    };

    async fn setup() -> (KeyIssuer, MemoryAuditLog, IssuedKey) {
        let store = Arc::new(MemoryKeyStore::new());
        let issuer = KeyIssuer::new(
            store,
            SecretHasher::for_tests(),
            TokenPrefix::new("st_").unwrap(),
        );
        let key = issuer
            .issue(NewKey::new(
                Principal::user("ana"),
                "ci",
                ScopeSet::parse(["read"]).unwrap(),
            ))
            .await
            .unwrap();
        (issuer, MemoryAuditLog::default(), key)
    }

    async fn events(audit: &MemoryAuditLog) -> Vec<AuditEvent> {
        audit
            .query(&AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .events
    }

    #[tokio::test]
    async fn a_real_token_revokes_its_key_and_is_audited() {
        let (issuer, audit, key) = setup().await;
        let source = RevocationSource {
            client_ip: Some("192.0.2.7".parse().unwrap()),
            ..RevocationSource::default()
        };
        let found = issuer
            .revoke_by_token(key.token.expose_secret(), &audit, &source)
            .await
            .unwrap();
        assert_eq!(
            found,
            TokenRevocation::Revoked {
                key_id: key.record.id,
                already_revoked: false
            }
        );
        let record = issuer.get(key.record.id).await.unwrap().unwrap();
        let revoked_at = record.revoked_at.expect("revoked");
        let events = events(&audit).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].key_id, Some(key.record.id));
        assert_eq!(events[0].actor.as_deref(), Some("ana"));
        assert_eq!(events[0].reason, Some(RejectReason::Leaked));
        assert_eq!(events[0].client_ip, source.client_ip);

        // Reported again: still ours, the first revocation time is kept.
        let again = issuer
            .revoke_by_token(key.token.expose_secret(), &audit, &source)
            .await
            .unwrap();
        assert_eq!(
            again,
            TokenRevocation::Revoked {
                key_id: key.record.id,
                already_revoked: true
            }
        );
        let record = issuer.get(key.record.id).await.unwrap().unwrap();
        assert_eq!(record.revoked_at, Some(revoked_at));
    }

    #[tokio::test]
    async fn a_forged_token_for_a_real_key_revokes_nothing() {
        let (issuer, audit, key) = setup().await;
        let prefix = TokenPrefix::new("st_").unwrap();
        // Right key id, valid checksum, wrong secret.
        let forged = encode_token(&prefix, key.record.id, &[7u8; 32]);
        // The real secret under another prefix (checksum recomputed).
        let real = ParsedToken::parse(key.token.expose_secret()).unwrap();
        let other_prefix = encode_token(
            &TokenPrefix::new("sk_").unwrap(),
            key.record.id,
            real.secret(),
        );
        for token in [
            forged.expose_secret(),
            other_prefix.expose_secret(),
            "st_not-a-token",
            "",
        ] {
            let found = issuer
                .revoke_by_token(token, &audit, &RevocationSource::default())
                .await
                .unwrap();
            assert_eq!(found, TokenRevocation::NotOurs);
        }
        // Unknown key id with a valid checksum.
        let unknown = encode_token(&prefix, KeyId::random(), &[1u8; 32]);
        assert_eq!(
            issuer
                .revoke_by_token(
                    unknown.expose_secret(),
                    &audit,
                    &RevocationSource::default()
                )
                .await
                .unwrap(),
            TokenRevocation::NotOurs
        );
        let record = issuer.get(key.record.id).await.unwrap().unwrap();
        assert_eq!(record.revoked_at, None);
        assert!(events(&audit).await.is_empty());
    }

    #[tokio::test]
    async fn reporting_an_already_revoked_key_costs_no_argon2() {
        let (issuer, audit, key) = setup().await;
        let source = RevocationSource::default();
        issuer
            .revoke_by_token(key.token.expose_secret(), &audit, &source)
            .await
            .unwrap();
        let runs = issuer.hasher().runs();
        for _ in 0..3 {
            assert_eq!(
                issuer
                    .revoke_by_token(key.token.expose_secret(), &audit, &source)
                    .await
                    .unwrap(),
                TokenRevocation::Revoked {
                    key_id: key.record.id,
                    already_revoked: true
                }
            );
        }
        assert_eq!(issuer.hasher().runs(), runs);
        // One audit event, from the first report: replays write nothing.
        assert_eq!(events(&audit).await.len(), 1);
        // A wrong secret for the revoked key is still not ours.
        let forged = encode_token(&TokenPrefix::new("st_").unwrap(), key.record.id, &[3u8; 32]);
        assert_eq!(
            issuer
                .revoke_by_token(forged.expose_secret(), &audit, &source)
                .await
                .unwrap(),
            TokenRevocation::NotOurs
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_costs_no_argon2() {
        let (issuer, audit, key) = setup().await;
        let runs = issuer.hasher().runs();
        let forged = encode_token(&TokenPrefix::new("st_").unwrap(), key.record.id, &[9u8; 32]);
        issuer
            .revoke_by_token(forged.expose_secret(), &audit, &RevocationSource::default())
            .await
            .unwrap();
        assert_eq!(issuer.hasher().runs(), runs);
    }
}
