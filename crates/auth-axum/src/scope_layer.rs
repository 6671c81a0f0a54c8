//! [`RequireScopeLayer`]: a route layer that enforces a scope requirement.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use auth_core::{AuthContext, AuthError, RejectReason};
use auth_tower::RenderAuthError;
use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{check_scopes, Match, ScopeRule};

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

struct Rule {
    mode: Match,
    scopes: Box<[Box<str>]>,
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
    type Service = RequireScope<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScope {
            inner,
            rule: self.rule.clone(),
        }
    }
}

/// The service made by [`RequireScopeLayer`].
#[derive(Clone)]
pub struct RequireScope<S> {
    inner: S,
    rule: Arc<Rule>,
}

impl<S: fmt::Debug> fmt::Debug for RequireScope<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScope")
            .field("inner", &self.inner)
            .field("match", &self.rule.mode)
            .field("scopes", &self.rule.scopes)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScope<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequireScopeFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let refusal = if req.error_format().is_none() {
            Some(crate::rejection::layer_missing())
        } else {
            match req.extensions().get::<AuthContext>() {
                None => Some(AuthError::unauthorized(RejectReason::Missing)),
                Some(ctx) => {
                    let scopes = self.rule.scopes.iter().map(|s| &**s);
                    check_scopes(ctx, self.rule.mode, scopes).err()
                }
            }
        };
        let kind = match refusal {
            None => Kind::Inner {
                future: self.inner.call(req),
            },
            Some(err) => Kind::Refused {
                response: Some(req.render_auth_error(&err).map(ResBody::from)),
            },
        };
        RequireScopeFuture { kind }
    }
}

pin_project! {
    /// Response future of [`RequireScope`].
    pub struct RequireScopeFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for RequireScopeFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("future polled after completion")))
            }
        }
    }
}
