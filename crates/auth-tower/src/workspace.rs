//! Workspace selection: which of the principal's workspaces a request targets.
//!
//! A client names the workspace in a header (default `x-workspace-id`); the
//! application's [`WorkspaceResolver`] checks that the effective principal
//! belongs to it (else 403). Without the header, the resolver may supply a
//! default workspace. The result is [`AuthContext::workspace`].
//!
//! Without a resolver the header is ignored and no workspace is set: an
//! unchecked workspace id never reaches the context.

use async_trait::async_trait;
use auth_core::AuthContext;

use crate::ResolveError;

/// Default header naming the workspace.
pub const DEFAULT_WORKSPACE_HEADER: &str = "x-workspace-id";

/// Checks workspace membership and supplies default workspaces.
///
/// `ctx` is the request's context after impersonation: check
/// [`AuthContext::effective_principal`].
///
/// ```
/// use async_trait::async_trait;
/// use auth_core::AuthContext;
/// use auth_tower::{ResolveError, WorkspaceResolver};
///
/// struct OneWorkspacePerUser;
///
/// #[async_trait]
/// impl WorkspaceResolver for OneWorkspacePerUser {
///     async fn is_member(&self, ctx: &AuthContext, workspace_id: &str) -> Result<bool, ResolveError> {
///         Ok(workspace_id == format!("ws_{}", ctx.effective_user()))
///     }
///     async fn default_workspace(&self, ctx: &AuthContext) -> Result<Option<String>, ResolveError> {
///         Ok(Some(format!("ws_{}", ctx.effective_user())))
///     }
/// }
/// ```
#[async_trait]
pub trait WorkspaceResolver: Send + Sync + 'static {
    /// Whether the effective principal belongs to `workspace_id`.
    async fn is_member(&self, ctx: &AuthContext, workspace_id: &str) -> Result<bool, ResolveError>;

    /// The workspace to use when the request names none. Default: none.
    async fn default_workspace(&self, ctx: &AuthContext) -> Result<Option<String>, ResolveError> {
        let _ = ctx;
        Ok(None)
    }
}
