//! [`FailedAuthService`]: the middleware made by [`FailedAuthLayer`](crate::FailedAuthLayer).

use std::{
    fmt,
    task::{Context, Poll},
};

use auth_core::client_ip::ClientIp;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::{layer::CachedCheck, limiter::counted, ResponseFuture};
use crate::FailedAuthLimiter;

/// The service made by [`FailedAuthLayer`](crate::FailedAuthLayer).
#[derive(Clone)]
pub struct FailedAuthService<S> {
    inner: S,
    limiter: FailedAuthLimiter,
    cached: Option<CachedCheck>,
}

impl<S: fmt::Debug> fmt::Debug for FailedAuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("pass_cached", &self.cached.is_some())
            .finish()
    }
}

/// Whether `check` lets `req` through although its address is over the limit.
fn passes_cached<B>(check: Option<&CachedCheck>, req: Request<B>) -> (bool, Request<B>) {
    let Some(check) = check else {
        return (false, req);
    };
    let (parts, body) = req.into_parts();
    let pass = check(&parts);
    (pass, Request::from_parts(parts, body))
}

impl<S> FailedAuthService<S> {
    pub(super) fn new(inner: S, limiter: FailedAuthLimiter, cached: Option<CachedCheck>) -> Self {
        Self {
            inner,
            limiter,
            cached,
        }
    }

    auth_core::define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FailedAuthService<S>
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(ip) = self.limiter.client_ip(&req) else {
            return ResponseFuture::inner(self.inner.call(req), None);
        };
        // Resolved once: the auth layer and the rate limiter inside read it.
        req.extensions_mut().insert(ClientIp(ip));
        match self.limiter.start(ip, 0).now() {
            Ok(answer) => match self.limiter.refusal(self.limiter.reading(ip, 0, answer)) {
                None => {
                    let charge = Some((self.limiter.clone(), ip));
                    ResponseFuture::inner(self.inner.call(req), charge)
                }
                Some(res) => match passes_cached(self.cached.as_ref(), req) {
                    (true, req) => {
                        let charge = Some((self.limiter.clone(), ip));
                        ResponseFuture::inner(self.inner.call(req), charge)
                    }
                    (false, _) => ResponseFuture::denied(counted(res).map(ResBody::from)),
                },
            },
            Err(pending) => {
                // A shared store: read the bucket, then call the service
                // that was made ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let limiter = self.limiter.clone();
                let cached = self.cached.clone();
                ResponseFuture::boxed(Box::pin(async move {
                    let answer = pending.await;
                    if answer.is_ok() {
                        limiter.answered();
                    }
                    let reading = limiter.reading(ip, 0, answer);
                    let req = match limiter.refusal(reading) {
                        None => req,
                        Some(res) => match passes_cached(cached.as_ref(), req) {
                            (true, req) => req,
                            (false, _) => return Ok(counted(res).map(ResBody::from)),
                        },
                    };
                    let res = inner.call(req).await?;
                    if res.status() == StatusCode::UNAUTHORIZED {
                        limiter.record_failure(ip).await;
                    }
                    Ok(res)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tower_layer::Layer;

    use crate::{FailedAuthLimiter, Quota};

    /// Stands in for the wrapped service: the accessors only move it.
    #[derive(Debug, PartialEq)]
    struct Inner(u32);

    #[test]
    fn accessors_reach_the_inner_service() {
        let failures = FailedAuthLimiter::builder(Quota::per_minute(3)).build();
        let mut service = failures.layer().layer(Inner(1));
        assert_eq!(service.get_ref(), &Inner(1));
        service.get_mut().0 = 2;
        assert_eq!(service.into_inner(), Inner(2));
    }
}
