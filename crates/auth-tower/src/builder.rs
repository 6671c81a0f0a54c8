//! Configuring an [`AuthLayer`].

use std::{net::IpAddr, sync::Arc};

use auth_core::{
    client_ip::TrustedProxies, response::ErrorFormat, response::DEFAULT_REALM, AuditSink, Verifier,
};
use http::{header, Extensions, HeaderMap, HeaderName};

use crate::{
    config::Config, AuthLayer, AuthRealm, CredentialSource, SubjectResolver, WorkspaceResolver,
    DEFAULT_IMPERSONATION_SCOPE, DEFAULT_SUBJECT_HEADER, DEFAULT_WORKSPACE_HEADER,
};

/// Builds an [`AuthLayer`]. Start with [`AuthLayer::builder`].
///
/// Defaults: credentials required; sources `Authorization: Bearer` then the
/// WebSocket subprotocol; flat error bodies in realm `api`; impersonation and
/// workspaces off until a resolver is set; no audit sink.
///
/// ```
/// # use std::sync::Arc;
/// use auth_core::{response::ErrorFormat, audit::MemoryAuditLog, MemoryKeyStore, Verifier};
/// use auth_tower::AuthLayer;
/// use http::HeaderName;
///
/// # let verifier = Verifier::builder(Arc::new(MemoryKeyStore::new())).build();
/// let audit = Arc::new(MemoryAuditLog::default());
/// let layer = AuthLayer::builder(verifier)
///     .api_key_header(HeaderName::from_static("x-api-key"))
///     .error_format(ErrorFormat::Envelope)
///     .realm("skills")
///     .audit(audit.clone())
///     .build();
/// ```
#[must_use]
pub struct AuthLayerBuilder {
    verifier: Verifier,
    sources: Vec<CredentialSource>,
    required: bool,
    format: ErrorFormat,
    realm: Arc<str>,
    subject_header: HeaderName,
    impersonation_scope: Box<str>,
    subjects: Option<Arc<dyn SubjectResolver>>,
    workspace_header: HeaderName,
    workspaces: Option<Arc<dyn WorkspaceResolver>>,
    audit: Option<Arc<dyn AuditSink>>,
    peer_ip: Option<Arc<crate::config::PeerIpFn>>,
    proxies: TrustedProxies,
}

impl std::fmt::Debug for AuthLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayerBuilder")
            .field("sources", &self.sources)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl AuthLayerBuilder {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            sources: vec![
                CredentialSource::Bearer,
                CredentialSource::WebSocketProtocol,
            ],
            required: true,
            format: ErrorFormat::default(),
            realm: DEFAULT_REALM.into(),
            subject_header: HeaderName::from_static(DEFAULT_SUBJECT_HEADER),
            impersonation_scope: DEFAULT_IMPERSONATION_SCOPE.into(),
            subjects: None,
            workspace_header: HeaderName::from_static(DEFAULT_WORKSPACE_HEADER),
            workspaces: None,
            audit: None,
            peer_ip: None,
            proxies: TrustedProxies::none(),
        }
    }

    /// Optional mode: a request with no credential passes with no
    /// [`AuthContext`](auth_core::AuthContext); a bad credential is still refused.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    /// Replaces the credential sources; they are tried in this order.
    pub fn sources(mut self, sources: impl IntoIterator<Item = CredentialSource>) -> Self {
        self.sources = sources.into_iter().collect();
        self
    }

    /// Also reads a bare token from this header (e.g. `x-api-key`), after the
    /// sources already set.
    pub fn api_key_header(mut self, name: HeaderName) -> Self {
        self.sources.push(CredentialSource::Header(name));
        self
    }

    /// Also reads the token from this query parameter, after the sources
    /// already set. Weaker: see [`CredentialSource::Query`].
    pub fn query_param(mut self, name: impl Into<Box<str>>) -> Self {
        self.sources.push(CredentialSource::Query(name.into()));
        self
    }

    /// How error responses look (default [`ErrorFormat::Flat`]).
    pub fn error_format(mut self, format: ErrorFormat) -> Self {
        self.format = format;
        self
    }

    /// The realm named in `WWW-Authenticate` (default `api`).
    pub fn realm(mut self, realm: impl Into<Arc<str>>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Enables impersonation: requests naming a subject user are checked by `resolver`.
    pub fn subject_resolver(mut self, resolver: impl SubjectResolver) -> Self {
        self.subjects = Some(Arc::new(resolver));
        self
    }

    /// The header naming the subject user (default `x-subject-user`).
    pub fn subject_header(mut self, name: HeaderName) -> Self {
        self.subject_header = name;
        self
    }

    /// The scope a key needs to act on behalf of another user (default `sudo`).
    pub fn impersonation_scope(mut self, scope: impl Into<Box<str>>) -> Self {
        self.impersonation_scope = scope.into();
        self
    }

    /// Enables workspace selection, checked by `resolver`.
    pub fn workspace_resolver(mut self, resolver: impl WorkspaceResolver) -> Self {
        self.workspaces = Some(Arc::new(resolver));
        self
    }

    /// The header naming the workspace (default `x-workspace-id`).
    pub fn workspace_header(mut self, name: HeaderName) -> Self {
        self.workspace_header = name;
        self
    }

    /// Sends an [`AuditEvent`](auth_core::AuditEvent) for every authentication
    /// attempt to `sink`. Without a sink no event is built.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// How to find the socket peer's address, e.g.
    /// `auth_axum::connect_info_ip` (axum's `ConnectInfo<SocketAddr>`).
    ///
    /// The client address is that peer, or, when the peer is one of the
    /// [`trusted_proxies`](Self::trusted_proxies), what they forwarded. The
    /// layer resolves it once per request and leaves it in the request
    /// extensions as [`ClientIp`](auth_core::client_ip::ClientIp) for the rate limiter
    /// and handlers; it is written into audit events, checked against keys'
    /// IP allowlists and recorded as the key's last-used address. An outer
    /// layer that already resolved it (the failed-authentication limiter)
    /// is taken at its word. Without a peer function (and no outer layer),
    /// there is no client address: audit events carry none, and keys with
    /// an IP allowlist are refused (fail closed).
    ///
    /// `f` should return the peer only: forwarding headers are believed
    /// through [`trusted_proxies`](Self::trusted_proxies), from the right.
    pub fn client_ip<F>(mut self, f: F) -> Self
    where
        F: Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.peer_ip = Some(Arc::new(f));
        self
    }

    /// Proxies whose forwarding header names the client (default: none, the
    /// socket peer is the client). Give the same value to the rate limiter
    /// and the failed-authentication limiter.
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The layer.
    pub fn build(self) -> AuthLayer {
        let mut sensitive = vec![header::AUTHORIZATION, header::SEC_WEBSOCKET_PROTOCOL];
        for source in &self.sources {
            if let CredentialSource::Header(name) = source {
                if !sensitive.contains(name) {
                    sensitive.push(name.clone());
                }
            }
        }
        let realm = (&*self.realm != DEFAULT_REALM).then_some(AuthRealm(self.realm));
        AuthLayer::from_config(Config {
            verifier: self.verifier,
            sources: self.sources.into(),
            required: self.required,
            format_entry: !matches!(self.format, ErrorFormat::Flat),
            format: self.format,
            realm,
            subject_header: self.subject_header,
            impersonation_scope: self.impersonation_scope,
            subjects: self.subjects,
            workspace_header: self.workspace_header,
            workspaces: self.workspaces,
            audit: self.audit,
            peer_ip: self.peer_ip,
            proxies: self.proxies,
            sensitive: sensitive.into(),
        })
    }
}
