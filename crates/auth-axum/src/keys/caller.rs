//! [`Caller`]: the key behind a key-management request, and what it may make.

use auth_core::{
    policy::Credits, policy::KeyPolicy, policy::KeyRateLimit, policy::RefillEvery,
    store::KeyRecord, AuthError, ErrorCode, KeyId, RejectReason, ScopeSet,
};
use ipnet::IpNet;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    error::KeyApiError,
    manager::KeyManager,
    owner::{KeyOwner, RequestKey},
};

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
        match self.looser(policy) {
            Some((field, why)) => Err(exceeds(
                field,
                format!("{field} is looser than the calling key's: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// The rule of authority over existing keys: a calling key may act on
    /// (show, read the activity or usage of, edit, revoke, rotate, list) only
    /// keys no broader than itself: scopes it holds, an end no later than
    /// its own, an allowlist within its own, a rate limit no looser in burst
    /// or in rate, credits no more generous. Otherwise a narrow key-management
    /// key could spy on, switch off or steer a broader key of the same owner.
    /// 403, naming the first field that is broader; sessions (no calling
    /// key) are bounded by ownership only.
    pub(crate) fn check_authority(
        &self,
        target: &KeyRecord,
        ceiling: &ScopeSet,
    ) -> Result<(), KeyApiError> {
        // A session is not bound; a key is never broader than itself (its
        // credits, read twice, may differ by a spend or a refill).
        if self.key.is_none_or(|me| me == target.id) {
            return Ok(());
        }
        if let Some(beyond) = target.scopes.iter().find(|s| !ceiling.has(s)) {
            return Err(KeyApiError::Auth(
                AuthError::new(ErrorCode::Forbidden, RejectReason::InsufficientAccess)
                    .with_message(format!(
                        "You may not act on a key holding the scope '{beyond}', which you may \
                         not grant: a key acts only on keys no broader than itself"
                    )),
            ));
        }
        if let Some(limit) = self.ends_at {
            if target.ends().is_none_or(|(at, _)| at > limit) {
                let limit = limit.format(&Rfc3339).unwrap_or_else(|_| limit.to_string());
                return Err(exceeds(
                    "expires_at",
                    format!(
                        "This key's end (expires_at) is later than the calling key's, {limit}: a \
                         key acts only on keys no broader than itself"
                    ),
                ));
            }
        }
        match self.looser(&KeyPolicy::of(target).unwrap_or_default()) {
            Some((field, why)) => Err(exceeds(
                field,
                format!(
                    "This key's {field} is broader than the calling key's ({why}): a key acts \
                     only on keys no broader than itself"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether the key acts on `target` under [`Caller::check_authority`]
    /// (listings show a key-backed caller only those).
    pub(crate) fn has_authority(&self, target: &KeyRecord, ceiling: &ScopeSet) -> bool {
        self.check_authority(target, ceiling).is_ok()
    }

    /// The first field of `policy` looser than the calling key's, and why;
    /// `None` when every field is as tight or tighter, or for a session.
    fn looser(&self, policy: &KeyPolicy) -> Option<(&'static str, String)> {
        self.key?;
        if let Some(wider) = widening(&self.ip_allowlist, &policy.ip_allowlist) {
            let what = match wider {
                Some(net) => format!("{net} is outside it"),
                None => "an empty list allows any address".to_owned(),
            };
            return Some((
                "ip_allowlist",
                format!(
                    "the calling key is limited to {}, and the ip_allowlist must be within it \
                     ({what})",
                    nets(&self.ip_allowlist)
                ),
            ));
        }
        if let Some(mine) = self.rate_limit {
            if !policy.rate_limit.is_some_and(|r| no_looser(r, mine)) {
                let (limit, period) = (mine.limit.get(), mine.period_seconds.get());
                return Some((
                    "rate_limit",
                    format!(
                        "the calling key may make {limit} requests per {period} seconds, so the \
                         rate_limit needs a limit of at most {limit} (the burst) and a rate no \
                         faster than that"
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
                return Some((
                    "remaining",
                    format!(
                        "the calling key has {} credits left, so remaining must be at most that, \
                         with {refill}",
                        mine.remaining
                    ),
                ));
            }
        }
        None
    }
}

/// Whether `asked` lets no more through than `bound`, in both dimensions: a
/// burst (`limit`) no larger, and a sustained rate (`limit / period`) no
/// faster. Comparing the rate alone would let `5000 per 200000 s` (slower)
/// pass under `10 per 60 s` while allowing 5000 requests at once.
pub(crate) fn no_looser(asked: KeyRateLimit, bound: KeyRateLimit) -> bool {
    let burst = asked.limit <= bound.limit;
    // asked.limit / asked.period <= bound.limit / bound.period, without division.
    let rate = u64::from(asked.limit.get()) * u64::from(bound.period_seconds.get())
        <= u64::from(bound.limit.get()) * u64::from(asked.period_seconds.get());
    burst && rate
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

/// 403 `policy_exceeds_caller`: `message` names the field.
pub(crate) fn exceeds(field: &str, message: String) -> KeyApiError {
    debug_assert!(message.contains(field));
    KeyApiError::Auth(AuthError::custom(
        "policy_exceeds_caller",
        http::StatusCode::FORBIDDEN,
        message,
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
    ///   and its policy (allowlist, rate limit, credits) bounds theirs;
    /// * a request the `AuthLayer` authenticated with an API key whose owner
    ///   does not report that key ([`KeyOwner::acting_key`]) is refused
    ///   (500): fail closed.
    pub(crate) async fn caller<O: KeyOwner>(
        &self,
        owner: &O,
        request_key: &RequestKey,
        action: Action,
    ) -> Result<Caller, KeyApiError> {
        // An owner that does not report the key the layer verified would
        // drop every key-backed restriction: fail closed.
        if request_key.0.is_some() && owner.acting_key() != request_key.0 {
            tracing::error!(
                "the KeyOwner of a key-management route does not report the API key that \
                 authenticated the request (KeyOwner::acting_key): request refused"
            );
            return Err(KeyApiError::Auth(
                AuthError::new(ErrorCode::Internal, RejectReason::Internal).with_message(
                    "This service cannot tell which key is making the request, so it manages \
                     no keys for it",
                ),
            ));
        }
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
