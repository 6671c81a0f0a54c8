//! Middleware that rate-limits requests: [`RateLimitLayer`],
//! [`RateLimitService`], [`ResponseFuture`].
//!
//! Put it *inside* the auth layer so it can count by the authenticated
//! principal: with axum, `.layer(rate_limit)` first, then `.layer(auth)`
//! (the last layer added runs first); with `tower::ServiceBuilder`,
//! `.layer(auth).layer(rate_limit)` (the first runs first).
//!
//! A refused request gets 429 in the limiter's [`ErrorFormat`] (code
//! `rate_limited`) with `Retry-After` in whole seconds, rounded up and never
//! 0, and never reaches the inner service. Every response, 429s included,
//! carries the `RateLimit-*` headers of the limiter's
//! [`HeaderStyle`](crate::HeaderStyle) for the rules that applied.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use auth_ratelimit::{Quota, RateLimiter, Rule};
//! use axum::{routing::get, Router};
//! use http::Method;
//!
//! # async fn demo() {
//! let limiter = RateLimiter::builder()
//!     .rule(Rule::per_user("default", Quota::per_hour(200)))
//!     .rule(Rule::per_ip("login", Quota::per_minute(5)).method(Method::POST).path("/login"))
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/items", get(|| async { "items" }))
//!     .layer(limiter.layer());
//!     // .layer(auth_layer) — added after, so it runs before the limiter.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! // ConnectInfo gives the limiter the client's socket address (read with
//! // auth-ratelimit's `axum` feature).
//! let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>());
//! # let _ = serve; }
//! ```
//!
//! [`ErrorFormat`]: auth_core::response::ErrorFormat

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    headers::RateHeaders,
    limiter::{Evaluation, Verdict},
    RateLimiter,
};

/// Applies a [`RateLimiter`] to every request of the wrapped service.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
}

impl RateLimitLayer {
    /// A layer checking requests against `limiter`.
    pub fn new(limiter: RateLimiter) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: RateLimiter,
}

impl<S> RateLimitService<S> {
    /// Wraps `inner` with `limiter`.
    pub fn new(inner: S, limiter: RateLimiter) -> Self {
        Self { inner, limiter }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let kind = match self.limiter.evaluate(&req) {
            Evaluation::Ready(Verdict::Allow(headers)) => Kind::Inner {
                future: self.inner.call(req),
                headers: Some(headers),
            },
            Evaluation::Ready(Verdict::Deny(res)) => Kind::Denied {
                response: Some(res.map(ResBody::from)),
            },
            waiting => {
                // The inner service was made ready; take that instance.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let limiter = self.limiter.clone();
                Kind::Pending {
                    future: Box::pin(async move {
                        let verdict = match waiting {
                            Evaluation::Ready(v) => v,
                            Evaluation::Pending(verdict) => verdict.await,
                            Evaluation::Resolve(resolving) => match resolving.await {
                                Ok(resolved) => {
                                    let verdict = limiter.evaluate_resolved(&req, &resolved);
                                    verdict.await
                                }
                                Err(v) => v,
                            },
                        };
                        match verdict {
                            Verdict::Allow(headers) => {
                                let mut res = inner.call(req).await?;
                                headers.apply(res.headers_mut());
                                Ok(res)
                            }
                            Verdict::Deny(res) => Ok(res.map(ResBody::from)),
                        }
                    }),
                }
            }
        };
        ResponseFuture { kind }
    }
}

type BoxedResponse<F> = Pin<Box<dyn Future<Output = <F as Future>::Output> + Send>>;

pin_project! {
    /// The response future of [`RateLimitService`].
    pub struct ResponseFuture<F: Future, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F: Future, B> {
        Inner {
            #[pin]
            future: F,
            headers: Option<RateHeaders>,
        },
        Denied {
            response: Option<Response<B>>,
        },
        Pending {
            future: BoxedResponse<F>,
        },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(h) = headers.take() {
                    h.apply(res.headers_mut());
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Denied { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
            KindProj::Pending { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F: Future, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
