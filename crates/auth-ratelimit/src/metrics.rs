//! Metrics through the [`metrics`] facade (no exporter here: without a
//! recorder installed by the application each call is a no-op).
//!
//! - `keygate_ratelimit_decisions_total{rule, outcome}` (counter): one per
//!   rule checked; `rule` is the configured rule name (a handful per
//!   service), `outcome` is `allowed` or `limited`. Never a user, key or IP.
//! - `keygate_failed_auth_refusals_total` (counter): requests answered 429
//!   because their address failed authentication too often.

use std::sync::Arc;

use metrics::{Key, Label, Level, Metadata};

const DECISIONS: &str = "keygate_ratelimit_decisions_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One rule's decision counters, their keys built once with the limiter:
/// recording borrows them, so a request allocates nothing for its metrics
/// (`counter!` with a dynamic label builds its key on every call, recorder
/// or not).
#[derive(Debug)]
pub(crate) struct DecisionKeys {
    allowed: Key,
    limited: Key,
}

impl DecisionKeys {
    pub(crate) fn new(rule: &Arc<str>) -> Self {
        let key = |outcome: &'static str| {
            Key::from_parts(
                DECISIONS,
                vec![
                    Label::new("rule", rule.to_string()),
                    Label::new("outcome", outcome),
                ],
            )
        };
        Self {
            allowed: key("allowed"),
            limited: key("limited"),
        }
    }

    /// The rule allowed or refused a request.
    #[inline]
    pub(crate) fn record(&self, allowed: bool) {
        let key = if allowed {
            &self.allowed
        } else {
            &self.limited
        };
        metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
    }
}

/// The failed-authentication limiter refused a request (429).
#[inline]
pub(crate) fn failed_auth_refusal() {
    metrics::counter!("keygate_failed_auth_refusals_total").increment(1);
}
