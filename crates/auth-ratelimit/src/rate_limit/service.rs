//! [`RateLimitService`]: the middleware made by [`RateLimitLayer`](crate::RateLimitLayer).

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use super::{
    future::Kind,
    limiter::{Evaluation, Verdict},
    ResponseFuture,
};
use crate::RateLimiter;

/// The service made by [`RateLimitLayer`](crate::RateLimitLayer).
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

    auth_core::define_inner_service_accessors!();
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
        ResponseFuture::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use tower_layer::Layer;

    use crate::{Quota, RateLimiter, Rule};

    /// Stands in for the wrapped service: the accessors only move it.
    #[derive(Debug, PartialEq)]
    struct Inner(u32);

    #[test]
    fn accessors_reach_the_inner_service() {
        let limiter = RateLimiter::builder()
            .rule(Rule::per_user("default", Quota::per_minute(1)))
            .build()
            .unwrap();
        let mut service = limiter.layer().layer(Inner(1));
        assert_eq!(service.get_ref(), &Inner(1));
        service.get_mut().0 = 2;
        assert_eq!(service.into_inner(), Inner(2));
    }
}
