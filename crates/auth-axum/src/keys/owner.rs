//! [`KeyOwner`]: who is managing keys, and how much they may grant.

use std::convert::Infallible;

use auth_core::{AuthContext, KeyId, Principal, ScopeSet};
use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::Auth;

/// The account owner on the other side of the key-management routes, as the
/// application identifies them.
///
/// Implement it on any axum extractor: a session cookie, an SSO header, or an
/// API key through [`Auth`]. The router lists, revokes and rotates only keys
/// whose owner equals [`KeyOwner::principal`], and refuses (403) to issue a
/// key with a scope outside [`KeyOwner::grantable_scopes`].
///
/// ```
/// use auth_axum::KeyOwner;
/// use auth_core::{Principal, ScopeSet};
/// use axum::{extract::FromRequestParts, http::{request::Parts, StatusCode}};
///
/// /// The user named by a header an upstream SSO proxy sets.
/// struct SsoUser(Principal, ScopeSet);
///
/// impl<S: Send + Sync> FromRequestParts<S> for SsoUser {
///     type Rejection = StatusCode;
///     async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
///         let user = parts.headers.get("x-sso-user").and_then(|v| v.to_str().ok());
///         let user = user.ok_or(StatusCode::UNAUTHORIZED)?;
///         Ok(SsoUser(Principal::user(user), ScopeSet::parse(["read", "write"]).unwrap()))
///     }
/// }
///
/// impl KeyOwner for SsoUser {
///     fn principal(&self) -> &Principal { &self.0 }
///     fn grantable_scopes(&self) -> &ScopeSet { &self.1 }
/// }
/// ```
pub trait KeyOwner: Send + Sync + 'static {
    /// The principal whose keys are managed (and who owns new ones).
    fn principal(&self) -> &Principal;

    /// The most a new key may hold: asking for any other scope is refused
    /// with 403.
    fn grantable_scopes(&self) -> &ScopeSet;

    /// The API key making the request, when the owner is identified by one
    /// (default: none, as for a session). It is recorded as the `created_by`
    /// of the keys it makes, which may not outlive it nor be broader than
    /// it, it acts only on keys no broader than itself, and it may not
    /// manage keys once it has been replaced by rotation.
    ///
    /// Fails closed: when the `AuthLayer` in front verified an API key for
    /// the request and this does not return that key's id, every route
    /// refuses the request (500, the mismatch logged) rather than serve it
    /// without the key's restrictions. An owner built from
    /// [`Auth`](crate::Auth) returns [`AuthContext::key_id`].
    fn acting_key(&self) -> Option<KeyId> {
        None
    }

    /// Whether the request acts on behalf of another user (`X-Subject-User`);
    /// such requests may not create or rotate keys unless the
    /// [`KeyManager`](crate::KeyManager) allows it.
    fn is_impersonating(&self) -> bool {
        false
    }
}

/// Managing keys with an API key: the owner is the request's effective
/// principal, and a new key may hold only scopes the calling key holds, so a
/// key can never mint a more powerful one. Guard the router with a scope
/// (e.g. `RequireScopeLayer::one("tokens:manage")`) to keep other keys out.
impl KeyOwner for Auth {
    fn principal(&self) -> &Principal {
        self.0.effective_principal()
    }

    fn grantable_scopes(&self) -> &ScopeSet {
        self.0.scopes()
    }

    fn acting_key(&self) -> Option<KeyId> {
        self.0.key_id()
    }

    fn is_impersonating(&self) -> bool {
        self.0.is_impersonating()
    }
}

/// The API key the `AuthLayer` in front verified for the request, if any:
/// what [`KeyOwner::acting_key`] must return.
pub(crate) struct RequestKey(pub(crate) Option<KeyId>);

impl<S: Send + Sync> FromRequestParts<S> for RequestKey {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .extensions
                .get::<AuthContext>()
                .and_then(AuthContext::key_id),
        ))
    }
}
