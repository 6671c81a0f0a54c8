//! What an [`AuthLayer`](crate::AuthLayer) was built with, shared by its services.

use std::{fmt, net::IpAddr, sync::Arc};

use auth_core::{
    client_ip::ClientIp, client_ip::TrustedProxies, response::ErrorFormat, response::DEFAULT_REALM,
    AuditSink, AuthError, Verifier,
};
use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, Request, Response};

use crate::{AuthRealm, CredentialSource, SubjectResolver, WorkspaceResolver};

/// Finds a request's socket peer address (e.g. in axum's `ConnectInfo`).
pub(crate) type PeerIpFn = dyn Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync;

pub(crate) struct Config {
    pub(crate) verifier: Verifier,
    pub(crate) sources: Box<[CredentialSource]>,
    pub(crate) required: bool,
    pub(crate) format: ErrorFormat,
    /// Whether authenticated requests need the format in their extensions:
    /// not for the default, which an [`AuthContext`](auth_core::AuthContext) implies.
    pub(crate) format_entry: bool,
    /// `None` for [`DEFAULT_REALM`]: then nothing is put in the extensions.
    pub(crate) realm: Option<AuthRealm>,
    pub(crate) subject_header: HeaderName,
    pub(crate) impersonation_scope: Box<str>,
    pub(crate) subjects: Option<Arc<dyn SubjectResolver>>,
    pub(crate) workspace_header: HeaderName,
    pub(crate) workspaces: Option<Arc<dyn WorkspaceResolver>>,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    pub(crate) peer_ip: Option<Arc<PeerIpFn>>,
    pub(crate) proxies: TrustedProxies,
    /// Headers that carry credentials: marked sensitive on every request.
    pub(crate) sensitive: Box<[HeaderName]>,
}

impl Config {
    pub(crate) fn realm(&self) -> &str {
        self.realm.as_ref().map_or(DEFAULT_REALM, |r| &r.0)
    }

    pub(crate) fn render(&self, err: &AuthError) -> Response<Bytes> {
        self.format.render_in_realm(err, self.realm())
    }

    /// The request's client address: the [`ClientIp`] an outer layer left,
    /// else the peer resolved through the trusted proxies (then left in the
    /// request for the layers inside). `None` without a peer function.
    #[inline]
    pub(crate) fn client_ip<B>(&self, req: &mut Request<B>) -> Option<IpAddr> {
        if let Some(ip) = ClientIp::of(req.extensions()) {
            return Some(ip);
        }
        let peer = self.peer_ip.as_ref()?(req.headers(), req.extensions())?;
        let ip = self.proxies.client_ip(peer, req.headers());
        req.extensions_mut().insert(ClientIp(ip));
        Some(ip)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("sources", &self.sources)
            .field("required", &self.required)
            .field("format", &self.format)
            .field("realm", &self.realm())
            .field("subject_header", &self.subject_header)
            .field("impersonation_scope", &self.impersonation_scope)
            .field("impersonation", &self.subjects.is_some())
            .field("workspace_header", &self.workspace_header)
            .field("workspaces", &self.workspaces.is_some())
            .field("audit", &self.audit.is_some())
            .field("trusted_proxies", &self.proxies.nets())
            .finish_non_exhaustive()
    }
}
