//! [`AuthService`]: the middleware made by [`AuthLayer`](crate::AuthLayer).

use std::{
    mem,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::{
    authenticate::{authenticate, begin, Step},
    config::Config,
    headers::mark_sensitive,
    ResponseFuture,
};

/// Authenticates each request, then calls the inner service with the
/// [`AuthContext`](auth_core::AuthContext) in the request extensions, or
/// answers the refusal itself (the inner service is not called).
///
/// Readiness is the inner service's: `poll_ready` is passed through, and the
/// service that was polled ready is the one that gets the request.
///
/// Generic over the request body; the inner response body must be
/// constructible from [`Bytes`] (axum's `Body`, `Full<Bytes>`, …) for refusals.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> AuthService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    auth_core::define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Send + 'static,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        mark_sensitive(req.headers_mut(), &self.config.sensitive);
        if let Some(realm) = &self.config.realm {
            req.extensions_mut().insert(realm.clone());
        }
        match begin(&self.config, &mut req) {
            Step::Authenticated(audit) => {
                // The context marks the layer as present and implies the
                // default format: only another format needs its own entry.
                if self.config.format_entry {
                    req.extensions_mut().insert(self.config.format.clone());
                }
                ResponseFuture::calling(self.inner.call(req), audit)
            }
            Step::Pass(audit) => {
                req.extensions_mut().insert(self.config.format.clone());
                ResponseFuture::calling(self.inner.call(req), audit)
            }
            Step::Reject(response, audit) => ResponseFuture::refused(response, audit),
            Step::Wait(verified, client) => {
                req.extensions_mut().insert(self.config.format.clone());
                let auth = Box::pin(authenticate(self.config.clone(), req, verified, client));
                // The clone stays here; the service that was polled ready goes
                // with the request (https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services).
                let clone = self.inner.clone();
                let ready = mem::replace(&mut self.inner, clone);
                ResponseFuture::authenticating(auth, ready)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use auth_core::{MemoryKeyStore, SecretHasher, Verifier};
    use tower_layer::Layer;

    use crate::AuthLayer;

    /// Stands in for the wrapped service: the accessors only move it.
    #[derive(Debug, PartialEq)]
    struct Inner(u32);

    #[test]
    fn accessors_reach_the_inner_service() {
        let verifier = Verifier::builder(Arc::new(MemoryKeyStore::new()))
            .hasher(SecretHasher::for_tests())
            .build();
        let mut service = AuthLayer::new(verifier).layer(Inner(1));
        assert_eq!(service.get_ref(), &Inner(1));
        service.get_mut().0 = 2;
        assert_eq!(service.into_inner(), Inner(2));
    }
}
