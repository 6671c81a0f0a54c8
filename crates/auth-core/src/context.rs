//! Who is making a request, as what, and with which scopes.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::{Arc, OnceLock},
};

use ipnet::IpNet;
use serde::{ser::SerializeStruct, Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{policy::Credits, policy::KeyPolicy, policy::KeyRateLimit, AuthError, KeyId, ScopeSet};

/// A user, optionally within an organisation (tenant).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    user_id: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_id: Option<Arc<str>>,
}

impl Principal {
    /// A user with no organisation.
    pub fn user(user_id: impl Into<Arc<str>>) -> Self {
        Self {
            user_id: user_id.into(),
            org_id: None,
        }
    }

    /// A user within an organisation.
    pub fn in_org(user_id: impl Into<Arc<str>>, org_id: impl Into<Arc<str>>) -> Self {
        Self {
            user_id: user_id.into(),
            org_id: Some(org_id.into()),
        }
    }

    /// The user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The user id, shared: a copy costs a reference count, not an
    /// allocation (audit events take it on every request).
    pub fn shared_user_id(&self) -> &Arc<str> {
        &self.user_id
    }

    /// The organisation id, if any.
    pub fn org_id(&self) -> Option<&str> {
        self.org_id.as_deref()
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.org_id {
            Some(org) => write!(f, "{}@{}", self.user_id, org),
            None => f.write_str(&self.user_id),
        }
    }
}

/// The kind of credential that authenticated a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A prefixed API key / personal access token.
    ApiKey,
    /// A JWT signed with a per-user secret.
    Jwt,
}

/// The authenticated identity of a request, put in the request extensions by
/// the auth layer. Cheap to clone.
///
/// The *actor* owns the credential; the *effective principal* is the subject
/// user when the request acts on someone's behalf, else the actor. Every
/// permission check should use the effective principal and [`AuthContext::scopes`].
///
/// ```
/// use auth_core::{AuthContext, KeyId, Principal, ScopeSet};
/// let ctx = AuthContext::for_key(
///     KeyId::random(), "ci", Principal::user("admin"), ScopeSet::parse(["read", "sudo"]).unwrap(),
/// );
/// let acting = ctx.with_subject(Principal::user("stu1"), &ScopeSet::parse(["read"]).unwrap());
/// assert_eq!(acting.effective_user(), "stu1");
/// assert_eq!(acting.actor().user_id(), "admin");
/// assert!(acting.is_impersonating());
/// assert!(acting.require_scope("read").is_ok());
/// assert!(acting.require_scope("sudo").is_err());
/// ```
#[derive(Clone)]
pub struct AuthContext(Arc<Inner>);

struct Inner {
    key_id: Option<KeyId>,
    key_name: Option<Arc<str>>,
    credential: CredentialKind,
    actor: Principal,
    subject: Option<Principal>,
    scopes: ScopeSet,
    workspace: Option<Arc<str>>,
    secret_generation: Option<i64>,
    /// The key's policy; `None` for keys without one (and other credentials).
    policy: Option<Arc<KeyPolicy>>,
    /// [`AuthContext::principal_digest`], once asked for.
    principal_digest: OnceLock<[u64; 2]>,
}

impl AuthContext {
    /// The context of an API key owned by `actor`.
    pub fn for_key(
        key_id: KeyId,
        name: impl Into<Arc<str>>,
        actor: Principal,
        scopes: ScopeSet,
    ) -> Self {
        Self(Arc::new(Inner {
            key_id: Some(key_id),
            key_name: Some(name.into()),
            credential: CredentialKind::ApiKey,
            actor,
            subject: None,
            scopes,
            workspace: None,
            secret_generation: None,
            policy: None,
            principal_digest: OnceLock::new(),
        }))
    }

    /// The context of a credential that is not a stored key (e.g. a JWT).
    pub fn for_user(credential: CredentialKind, actor: Principal, scopes: ScopeSet) -> Self {
        Self(Arc::new(Inner {
            key_id: None,
            key_name: None,
            credential,
            actor,
            subject: None,
            scopes,
            workspace: None,
            secret_generation: None,
            policy: None,
            principal_digest: OnceLock::new(),
        }))
    }

    /// The same context acting as `subject`: effective scopes become the
    /// intersection of the key's scopes and `subject_ceiling`.
    pub fn with_subject(&self, subject: Principal, subject_ceiling: &ScopeSet) -> Self {
        let mut inner = self.inner_clone();
        inner.scopes = inner.scopes.intersect(subject_ceiling);
        inner.subject = Some(subject);
        Self(Arc::new(inner))
    }

    /// The same context with a selected workspace.
    pub fn with_workspace(&self, workspace: impl Into<Arc<str>>) -> Self {
        let mut inner = self.inner_clone();
        inner.workspace = Some(workspace.into());
        Self(Arc::new(inner))
    }

    /// The same context carrying the key's policy (what the verifier does
    /// for keys that have one). An empty policy is dropped.
    pub fn with_key_policy(&self, policy: KeyPolicy) -> Self {
        let mut inner = self.inner_clone();
        inner.policy = (!policy.is_empty()).then(|| Arc::new(policy));
        Self(Arc::new(inner))
    }

    /// The same context after its key was edited: `scopes` (the caller
    /// never widens them) and the key's new policy.
    pub(crate) fn with_key_update(&self, scopes: ScopeSet, policy: Option<Arc<KeyPolicy>>) -> Self {
        let mut inner = self.inner_clone();
        inner.scopes = scopes;
        inner.policy = policy;
        Self(Arc::new(inner))
    }

    fn inner_clone(&self) -> Inner {
        let i = &self.0;
        Inner {
            key_id: i.key_id,
            key_name: i.key_name.clone(),
            credential: i.credential,
            actor: i.actor.clone(),
            subject: i.subject.clone(),
            scopes: i.scopes.clone(),
            workspace: i.workspace.clone(),
            secret_generation: i.secret_generation,
            policy: i.policy.clone(),
            // The subject may change: the digest is taken again when asked for.
            principal_digest: OnceLock::new(),
        }
    }

    /// The same context, noting the generation of the user secret that
    /// signed the credential (JWTs).
    #[cfg(feature = "jwt")]
    pub(crate) fn with_secret_generation(&self, generation: i64) -> Self {
        let mut inner = self.inner_clone();
        inner.secret_generation = Some(generation);
        Self(Arc::new(inner))
    }

    /// For a JWT, the generation of the user's signing secret that verified
    /// it: the credential ends when the secret is regenerated
    /// ([`Verifier::credential_ended`](crate::Verifier::credential_ended)).
    pub fn secret_generation(&self) -> Option<i64> {
        self.0.secret_generation
    }

    /// The key's id, for API-key credentials.
    pub fn key_id(&self) -> Option<KeyId> {
        self.0.key_id
    }

    /// The key's name, for API-key credentials.
    pub fn key_name(&self) -> Option<&str> {
        self.0.key_name.as_deref()
    }

    /// What kind of credential authenticated the request.
    pub fn credential(&self) -> CredentialKind {
        self.0.credential
    }

    /// The credential's owner.
    pub fn actor(&self) -> &Principal {
        &self.0.actor
    }

    /// The subject user, when acting on someone's behalf.
    pub fn subject(&self) -> Option<&Principal> {
        self.0.subject.as_ref()
    }

    /// The principal every check should use: the subject if any, else the actor.
    pub fn effective_principal(&self) -> &Principal {
        self.0.subject.as_ref().unwrap_or(&self.0.actor)
    }

    /// A 128-bit digest of [`effective_principal`](Self::effective_principal)
    /// under per-process random keys (two keyed SipHash instances), taken on
    /// first use and kept with the context. Per-user rate limits key their
    /// buckets by it: a cached context is hashed once, not on every request,
    /// and clients cannot aim two user ids at one bucket.
    pub fn principal_digest(&self) -> [u64; 2] {
        *self.0.principal_digest.get_or_init(|| {
            static KEYS: OnceLock<[RandomState; 2]> = OnceLock::new();
            let [a, b] = KEYS.get_or_init(|| [RandomState::new(), RandomState::new()]);
            let p = self.effective_principal();
            [a.hash_one(p), b.hash_one(p)]
        })
    }

    /// The effective principal's user id.
    pub fn effective_user(&self) -> &str {
        self.effective_principal().user_id()
    }

    /// Whether the request acts on behalf of another user.
    pub fn is_impersonating(&self) -> bool {
        self.0.subject.is_some()
    }

    /// The effective scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.0.scopes
    }

    /// The selected workspace, if any.
    pub fn workspace(&self) -> Option<&str> {
        self.0.workspace.as_deref()
    }

    /// The key's policy, if it has one.
    pub fn key_policy(&self) -> Option<&KeyPolicy> {
        self.0.policy.as_deref()
    }

    /// The key's metadata, if it has any.
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.key_policy().map(|p| &p.meta).filter(|m| !m.is_empty())
    }

    /// The application's own id for the key, if set.
    pub fn external_id(&self) -> Option<&str> {
        self.key_policy()?.external_id.as_deref()
    }

    /// Client networks the key may be used from (empty: any address).
    pub fn ip_allowlist(&self) -> &[IpNet] {
        self.key_policy().map_or(&[], |p| &p.ip_allowlist)
    }

    /// The key's own quota, if it has one.
    pub fn key_rate_limit(&self) -> Option<KeyRateLimit> {
        self.key_policy()?.rate_limit
    }

    /// The key's credits as they were when it was verified, for a
    /// usage-limited key (spend them with
    /// [`KeyStore::spend_credit`](crate::KeyStore::spend_credit)).
    pub fn credits(&self) -> Option<&Credits> {
        self.key_policy()?.credits.as_ref()
    }

    /// `Ok` if the effective scopes hold `scope`, else a 403 naming it.
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        if self.0.scopes.has(scope) {
            Ok(())
        } else {
            Err(AuthError::missing_scope(scope))
        }
    }
}

impl fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("key_id", &self.0.key_id)
            .field("credential", &self.0.credential)
            .field("actor", &self.0.actor)
            .field("subject", &self.0.subject)
            .field("scopes", &self.0.scopes)
            .field("workspace", &self.0.workspace)
            .field("policy", &self.0.policy)
            .finish()
    }
}

/// Serialized as the `/api/me` view: `key_id`, `key_name`, `credential`,
/// `actor`, `user` (effective), `org`, `impersonating`, `scopes`, `workspace`.
impl Serialize for AuthContext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AuthContext", 9)?;
        st.serialize_field("key_id", &self.0.key_id)?;
        st.serialize_field("key_name", &self.0.key_name)?;
        st.serialize_field("credential", &self.0.credential)?;
        st.serialize_field("actor", self.0.actor.user_id())?;
        st.serialize_field("user", self.effective_user())?;
        st.serialize_field("org", &self.effective_principal().org_id())?;
        st.serialize_field("impersonating", &self.is_impersonating())?;
        st.serialize_field("scopes", &self.0.scopes)?;
        st.serialize_field("workspace", &self.0.workspace)?;
        st.end()
    }
}
