//! What a key carries besides its scopes: the application's metadata, an
//! address allowlist, its own rate limit and credits.

use std::num::NonZeroU32;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{policy::Credits, store::KeyRecord};

/// Largest serialised `meta` object accepted, in bytes.
pub const MAX_META_BYTES: usize = 4096;
/// Longest `external_id` accepted, in bytes.
pub const MAX_EXTERNAL_ID_LEN: usize = 256;

/// A key's own quota: at most `limit` requests per `period_seconds`.
///
/// JSON: `{"limit": 100, "period_seconds": 60}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct KeyRateLimit {
    /// Requests allowed per period.
    #[cfg_attr(feature = "utoipa", schema(value_type = u32, minimum = 1))]
    pub limit: NonZeroU32,
    /// The period, in seconds.
    #[cfg_attr(feature = "utoipa", schema(value_type = u32, minimum = 1))]
    pub period_seconds: NonZeroU32,
}

impl KeyRateLimit {
    /// At most `limit` requests per `period_seconds`.
    pub const fn new(limit: NonZeroU32, period_seconds: NonZeroU32) -> Self {
        Self {
            limit,
            period_seconds,
        }
    }
}

/// A key's policy, as the verifier hands it to the layers after it
/// ([`AuthContext::key_policy`](crate::AuthContext::key_policy)).
///
/// Only keys that have one carry it: a context of a key without metadata,
/// allowlist, rate limit or credits holds `None` and costs nothing more.
///
/// ```
/// use auth_core::{AuthContext, KeyId, policy::KeyPolicy, Principal, ScopeSet};
/// let policy = KeyPolicy::default()
///     .external_id("cust_42")
///     .ip_allowlist(vec!["203.0.113.0/24".parse().unwrap()]);
/// let ctx = AuthContext::for_key(KeyId::random(), "ci", Principal::user("alice"), ScopeSet::empty())
///     .with_key_policy(policy);
/// assert_eq!(ctx.external_id(), Some("cust_42"));
/// assert_eq!(ctx.ip_allowlist().len(), 1);
/// assert!(ctx.credits().is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// Metadata (empty: none). The key holder may write it through the
    /// key-management router (on create and by `PATCH`): treat it as user
    /// input, never as something the application vouches for.
    pub meta: Map<String, Value>,
    /// The application's own id for the key (a customer or tenant id, say).
    /// Handlers may trust it: only the application sets it (through
    /// [`KeyIssuer`](crate::KeyIssuer) or
    /// [`KeyStore::update`](crate::KeyStore::update)); the user-facing key
    /// router refuses it.
    pub external_id: Option<String>,
    /// Client networks the key may be used from (empty: any).
    pub ip_allowlist: Vec<IpNet>,
    /// The key's own quota.
    pub rate_limit: Option<KeyRateLimit>,
    /// The key's credits as they were when the key was verified (the store
    /// keeps the live count: [`KeyStore::spend_credit`](crate::KeyStore::spend_credit)).
    pub credits: Option<Credits>,
}

impl KeyPolicy {
    /// Sets the application's metadata.
    pub fn meta(mut self, meta: Map<String, Value>) -> Self {
        self.meta = meta;
        self
    }

    /// Sets the application's own id for the key.
    pub fn external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// Sets the client networks the key may be used from.
    pub fn ip_allowlist(mut self, nets: Vec<IpNet>) -> Self {
        self.ip_allowlist = nets;
        self
    }

    /// Gives the key its own quota.
    pub fn rate_limit(mut self, limit: KeyRateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Makes the key usage-limited.
    pub fn credits(mut self, credits: Credits) -> Self {
        self.credits = Some(credits);
        self
    }

    /// The policy of `record`, or `None` if it has none.
    pub fn of(record: &KeyRecord) -> Option<Self> {
        let policy = Self {
            meta: record.meta.clone(),
            external_id: record.external_id.clone(),
            ip_allowlist: record.ip_allowlist.clone(),
            rate_limit: record.rate_limit,
            credits: record.credits,
        };
        (!policy.is_empty()).then_some(policy)
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
            && self.external_id.is_none()
            && self.ip_allowlist.is_empty()
            && self.rate_limit.is_none()
            && self.credits.is_none()
    }
}
