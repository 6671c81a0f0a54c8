//! Keys, issuers and verifiers for tests: a cheap hasher and the `st_`
//! prefix.

use std::sync::Arc;

use auth_core::{
    audit::AuditOutcome, token::BODY_LEN, AuditEvent, KeyId, KeyIssuer, KeyStore, NewKey,
    Principal, ScopeSet, SecretHasher, TokenPrefix, Verifier,
};
use time::OffsetDateTime;

/// The argon2 hasher with cheap parameters (`SecretHasher::for_tests`),
/// so tests do not spend their time hashing.
pub fn hasher() -> SecretHasher {
    SecretHasher::for_tests()
}

/// The token prefix the tests use: `st_`.
pub fn prefix() -> TokenPrefix {
    TokenPrefix::new("st_").unwrap()
}

/// An issuer on `store` with [`hasher`] and [`prefix`].
pub fn issuer(store: Arc<dyn KeyStore>) -> KeyIssuer {
    KeyIssuer::new(store, hasher(), prefix())
}

/// A verifier on `store` with [`hasher`] (and the default prefix policy).
pub fn verifier(store: Arc<dyn KeyStore>) -> Verifier {
    Verifier::builder(store).hasher(hasher()).build()
}

/// A key for the user `owner`, named `ci`, with the scope `read`.
pub fn new_key(owner: &str) -> NewKey {
    NewKey::new(
        Principal::user(owner),
        "ci",
        ScopeSet::parse(["read"]).unwrap(),
    )
}

/// The 44-character secret part of a token (between the key id and the
/// checksum): what must never be found in storage or logs.
pub fn secret_text(token: &str) -> &str {
    let body = &token[token.len() - BODY_LEN..];
    &body[11..55]
}

/// A successful `GET /api/entities` by `actor` with `key`, at `at`.
pub fn audit_event(key: Option<KeyId>, actor: Option<&str>, at: OffsetDateTime) -> AuditEvent {
    let mut event = AuditEvent::new(
        at,
        AuditOutcome::Success,
        http::Method::GET,
        "/api/entities",
    );
    event.key_id = key;
    event.actor = actor.map(Into::into);
    event.status = Some(200);
    event.client_ip = Some("203.0.113.7".parse().unwrap());
    event.user_agent = Some("curl/8.5".into());
    event
}
