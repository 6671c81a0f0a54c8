//! [`Caller`]: the key behind a key-management request, and what it may make.

use auth_core::{
    AuthError, Credits, ErrorCode, KeyId, KeyPolicy, KeyRateLimit, RefillEvery, RejectReason,
};
use ipnet::IpNet;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{error::KeyApiError, manager::KeyManager, owner::KeyOwner};

/// The key behind a key-management request, once checked: see
/// [`KeyManager::caller`].
#[derive(Debug, Default)]
pub(crate) struct Caller {
    /// The calling key, recorded as the `created_by` of keys it makes.
    pub(crate) key: Option<KeyId>,
    /// When the calling key stops working: keys it makes must end no later.
    pub(crate) ends_at: Option<OffsetDateTime>,
    /// The calling key's allowlist (empty: any address).
    pub(crate) ip_allowlist: Vec<IpNet>,
    /// The calling key's own quota.
    pub(crate) rate_limit: Option<KeyRateLimit>,
    /// The calling key's credits, as stored.
    pub(crate) credits: Option<Credits>,
}

impl Caller {
    /// 422 unless a key ending at `expires_at` (`None`: never) ends no
    /// later than the calling key. The limit is named in the message.
    pub(crate) fn check_end(&self, expires_at: Option<OffsetDateTime>) -> Result<(), KeyApiError> {
        let Some(limit) = self.ends_at else {
            return Ok(());
        };
        if expires_at.is_some_and(|t| t <= limit) {
            return Ok(());
        }
        let limit = limit.format(&Rfc3339).unwrap_or_else(|_| limit.to_string());
        Err(KeyApiError::invalid(format!(
            "The new key must end no later than {limit}, when the key making this request stops \
             working (set expires_at no later than that): a key cannot make a key that outlives it"
        )))
    }
}

impl Caller {
    /// 403 `policy_exceeds_caller` unless `policy` (of a key about to be
    /// made) is at least as tight as the calling key's: otherwise a key
    /// limited to an office network, a slow rate or a few credits could
    /// mint an unlimited one. Sessions (no calling key) are not limited.
    pub(crate) fn check_policy(&self, policy: &KeyPolicy) -> Result<(), KeyApiError> {
        if self.key.is_none() {
            return Ok(());
        }
        if let Some(wider) = widening(&self.ip_allowlist, &policy.ip_allowlist) {
            let what = match wider {
                Some(net) => format!("{net} is outside it"),
                None => "an empty list allows any address".to_owned(),
            };
            return Err(exceeds(
                "ip_allowlist",
                format!(
                    "the calling key is limited to {}, so the new key's ip_allowlist must be                          within it ({what})",
                    nets(&self.ip_allowlist)
                ),
            ));
        }
        if let Some(mine) = self.rate_limit {
            let (limit, period) = (mine.limit.get(), mine.period_seconds.get());
            // limit/period <= mine.limit/mine.period, without division.
            let slower = policy.rate_limit.is_some_and(|r| {
                u64::from(r.limit.get()) * u64::from(period)
                    <= u64::from(limit) * u64::from(r.period_seconds.get())
            });
            if !slower {
                return Err(exceeds(
                    "rate_limit",
                    format!(
                        "the calling key may make {limit} requests per {period} seconds, so the                          new key needs a rate_limit no faster than that"
                    ),
                ));
            }
        }
        if let Some(mine) = &self.credits {
            let within = policy.credits.as_ref().is_some_and(|c| {
                c.remaining <= mine.remaining
                    && match (&c.refill, &mine.refill) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        // No more at a time and no more often.
                        (Some(r), Some(m)) => {
                            r.amount <= m.amount && rank(r.every) >= rank(m.every)
                        }
                    }
            });
            if !within {
                let refill = match &mine.refill {
                    Some(r) => format!(
                        "a refill of at most {} every {} or less often",
                        r.amount,
                        r.every.as_str()
                    ),
                    None => "no refill".to_owned(),
                };
                return Err(exceeds(
                    "remaining",
                    format!(
                        "the calling key has {} credits left, so the new key needs remaining of                          at most that and {refill}",
                        mine.remaining
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// How rarely a refill comes: hour < day < week < month.
fn rank(every: RefillEvery) -> u8 {
    match every {
        RefillEvery::Hour => 0,
        RefillEvery::Day => 1,
        RefillEvery::Week => 2,
        RefillEvery::Month => 3,
    }
}

/// How `asked` would reach beyond `limit`, a non-empty allowlist:
/// `Some(Some(net))` for a net outside it, `Some(None)` for an empty list
/// (any address); `None` when it stays within, or `limit` is empty.
pub(crate) fn widening(limit: &[IpNet], asked: &[IpNet]) -> Option<Option<IpNet>> {
    if limit.is_empty() {
        return None;
    }
    if asked.is_empty() {
        return Some(None);
    }
    asked
        .iter()
        .find(|net| !limit.iter().any(|mine| mine.contains(*net)))
        .map(|net| Some(*net))
}

/// The calling key's nets, for messages.
fn nets(list: &[IpNet]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// 403 `policy_exceeds_caller`, naming `field`.
pub(crate) fn exceeds(field: &str, why: String) -> KeyApiError {
    KeyApiError::Auth(AuthError::custom(
        "policy_exceeds_caller",
        http::StatusCode::FORBIDDEN,
        format!("{field} is looser than the calling key's: {why}"),
    ))
}

/// What the caller is about to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// List, show, edit, revoke, read activity.
    Manage,
    /// Create or rotate: makes a new key.
    Mint,
}

impl KeyManager {
    /// Checks the key behind the request, if the owner is identified by one:
    ///
    /// * a key that has been replaced by rotation works for the API during
    ///   its grace period, but may not manage keys (403): otherwise it could
    ///   rotate away or revoke its own replacement;
    /// * a key acting on behalf of another user may not make keys unless
    ///   [`allow_minting_as_subject`](Self::allow_minting_as_subject) (403);
    /// * the key's end (expiry or scheduled revocation) limits the keys it makes,
    ///   and its policy (allowlist, rate limit, credits) bounds theirs.
    pub(crate) async fn caller<O: KeyOwner>(
        &self,
        owner: &O,
        action: Action,
    ) -> Result<Caller, KeyApiError> {
        if action == Action::Mint && owner.is_impersonating() && !self.mint_as_subject {
            return Err(KeyApiError::Auth(AuthError::forbidden(
                RejectReason::ImpersonationDenied,
                "Keys cannot be created or rotated while acting on behalf of another user",
            )));
        }
        let Some(id) = owner.acting_key() else {
            return Ok(Caller::default());
        };
        let replaced = || {
            KeyApiError::Auth(
                AuthError::new(ErrorCode::Forbidden, RejectReason::Revoked).with_message(
                    "This key has been replaced by rotation: it keeps working until its grace \
                     period ends, but cannot manage keys. Use its replacement",
                ),
            )
        };
        // Read from the store, not the verifier's cache: a rotation made a
        // moment ago on another instance counts.
        let record = self.issuer.get(id).await?.ok_or_else(replaced)?;
        if record.replaced_by.is_some() {
            return Err(replaced());
        }
        Ok(Caller {
            key: Some(id),
            ends_at: record.ends().map(|(at, _)| at),
            ip_allowlist: record.ip_allowlist,
            rate_limit: record.rate_limit,
            credits: record.credits,
        })
    }
}
