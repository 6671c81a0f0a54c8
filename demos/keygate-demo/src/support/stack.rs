//! The middleware every example puts around its routes.

use auth_axum::connect_info_ip;
use auth_ratelimit::{FailedAuthLimiter, RateLimiter};
use auth_tower::{AuthLayer, AuthLayerBuilder, AuthMakeSpan};
use axum::Router;
use tower_http::trace::TraceLayer;

use super::{limits::SharedLimits, Backend};

/// The layers of [`protect`], built once per app.
#[derive(Debug)]
pub struct Protection {
    pub(crate) auth: AuthLayer,
    pub(crate) limiter: RateLimiter,
    pub(crate) failures: FailedAuthLimiter,
}

impl Protection {
    /// `auth` (the app's own settings: error format, realm, resolvers),
    /// finished the way every demo does: auditing into `backend`, the client
    /// address from the connection or the trusted proxies of `limits`; then
    /// `limiter`, and the failed-authentication limiter of `limits`
    /// answering in the same `format`.
    pub fn new(
        auth: AuthLayerBuilder,
        format: auth_core::response::ErrorFormat,
        backend: &Backend,
        limits: &SharedLimits,
        limiter: RateLimiter,
    ) -> Result<Self, String> {
        let auth = auth
            .error_format(format.clone())
            .audit(backend.audit_sink())
            .client_ip(connect_info_ip)
            .trusted_proxies(limits.trusted_proxies.clone())
            .build();
        Ok(Self {
            auth,
            limiter,
            failures: limits.failed_auth_limiter(format)?,
        })
    }

    /// `routes` behind these layers: see [`protect`].
    pub fn protect(&self, routes: Router) -> Router {
        protect(routes, &self.auth, &self.limiter, &self.failures)
    }
}

/// `routes` behind, from the outside in: credential headers marked
/// sensitive, a request span (path only, never the query), the
/// failed-authentication limit per client address (429 once an address has
/// had too many 401s, except for keys the verifier's cache knows; it must
/// see the auth layer's answers, so it goes outside it), the `AuthLayer` (401/403/503, audit), then the rate limiter,
/// which counts by the authenticated user and so runs after it.
pub fn protect(
    routes: Router,
    auth: &AuthLayer,
    limiter: &RateLimiter,
    failures: &FailedAuthLimiter,
) -> Router {
    routes
        .layer(limiter.layer())
        .layer(auth.clone())
        .layer({
            // A key the verifier's cache knows is served even from an
            // address over the limit: guesses cannot lock out its neighbours.
            let auth = auth.clone();
            failures
                .layer()
                .pass_cached(move |req| auth.verifies_from_cache(req))
        })
        .layer(TraceLayer::new_for_http().make_span_with(AuthMakeSpan::new()))
        .layer(auth.sensitive_headers())
}
