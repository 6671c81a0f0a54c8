//! [`RateLimitLayer`]: applies a [`RateLimiter`] to a service.

use tower_layer::Layer;

use super::RateLimitService;
use crate::RateLimiter;

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
        RateLimitService::new(inner, self.limiter.clone())
    }
}
