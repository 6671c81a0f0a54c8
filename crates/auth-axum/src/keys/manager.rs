//! [`KeyManager`]: what the key-management router works with.

use std::{fmt, sync::Arc, time::Duration};

use auth_core::{AuditLog, KeyIssuer, ScopeSet};
use axum::Router;

use super::{routes, AllowedOrigins, KeyOwner};

/// Default longest grace period of a rotation: 7 days.
pub(crate) const DEFAULT_MAX_GRACE: Duration = Duration::from_secs(7 * 86_400);
/// Default and largest page of the activity route.
pub(crate) const DEFAULT_PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 200;

/// The configuration of the key-management router: the [`KeyIssuer`] (its
/// store, hasher and token prefix), the audit log behind the activity route,
/// and the scopes a key may be given.
///
/// Mount it with [`keys_router`](crate::keys_router) or [`KeyManager::router`].
#[derive(Clone)]
pub struct KeyManager {
    pub(crate) issuer: KeyIssuer,
    pub(crate) activity: Arc<dyn AuditLog>,
    pub(crate) known_scopes: Option<ScopeSet>,
    pub(crate) max_grace: Duration,
    pub(crate) origins: Option<AllowedOrigins>,
    pub(crate) descriptions: Vec<(String, String)>,
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("issuer", &self.issuer)
            .field("known_scopes", &self.known_scopes)
            .field("max_grace", &self.max_grace)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

impl KeyManager {
    /// Keys issued by `issuer` (in its store, with its prefix); activity read
    /// from `activity`, the log the `AuthLayer` audits into.
    pub fn new(issuer: KeyIssuer, activity: Arc<dyn AuditLog>) -> Self {
        Self {
            issuer,
            activity,
            known_scopes: None,
            max_grace: DEFAULT_MAX_GRACE,
            origins: None,
            descriptions: Vec::new(),
        }
    }

    /// The scopes that exist: asking for any other is 422 `unprocessable_entity`.
    /// Default: any well-formed scope (still limited by the owner's ceiling).
    pub fn known_scopes(mut self, scopes: ScopeSet) -> Self {
        self.known_scopes = Some(scopes);
        self
    }

    /// The longest grace period a rotation may ask for (default 7 days).
    pub fn max_rotation_grace(mut self, max: Duration) -> Self {
        self.max_grace = max;
        self
    }

    /// Refuse (403 `cross_origin_request`) creating, rotating and revoking
    /// keys from other origins than `allowed`. Turn it on when the owner is
    /// identified by a cookie session; see [`AllowedOrigins`].
    pub fn check_origin(mut self, allowed: AllowedOrigins) -> Self {
        self.origins = Some(allowed);
        self
    }

    /// One-line descriptions of the scopes, in the order a person should
    /// see them (the settings page shows them next to each checkbox; `GET
    /// /options` lists them).
    pub fn describe_scopes<I, N, D>(mut self, descriptions: I) -> Self
    where
        I: IntoIterator<Item = (N, D)>,
        N: Into<String>,
        D: Into<String>,
    {
        self.descriptions = descriptions
            .into_iter()
            .map(|(n, d)| (n.into(), d.into()))
            .collect();
        self
    }

    /// The issuer.
    pub fn issuer(&self) -> &KeyIssuer {
        &self.issuer
    }

    /// The router, with the account owner identified by the extractor `O`.
    /// Same as [`keys_router`](crate::keys_router).
    pub fn router<O, S>(self) -> Router<S>
    where
        O: KeyOwner + axum::extract::FromRequestParts<S>,
        S: Clone + Send + Sync + 'static,
    {
        routes::router::<O, S>(self)
    }
}
