//! Metrics through the [`metrics`] facade (no exporter here: without a
//! recorder installed by the application each call is a no-op).
//!
//! - `keygate_ratelimit_decisions_total{rule, outcome}` (counter): one per
//!   rule checked; `rule` is the configured rule name (a handful per
//!   service), `outcome` is `allowed` or `limited`. Never a user, key or IP.
//! - `keygate_failed_auth_refusals_total` (counter): requests answered 429
//!   because their address failed authentication too often.

use std::sync::Arc;

/// Rule `rule` allowed or refused a request.
#[inline]
pub(crate) fn decision(rule: &Arc<str>, allowed: bool) {
    let outcome = if allowed { "allowed" } else { "limited" };
    metrics::counter!(
        "keygate_ratelimit_decisions_total",
        "rule" => metrics::SharedString::from(rule.clone()),
        "outcome" => outcome
    )
    .increment(1);
}

/// The failed-authentication limiter refused a request (429).
#[inline]
pub(crate) fn failed_auth_refusal() {
    metrics::counter!("keygate_failed_auth_refusals_total").increment(1);
}
