//! The middleware every example puts around its routes.

use auth_ratelimit::{FailedAuthLimiter, RateLimiter};
use auth_tower::{AuthLayer, AuthMakeSpan};
use axum::Router;
use tower_http::trace::TraceLayer;

/// `routes` behind, from the outside in: credential headers marked
/// sensitive, a request span (path only, never the query), the
/// failed-authentication limit per client address (429 once an address has
/// had too many 401s; it must see the auth layer's answers, so it goes
/// outside it), the `AuthLayer` (401/403/503, audit), then the rate limiter,
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
        .layer(failures.layer())
        .layer(TraceLayer::new_for_http().make_span_with(AuthMakeSpan::new()))
        .layer(auth.sensitive_headers())
}
