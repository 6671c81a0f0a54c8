//! [`FailedAuthLayer`]: applies a [`FailedAuthLimiter`] to a service.

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::FailedAuthService;
use crate::FailedAuthLimiter;

/// Tells whether a request's credential verifies from the verifier's cache.
pub(super) type CachedCheck = Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>;

/// Applies a [`FailedAuthLimiter`] to every request of the wrapped service.
/// Put it outside the auth layer (with axum: `.layer(auth)` first, then
/// `.layer(failures.layer())`).
#[derive(Clone)]
pub struct FailedAuthLayer {
    limiter: FailedAuthLimiter,
    cached: Option<CachedCheck>,
}

impl FailedAuthLayer {
    pub(super) fn new(limiter: FailedAuthLimiter) -> Self {
        Self {
            limiter,
            cached: None,
        }
    }

    /// Still serves a request from an address over the limit when `check`
    /// says its credential verifies from the verifier's cache, with no store
    /// read and no argon2: pass the auth layer's own check,
    /// `move |req| auth.verifies_from_cache(req)`. Everything else from that
    /// address still gets 429 (see the [module docs](crate::failed_auth)).
    ///
    /// `check` runs only for requests from addresses over the limit.
    pub fn pass_cached(
        mut self,
        check: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.cached = Some(Arc::new(check));
        self
    }
}

impl fmt::Debug for FailedAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAuthLayer")
            .field("limiter", &self.limiter)
            .field("pass_cached", &self.cached.is_some())
            .finish()
    }
}

impl<S> Layer<S> for FailedAuthLayer {
    type Service = FailedAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FailedAuthService::new(inner, self.limiter.clone(), self.cached.clone())
    }
}
