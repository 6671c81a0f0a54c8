//! Metrics through the [`metrics`] facade (no exporter here: without a
//! recorder installed by the application each call is a no-op).
//!
//! - `keygate_auth_requests_total{outcome, reason}` (counter): every decided
//!   authentication attempt; `outcome` is `success` or `refused`, `reason`
//!   the [`RejectReason`] name (`none` on success). Never a key or user id.

use auth_core::RejectReason;

/// One attempt decided by the layer.
#[inline]
pub(crate) fn auth_attempt(reason: Option<RejectReason>) {
    match reason {
        None => metrics::counter!(
            "keygate_auth_requests_total", "outcome" => "success", "reason" => "none"
        )
        .increment(1),
        Some(r) => metrics::counter!(
            "keygate_auth_requests_total", "outcome" => "refused", "reason" => r.as_str()
        )
        .increment(1),
    }
}
