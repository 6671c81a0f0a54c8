//! [`RequireScopeService`]: the middleware made by
//! [`RequireScopeLayer`](crate::RequireScopeLayer).

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use auth_core::{AuthContext, AuthError, RejectReason};
use auth_tower::RenderAuthError;
use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use super::{
    future::{Kind, ResponseFuture},
    layer::Rule,
};
use crate::check_scopes;

/// The service made by [`RequireScopeLayer`](crate::RequireScopeLayer).
#[derive(Clone)]
pub struct RequireScopeService<S> {
    inner: S,
    rule: Arc<Rule>,
}

impl<S: fmt::Debug> fmt::Debug for RequireScopeService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopeService")
            .field("inner", &self.inner)
            .field("match", &self.rule.mode)
            .field("scopes", &self.rule.scopes)
            .finish()
    }
}

impl<S> RequireScopeService<S> {
    pub(super) fn new(inner: S, rule: Arc<Rule>) -> Self {
        Self { inner, rule }
    }

    auth_core::define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopeService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

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
        ResponseFuture::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use tower_layer::Layer;

    use crate::RequireScopeLayer;

    /// Stands in for the wrapped service: the accessors only move it.
    #[derive(Debug, PartialEq)]
    struct Inner(u32);

    #[test]
    fn accessors_reach_the_inner_service() {
        let mut service = RequireScopeLayer::one("read").layer(Inner(1));
        assert_eq!(service.get_ref(), &Inner(1));
        service.get_mut().0 = 2;
        assert_eq!(service.into_inner(), Inner(2));
    }
}
