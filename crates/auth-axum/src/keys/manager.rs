//! [`KeyManager`]: what the key-management router works with.

use std::{fmt, sync::Arc, time::Duration};

use auth_core::{audit::AuditLog, scope::validate_scope, AuthError, KeyIssuer, ScopeSet};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    default_scopes::DefaultScopes,
    enforced::{check_enforced, EnforcedPolicy},
    error::KeyApiError,
    origins::AllowedOrigins,
    owner::KeyOwner,
};

/// Default longest grace period of a rotation: 7 days.
pub(crate) const DEFAULT_MAX_GRACE: Duration = Duration::from_secs(7 * 86_400);
/// Default and largest page of the activity route.
pub(crate) const DEFAULT_PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 200;
/// Default "expiring soon" window of listings: 7 days.
pub(crate) const DEFAULT_EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 86_400);
/// Most scopes one key may list.
pub(crate) const MAX_SCOPES_PER_KEY: usize = 64;

/// The configuration of the key-management router: the [`KeyIssuer`] (its
/// store, hasher and token prefix), the audit log behind the activity route,
/// and the scopes a key may be given.
///
/// Mount it with [`keys_router`](crate::keys_router).
#[derive(Clone)]
pub struct KeyManager {
    pub(crate) issuer: KeyIssuer,
    pub(crate) activity: Arc<dyn AuditLog>,
    pub(crate) known_scopes: Option<ScopeSet>,
    pub(crate) max_grace: Duration,
    pub(crate) mint_as_subject: bool,
    pub(crate) origins: AllowedOrigins,
    pub(crate) descriptions: Vec<(String, String)>,
    pub(crate) default_scopes: DefaultScopes,
    pub(crate) expiring_within: Duration,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) enforced: Vec<EnforcedPolicy>,
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
            .field("enforced", &self.enforced)
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
            origins: AllowedOrigins::same_host(),
            descriptions: Vec::new(),
            default_scopes: DefaultScopes::None,
            expiring_within: DEFAULT_EXPIRING_WITHIN,
            max_lifetime: None,
            enforced: Vec::new(),
        }
    }

    /// Declares that the application enforces `policy` on every route a
    /// key may call, so that the key router accepts it on new keys. Default:
    /// nothing declared, and a key asking for a per-key `rate_limit` or for
    /// credits (`remaining`, `refill`) is refused with 422
    /// `policy_not_enforced`: a policy accepted is a policy enforced.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use auth_axum::{EnforcedPolicy, KeyManager};
    /// # use auth_core::*;
    /// # use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
    /// # let issuer = KeyIssuer::new(Arc::new(MemoryKeyStore::new()), SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
    /// // The service runs a limiter with `Rule::key_quota()` and a credits store.
    /// let keys = KeyManager::new(issuer, Arc::new(MemoryAuditLog::default()))
    ///     .enforces(EnforcedPolicy::RateLimit)
    ///     .enforces(EnforcedPolicy::Credits);
    /// ```
    pub fn enforces(mut self, policy: EnforcedPolicy) -> Self {
        if !self.enforced.contains(&policy) {
            self.enforced.push(policy);
        }
        self
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

    /// Where browsers may send changes from (default: the service's own
    /// host only). Every state-changing request that carries a cookie or
    /// names its origin must come from one of `allowed`, with or without a
    /// body, or it is refused with 403 `cross_origin_request`; see
    /// [`AllowedOrigins`]. List a front end served from another origin here.
    pub fn check_origin(mut self, allowed: AllowedOrigins) -> Self {
        self.origins = allowed;
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
}

impl KeyManager {
    /// 422 `policy_not_enforced` for a field of `policy` the application
    /// has not declared it enforces ([`KeyManager::enforces`]).
    pub(crate) fn check_enforced(
        &self,
        policy: &auth_core::policy::KeyPolicy,
    ) -> Result<(), KeyApiError> {
        check_enforced(&self.enforced, policy)
    }

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

    /// The "expiring soon" window, as listings take it.
    pub(crate) fn expiring(&self) -> time::Duration {
        time::Duration::try_from(self.expiring_within).unwrap_or(time::Duration::MAX)
    }

    /// The scopes of a key created without `scopes`: none, or everything the
    /// owner may grant that the service knows.
    pub(crate) fn default_scopes_for<O: KeyOwner>(&self, owner: &O) -> ScopeSet {
        match self.default_scopes {
            DefaultScopes::None => ScopeSet::empty(),
            DefaultScopes::OwnerGrantable => match &self.known_scopes {
                Some(known) => owner.grantable_scopes().intersect(known),
                None => owner.grantable_scopes().clone(),
            },
        }
    }

    /// `asked`, checked: 422 for a malformed or unknown scope, then 403 for
    /// one beyond the owner's ceiling.
    pub(crate) fn checked_scopes<O: KeyOwner>(
        &self,
        owner: &O,
        asked: &[String],
    ) -> Result<ScopeSet, KeyApiError> {
        if asked.len() > MAX_SCOPES_PER_KEY {
            return Err(KeyApiError::invalid(format!(
                "A key may have at most {MAX_SCOPES_PER_KEY} scopes"
            )));
        }
        for scope in asked {
            validate_scope(scope).map_err(|e| KeyApiError::invalid(e.to_string()))?;
            if let Some(known) = &self.known_scopes {
                if !known.has(scope) {
                    let list: Vec<&str> = known.iter().collect();
                    return Err(KeyApiError::invalid(format!(
                        "Unknown scope '{scope}'; known scopes: {}",
                        list.join(", ")
                    )));
                }
            }
        }
        let ceiling = owner.grantable_scopes();
        if let Some(beyond) = asked.iter().find(|s| !ceiling.has(s)) {
            return Err(KeyApiError::beyond_ceiling(beyond));
        }
        ScopeSet::parse(asked).map_err(|e| KeyApiError::invalid(e.to_string()))
    }
}
