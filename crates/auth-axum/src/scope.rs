//! Scope requirements, and [`Scoped`]: a handler argument that enforces one.

use std::{fmt, marker::PhantomData, ops::Deref};

use auth_core::{AuthContext, AuthError, RejectReason};
use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::{auth::required, AuthRejection};

/// How a list of scopes is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Every scope is needed.
    All,
    /// Any one of the scopes is enough.
    Any,
}

/// A scope requirement known at compile time, for [`Scoped`] and
/// [`RequireScopeLayer::rule`](crate::RequireScopeLayer::rule).
///
/// ```
/// use auth_axum::{Match, ScopeRule};
///
/// /// Either the new or the legacy read scope.
/// struct ReadEntities;
/// impl ScopeRule for ReadEntities {
///     const SCOPES: &'static [&'static str] = &["hub-protocol.read", "read:entities"];
///     const MATCH: Match = Match::Any;
/// }
/// ```
pub trait ScopeRule: Send + Sync + 'static {
    /// The scopes.
    const SCOPES: &'static [&'static str];
    /// How they are matched (default: all are needed).
    const MATCH: Match = Match::All;
}

/// `Ok` if `ctx`'s effective scopes satisfy the requirement, else 403
/// `forbidden` naming what is missing (the first missing scope for
/// [`Match::All`], every accepted one for [`Match::Any`]).
///
/// ```
/// use auth_axum::{check_scopes, Match};
/// use auth_core::{AuthContext, KeyId, Principal, ScopeSet};
///
/// let ctx = AuthContext::for_key(KeyId::random(), "k", Principal::user("u"), ScopeSet::parse(["read:entities"]).unwrap());
/// assert!(check_scopes(&ctx, Match::Any, ["hub-protocol.read", "read:entities"]).is_ok());
/// let err = check_scopes(&ctx, Match::All, ["read:entities", "write:entities"]).unwrap_err();
/// assert_eq!(err.scope(), Some("write:entities"));
/// ```
pub fn check_scopes<'a, I>(ctx: &AuthContext, mode: Match, scopes: I) -> Result<(), AuthError>
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let scopes = scopes.into_iter();
    match mode {
        Match::All => match ctx.scopes().first_missing(scopes) {
            None => Ok(()),
            Some(missing) => Err(AuthError::missing_scope(missing)),
        },
        Match::Any if ctx.scopes().has_any(scopes.clone()) => Ok(()),
        Match::Any => {
            let mut list = scopes.clone();
            match (list.next(), list.next()) {
                (None, _) => Err(AuthError::forbidden(
                    RejectReason::InsufficientScope,
                    "No scope is accepted here",
                )),
                (Some(only), None) => Err(AuthError::missing_scope(only)),
                _ => {
                    // RFC 6750 §3: `scope` is a space-delimited list.
                    let all: Vec<&str> = scopes.collect();
                    let quoted: Vec<String> = all.iter().map(|s| format!("'{s}'")).collect();
                    Err(
                        AuthError::missing_scope(&all.join(" ")).with_message(format!(
                            "Token lacks the required scope: one of {} is needed",
                            quoted.join(", ")
                        )),
                    )
                }
            }
        }
    }
}

/// The [`AuthContext`], extracted only if its effective scopes satisfy `R`;
/// else 403 `forbidden` naming the missing scope (401 without a context).
///
/// ```
/// use auth_axum::{Match, ScopeRule, Scoped};
///
/// struct ReadEntities;
/// impl ScopeRule for ReadEntities {
///     const SCOPES: &'static [&'static str] = &["hub-protocol.read", "read:entities"];
///     const MATCH: Match = Match::Any;
/// }
///
/// async fn list_entities(Scoped(ctx, _): Scoped<ReadEntities>) -> String {
///     format!("entities of {}", ctx.effective_user())
/// }
/// # let _: axum::Router = axum::Router::new().route("/entities", axum::routing::get(list_entities));
/// ```
pub struct Scoped<R>(pub AuthContext, pub PhantomData<R>);

impl<R> Deref for Scoped<R> {
    type Target = AuthContext;

    fn deref(&self) -> &AuthContext {
        &self.0
    }
}

impl<R> Clone for Scoped<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

impl<R> fmt::Debug for Scoped<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scoped").field(&self.0).finish()
    }
}

impl<R: ScopeRule, S: Send + Sync> FromRequestParts<S> for Scoped<R> {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ctx = required(parts)?;
        check_scopes(ctx, R::MATCH, R::SCOPES.iter().copied())
            .map_err(|e| AuthRejection::new(e, parts))?;
        Ok(Self(ctx.clone(), PhantomData))
    }
}
