//! Subject-user impersonation: a key acting on behalf of another user.
//!
//! The request names the subject in a header (default `X-Subject-User`). The
//! key must carry the impersonation scope (default `sudo`, as GitLab requires
//! for its `Sudo` header), and the application's [`SubjectResolver`] decides
//! whether the key's owner may act as that user. The request then runs as the
//! subject: [`AuthContext::effective_principal`] is the subject and the
//! effective scopes are the key's scopes intersected with the subject's
//! ceiling, so the subject must themself hold every scope used.

use async_trait::async_trait;
use auth_core::{AuthContext, Principal, ScopeSet};

use crate::ResolveError;

/// Default header naming the subject user.
pub const DEFAULT_SUBJECT_HEADER: &str = "x-subject-user";

/// Default scope a key needs to act on behalf of another user.
pub const DEFAULT_IMPERSONATION_SCOPE: &str = "sudo";

/// The user a request will act as, and the most that user may do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subject {
    /// The subject user.
    pub principal: Principal,
    /// The subject's own scopes: the key's scopes are cut down to these.
    pub ceiling: ScopeSet,
}

impl Subject {
    /// Acting as `principal`, with at most the scopes in `ceiling`.
    pub fn new(principal: Principal, ceiling: ScopeSet) -> Self {
        Self { principal, ceiling }
    }
}

/// What a [`SubjectResolver`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectDecision {
    /// The actor may act as this subject.
    Allow(Subject),
    /// The actor may not act as this user (403 `forbidden`).
    Deny,
    /// No such user (403 `forbidden`). Return [`SubjectDecision::Deny`] instead
    /// when the actor should not learn whether the user exists.
    Unknown,
}

/// Decides whether the owner of a key may act as another user.
///
/// Called only when the request names a subject and the key carries the
/// impersonation scope. The usual rule: the actor administers the subject's
/// organisation.
///
/// ```
/// use async_trait::async_trait;
/// use auth_core::{AuthContext, Principal, ScopeSet};
/// use auth_tower::{ResolveError, Subject, SubjectDecision, SubjectResolver};
///
/// struct OrgAdmins;
///
/// #[async_trait]
/// impl SubjectResolver for OrgAdmins {
///     async fn resolve(&self, actor: &AuthContext, user_id: &str) -> Result<SubjectDecision, ResolveError> {
///         // Look the user up in the application's database here.
///         let subject = Principal::in_org(user_id, "acme");
///         if actor.actor().org_id() != subject.org_id() {
///             return Ok(SubjectDecision::Deny);
///         }
///         let ceiling = ScopeSet::parse(["read"]).unwrap();
///         Ok(SubjectDecision::Allow(Subject::new(subject, ceiling)))
///     }
/// }
/// ```
#[async_trait]
pub trait SubjectResolver: Send + Sync + 'static {
    /// Whether `actor` (the verified key's context) may act as the user `user_id`.
    async fn resolve(
        &self,
        actor: &AuthContext,
        user_id: &str,
    ) -> Result<SubjectDecision, ResolveError>;
}
