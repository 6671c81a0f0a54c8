//! [`EnforcedPolicy`]: the key policy fields the application enforces.

use auth_core::policy::KeyPolicy;

use super::error::KeyApiError;

/// A key policy field whose enforcement takes a component the application
/// may or may not run: declared with
/// [`KeyManager::enforces`](crate::KeyManager::enforces).
///
/// A policy the key router accepts is a policy that is enforced: a field
/// the application has not declared is refused with 422
/// `policy_not_enforced`, naming it, rather than stored on a key that would
/// then be served without the limit. Scopes, expiry and `ip_allowlist` need
/// no declaration: the verifier and the `AuthLayer` enforce them always
/// (a key with an allowlist is refused where the client address is unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EnforcedPolicy {
    /// `rate_limit`, a key's own quota: the application runs a rate limiter
    /// with a per-key-quota rule (`auth_ratelimit::Rule::key_quota`) in
    /// front of every route a key may call.
    RateLimit,
    /// `remaining` and `refill`, a key's credits: the application runs a
    /// rate limiter that spends them (`auth_ratelimit::RateLimiter`'s
    /// credits store) in front of every route a key may call.
    Credits,
}

impl EnforcedPolicy {
    /// The body field that asks for it.
    fn field(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::Credits => "remaining",
        }
    }
}

/// 422 `policy_not_enforced` for the first field of `policy` that needs a
/// component not in `enforced`.
pub(crate) fn check_enforced(
    enforced: &[EnforcedPolicy],
    policy: &KeyPolicy,
) -> Result<(), KeyApiError> {
    let asked = [
        (EnforcedPolicy::RateLimit, policy.rate_limit.is_some()),
        (EnforcedPolicy::Credits, policy.credits.is_some()),
    ];
    match asked
        .into_iter()
        .find(|(what, given)| *given && !enforced.contains(what))
    {
        Some((what, _)) => Err(KeyApiError::field(
            "policy_not_enforced",
            format!(
                "{} is not enforced by this service: a key with it would be served without \
                 that limit, so it cannot be set here",
                what.field()
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use auth_core::{policy::Credits, policy::KeyRateLimit};
    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn only_declared_fields_pass() {
        let one = NonZeroU32::MIN;
        let limited = KeyPolicy::default().rate_limit(KeyRateLimit::new(one, one));
        let metered = KeyPolicy::default().credits(Credits::new(3, OffsetDateTime::UNIX_EPOCH));
        let message = |r: Result<(), KeyApiError>| match r {
            Err(KeyApiError::Auth(e)) => {
                assert_eq!(
                    (e.status().as_u16(), e.code().as_str()),
                    (422, "policy_not_enforced")
                );
                e.message().to_owned()
            }
            other => panic!("{other:?}"),
        };
        assert!(message(check_enforced(&[], &limited)).contains("rate_limit"));
        assert!(
            message(check_enforced(&[EnforcedPolicy::RateLimit], &metered)).contains("remaining")
        );
        assert!(check_enforced(&[], &KeyPolicy::default()).is_ok());
        assert!(check_enforced(&[EnforcedPolicy::RateLimit], &limited).is_ok());
        assert!(check_enforced(&[EnforcedPolicy::Credits], &metered).is_ok());
    }
}
