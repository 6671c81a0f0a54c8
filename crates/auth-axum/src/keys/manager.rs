//! [`KeyManager`]: what the key-management router works with.

use std::{fmt, sync::Arc, time::Duration};

use auth_core::{
    AuditLog, AuthError, Credits, ErrorCode, KeyId, KeyIssuer, KeyPolicy, KeyRateLimit,
    RefillEvery, RejectReason, ScopeSet,
};
use axum::Router;
use ipnet::IpNet;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{error::KeyApiError, routes, AllowedOrigins, DefaultScopes, KeyOwner};

/// Default longest grace period of a rotation: 7 days.
pub(crate) const DEFAULT_MAX_GRACE: Duration = Duration::from_secs(7 * 86_400);
/// Default and largest page of the activity route.
pub(crate) const DEFAULT_PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 200;
/// Default "expiring soon" window of listings: 7 days.
pub(crate) const DEFAULT_EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// The configuration of the key-management router: the [`KeyIssuer`] (its
/// store, hasher and token prefix), the audit log behind the activity route,
/// and the scopes a key may be given.
///
/// Mount it with [`keys_router`](crate::keys_router) or [`KeyManager::router`].
#[derive(Clone)]
pub struct KeyManager {
    pub(crate) issuer: KeyIssuer,
    pub(crate) activity: Arc<dyn AuditLog>,
    pub(crate) known_scopes: Option<ScopeSet>,
    pub(crate) max_grace: Duration,
    pub(crate) mint_as_subject: bool,
    pub(crate) origins: Option<AllowedOrigins>,
    pub(crate) descriptions: Vec<(String, String)>,
    pub(crate) default_scopes: DefaultScopes,
    pub(crate) expiring_within: Duration,
    pub(crate) max_lifetime: Option<Duration>,
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("issuer", &self.issuer)
            .field("known_scopes", &self.known_scopes)
            .field("max_grace", &self.max_grace)
            .field("mint_as_subject", &self.mint_as_subject)
            .field("origins", &self.origins)
            .field("default_scopes", &self.default_scopes)
            .field("expiring_within", &self.expiring_within)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl KeyManager {
    /// Keys issued by `issuer` (in its store, with its prefix); activity read
    /// from `activity`, the log the `AuthLayer` audits into.
    pub fn new(issuer: KeyIssuer, activity: Arc<dyn AuditLog>) -> Self {
        Self {
            issuer,
            activity,
            known_scopes: None,
            max_grace: DEFAULT_MAX_GRACE,
            mint_as_subject: false,
            origins: None,
            descriptions: Vec::new(),
            default_scopes: DefaultScopes::None,
            expiring_within: DEFAULT_EXPIRING_WITHIN,
            max_lifetime: None,
        }
    }

    /// What a key created without `scopes` gets (default
    /// [`DefaultScopes::None`]). `"scopes": []` always means none.
    pub fn default_scopes(mut self, default: DefaultScopes) -> Self {
        self.default_scopes = default;
        self
    }

    /// How long before its end a key is listed as `"state": "expiring"`
    /// (default 7 days).
    pub fn expiring_within(mut self, window: Duration) -> Self {
        self.expiring_within = window;
        self
    }

    /// A service-wide maximum lifetime, like GitLab's enforced maximum:
    /// every new key must expire within `max` of its creation. A creation
    /// without `expires_at` is refused with 422 `expiry_required`, one
    /// beyond the limit with 422 `lifetime_exceeded`, both naming the
    /// latest allowed time: refused, not clamped, so a client never
    /// silently gets a shorter-lived key than it asked for. A rotation keeps
    /// the old key's expiry, brought within `now + max` if it is later or
    /// absent (the 201 shows the replacement's `expires_at`), so keys made
    /// before the limit can still be rotated. Default: no limit.
    pub fn max_key_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    /// Lets a key acting on behalf of another user (`X-Subject-User`) create
    /// and rotate that user's keys. Off by default: an impersonating key is
    /// then refused with 403, since the new key would outlive the
    /// impersonation and belong to someone who never asked for it. Listing,
    /// showing and revoking stay allowed.
    pub fn allow_minting_as_subject(mut self, allow: bool) -> Self {
        self.mint_as_subject = allow;
        self
    }

    /// The scopes that exist: asking for any other is 422 `unprocessable_entity`.
    /// Default: any well-formed scope (still limited by the owner's ceiling).
    pub fn known_scopes(mut self, scopes: ScopeSet) -> Self {
        self.known_scopes = Some(scopes);
        self
    }

    /// The longest grace period a rotation may ask for (default 7 days).
    pub fn max_rotation_grace(mut self, max: Duration) -> Self {
        self.max_grace = max;
        self
    }

    /// Refuse (403 `cross_origin_request`) creating, rotating and revoking
    /// keys from other origins than `allowed`. Turn it on when the owner is
    /// identified by a cookie session; see [`AllowedOrigins`].
    pub fn check_origin(mut self, allowed: AllowedOrigins) -> Self {
        self.origins = Some(allowed);
        self
    }

    /// One-line descriptions of the scopes, in the order a person should
    /// see them (the settings page shows them next to each checkbox; `GET
    /// /options` lists them).
    pub fn describe_scopes<I, N, D>(mut self, descriptions: I) -> Self
    where
        I: IntoIterator<Item = (N, D)>,
        N: Into<String>,
        D: Into<String>,
    {
        self.descriptions = descriptions
            .into_iter()
            .map(|(n, d)| (n.into(), d.into()))
            .collect();
        self
    }

    /// The issuer.
    pub fn issuer(&self) -> &KeyIssuer {
        &self.issuer
    }

    /// The router, with the account owner identified by the extractor `O`.
    /// Same as [`keys_router`](crate::keys_router).
    pub fn router<O, S>(self) -> Router<S>
    where
        O: KeyOwner + axum::extract::FromRequestParts<S>,
        S: Clone + Send + Sync + 'static,
    {
        routes::router::<O, S>(self)
    }
}

impl KeyManager {
    /// The latest expiry a key made now may have, under the maximum
    /// lifetime (to the microsecond, as stores keep it).
    pub(crate) fn latest_expiry(&self) -> Option<OffsetDateTime> {
        let max = time::Duration::try_from(self.max_lifetime?).ok()?;
        let now = self.issuer.wall_clock().now();
        let now = now
            .replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now);
        now.checked_add(max)
    }

    /// 422 unless a key created now and ending at `expires_at` stays within
    /// the maximum lifetime, if one is set.
    pub(crate) fn check_lifetime(
        &self,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(), KeyApiError> {
        let (Some(max), Some(latest)) = (self.max_lifetime, self.latest_expiry()) else {
            return Ok(());
        };
        let named = latest
            .format(&Rfc3339)
            .unwrap_or_else(|_| latest.to_string());
        let days = max.as_secs() / 86_400;
        let refuse = |code: &'static str, what: &str| {
            Err(KeyApiError::Auth(AuthError::custom(
                code,
                http::StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{what}: keys of this service live at most {days} days \
                     ({} seconds); set expires_at no later than {named}",
                    max.as_secs()
                ),
            )))
        };
        match expires_at {
            None => refuse("expiry_required", "Every key must expire"),
            Some(t) if t > latest => refuse("lifetime_exceeded", "expires_at is too far ahead"),
            Some(_) => Ok(()),
        }
    }
}

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
        if !self.ip_allowlist.is_empty() {
            let outside = policy
                .ip_allowlist
                .iter()
                .find(|net| !self.ip_allowlist.iter().any(|mine| mine.contains(*net)));
            if policy.ip_allowlist.is_empty() || outside.is_some() {
                let what = match outside {
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
