//! [`DefaultScopes`]: what a key created without `scopes` gets.

/// What `POST /` gives a key whose body omits `scopes` (an explicit
/// `"scopes": []` always means no scopes).
///
/// ```
/// use auth_axum::{DefaultScopes, KeyManager};
/// # use std::sync::Arc;
/// # use auth_core::*;
/// # use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
/// # let store = Arc::new(MemoryKeyStore::new());
/// # let issuer = KeyIssuer::new(store, SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
/// # let audit = Arc::new(MemoryAuditLog::default());
/// // Tokens act with the rights of the user who made them.
/// let keys = KeyManager::new(issuer, audit).default_scopes(DefaultScopes::OwnerGrantable);
/// # let _ = keys;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DefaultScopes {
    /// No scopes: every scope a key holds was named when it was made.
    #[default]
    None,
    /// Everything the owner may grant ([`KeyOwner::grantable_scopes`](crate::KeyOwner::grantable_scopes),
    /// within the service's known scopes): a token has the rights of the
    /// user who made it.
    OwnerGrantable,
}
