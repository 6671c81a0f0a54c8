//! [`RequireScopeLayer`]: a route layer that enforces a scope requirement.

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::RequireScopeService;
use crate::{Match, ScopeRule};

/// Refuses requests whose effective scopes do not satisfy a requirement: 403
/// `forbidden` naming the missing scope, 401 without a context, 500 with no
/// `AuthLayer` in front. Put it behind the `AuthLayer`, e.g. with
/// `Router::route_layer`.
///
/// ```
/// use auth_axum::RequireScopeLayer;
/// use axum::{routing::{get, post}, Router};
///
/// # fn app(verifier: auth_core::Verifier) -> Router {
/// Router::new()
///     .route("/entities", get(|| async { "list" }))
///     .route_layer(RequireScopeLayer::any(["hub-protocol.read", "read:entities"]))
///     .route("/skills/invoke", post(|| async { "ok" }).layer(RequireScopeLayer::one("skills.invoke")))
///     .layer(auth_tower::AuthLayer::new(verifier))
/// # }
/// ```
#[derive(Clone)]
pub struct RequireScopeLayer {
    rule: Arc<Rule>,
}

pub(super) struct Rule {
    pub(super) mode: Match,
    pub(super) scopes: Box<[Box<str>]>,
}

impl fmt::Debug for RequireScopeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopeLayer")
            .field("match", &self.rule.mode)
            .field("scopes", &self.rule.scopes)
            .finish()
    }
}

impl RequireScopeLayer {
    fn new<I, S>(mode: Match, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        Self {
            rule: Arc::new(Rule { mode, scopes }),
        }
    }

    /// Requires `scope`.
    pub fn one(scope: impl Into<Box<str>>) -> Self {
        Self::new(Match::All, [scope])
    }

    /// Requires every one of `scopes`.
    pub fn all<I: IntoIterator<Item = S>, S: Into<Box<str>>>(scopes: I) -> Self {
        Self::new(Match::All, scopes)
    }

    /// Requires at least one of `scopes`.
    pub fn any<I: IntoIterator<Item = S>, S: Into<Box<str>>>(scopes: I) -> Self {
        Self::new(Match::Any, scopes)
    }

    /// Requires what `R` requires.
    pub fn rule<R: ScopeRule>() -> Self {
        Self::new(R::MATCH, R::SCOPES.iter().copied())
    }
}

impl<S> Layer<S> for RequireScopeLayer {
    type Service = RequireScopeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopeService::new(inner, self.rule.clone())
    }
}
