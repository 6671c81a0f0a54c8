//! Forward auth: API keys in front of services in any language.
//!
//! A reverse proxy (nginx `auth_request`, Traefik `ForwardAuth`, Envoy's
//! HTTP `ext_authz`) asks an authorization service about each request
//! before passing it on: it sends a *sub-request* with the client's
//! headers, and lets the request through on a 2xx answer, copying headers
//! of that answer onto the request it forwards.
//!
//! [`ForwardAuthLayer`] turns such a sub-request back into the request it
//! stands for: its method and URI come from `X-Original-Method` /
//! `X-Original-URI` (nginx) or `X-Forwarded-Method` / `X-Forwarded-Uri`
//! (Traefik), else from the sub-request itself (Envoy keeps them), and the
//! client address from the proxy's `X-Forwarded-For` through
//! [`TrustedProxies`]. Those headers are believed only from the configured
//! proxies; any other peer is refused. The request then goes through the
//! application's own stack, the one its routes use: the `AuthLayer`, the
//! rate limiter, [`RequireScopeLayer`](crate::RequireScopeLayer) on routes
//! named by the *original* paths, and the audit log, which records the
//! original method and path. There is no second implementation of any of
//! them here.
//!
//! [`allow`] is the handler behind those layers: it answers 200, and the
//! layer writes the caller's identity into [`IdentityHeaders`] for the
//! proxy to pass on. A refusal (401, 403, 429, 503) is passed through as
//! the stack rendered it, with its JSON body and its `WWW-Authenticate`,
//! `Retry-After` and `RateLimit` headers; nginx drops the body of a
//! sub-request, so the layer can also copy it into a header
//! ([`ForwardAuthLayer::error_body_header`]).
//!
//! ```
//! use auth_axum::{
//!     forward_auth::{self, ForwardAuthLayer},
//!     RequireScopeLayer,
//! };
//! use auth_core::client_ip::TrustedProxies;
//! use axum::{routing::any, Router};
//!
//! # fn app(verifier: auth_core::Verifier) -> Router {
//! let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
//! // The original paths and their rules, as for an axum app.
//! let verdicts = Router::new()
//!     .route("/admin/{*rest}", any(forward_auth::allow).layer(RequireScopeLayer::one("admin")))
//!     .fallback(forward_auth::allow)
//!     .layer(auth_tower::AuthLayer::builder(verifier).trusted_proxies(proxies.clone()).build());
//! forward_auth::router(ForwardAuthLayer::new(proxies), verdicts)
//! # }
//! ```

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    str::FromStr,
    sync::Arc,
    task::{Context, Poll},
};

use auth_core::{
    client_ip::ClientIp, client_ip::TrustedProxies, response::ErrorFormat, AuthContext, AuthError,
    ErrorCode, RejectReason,
};
use axum::{
    body::Body,
    extract::OriginalUri,
    response::{IntoResponse, Response},
    Router,
};
use http::{
    uri::PathAndQuery, Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode,
    Uri,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::Auth;

/// nginx's conventional header for the original request's URI.
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// nginx's conventional header for the original request's method.
pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// Traefik's header for the original request's URI.
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// Traefik's header for the original request's method.
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");

/// Largest error body copied into [`ForwardAuthLayer::error_body_header`].
const MAX_ERROR_BODY: usize = 4096;

/// The headers of a 2xx answer that name the caller, for the proxy to copy
/// onto the request it forwards. A header is left out when the caller has
/// no such value (no key id for a JWT, no workspace).
///
/// The proxy must *set* these on the forwarded request (nginx
/// `proxy_set_header`, Traefik `authResponseHeaders`), replacing whatever
/// the client sent under the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    key_id: HeaderName,
    user: HeaderName,
    effective_user: HeaderName,
    scopes: HeaderName,
    workspace: HeaderName,
}

impl Default for IdentityHeaders {
    /// `x-auth-key-id`, `x-auth-user` (the key's owner),
    /// `x-auth-effective-user` (the subject when impersonating, else the
    /// owner), `x-auth-scopes` (space-separated) and `x-auth-workspace`.
    fn default() -> Self {
        Self {
            key_id: HeaderName::from_static("x-auth-key-id"),
            user: HeaderName::from_static("x-auth-user"),
            effective_user: HeaderName::from_static("x-auth-effective-user"),
            scopes: HeaderName::from_static("x-auth-scopes"),
            workspace: HeaderName::from_static("x-auth-workspace"),
        }
    }
}

impl IdentityHeaders {
    /// The default names.
    pub fn new() -> Self {
        Self::default()
    }

    /// The header holding the key id.
    pub fn key_id(mut self, name: HeaderName) -> Self {
        self.key_id = name;
        self
    }

    /// The header holding the key's owner.
    pub fn user(mut self, name: HeaderName) -> Self {
        self.user = name;
        self
    }

    /// The header holding the effective user (the subject when impersonating).
    pub fn effective_user(mut self, name: HeaderName) -> Self {
        self.effective_user = name;
        self
    }

    /// The header holding the effective scopes, space-separated.
    pub fn scopes(mut self, name: HeaderName) -> Self {
        self.scopes = name;
        self
    }

    /// The header holding the selected workspace.
    pub fn workspace(mut self, name: HeaderName) -> Self {
        self.workspace = name;
        self
    }

    fn names(&self) -> [&HeaderName; 5] {
        [
            &self.key_id,
            &self.user,
            &self.effective_user,
            &self.scopes,
            &self.workspace,
        ]
    }

    /// Writes `ctx` into `headers`, replacing anything under these names.
    /// `Err` if a value cannot be a header value (a control character in a
    /// user id): the caller refuses rather than forward a partial identity.
    fn write(&self, ctx: &AuthContext, headers: &mut HeaderMap) -> Result<(), ()> {
        for name in self.names() {
            headers.remove(name);
        }
        let value = |s: &str| HeaderValue::from_bytes(s.as_bytes()).map_err(|_| ());
        if let Some(id) = ctx.key_id() {
            headers.insert(self.key_id.clone(), value(&id.to_string())?);
        }
        headers.insert(self.user.clone(), value(ctx.actor().user_id())?);
        headers.insert(self.effective_user.clone(), value(ctx.effective_user())?);
        let scopes: Vec<&str> = ctx.scopes().iter().collect();
        headers.insert(self.scopes.clone(), value(&scopes.join(" "))?);
        if let Some(ws) = ctx.workspace() {
            headers.insert(self.workspace.clone(), value(ws)?);
        }
        Ok(())
    }
}

/// Finds the socket peer's address (default: axum's `ConnectInfo`).
type PeerIpFn = dyn Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync;

#[derive(Clone)]
struct Config {
    proxies: TrustedProxies,
    peer_ip: Arc<PeerIpFn>,
    identity: IdentityHeaders,
    error_body: Option<HeaderName>,
    format: ErrorFormat,
}

/// Answers a reverse proxy's authorization sub-requests with the stack it
/// wraps; see the [module documentation](self).
///
/// Defaults: the peer from axum's `ConnectInfo<SocketAddr>` (serve with
/// `into_make_service_with_connect_info`), [`IdentityHeaders::default`],
/// no error body header, flat error bodies for its own refusals.
#[derive(Clone)]
#[must_use]
pub struct ForwardAuthLayer {
    config: Arc<Config>,
}

impl fmt::Debug for ForwardAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardAuthLayer")
            .field("proxies", &self.config.proxies.nets())
            .field("identity", &self.config.identity)
            .field("error_body", &self.config.error_body)
            .finish_non_exhaustive()
    }
}

impl ForwardAuthLayer {
    /// Answers the proxies in `proxies` (the same [`TrustedProxies`] the
    /// `AuthLayer` and the rate limiter are given), and refuses every other
    /// peer with 403: only a proxy may say which request it is asking about.
    pub fn new(proxies: TrustedProxies) -> Self {
        Self {
            config: Arc::new(Config {
                proxies,
                peer_ip: Arc::new(crate::connect_info_ip),
                identity: IdentityHeaders::default(),
                error_body: None,
                format: ErrorFormat::default(),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// How to find the socket peer's address, for servers that do not
    /// record axum's `ConnectInfo`.
    pub fn peer_ip<F>(self, f: F) -> Self
    where
        F: Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.with(|c| c.peer_ip = Arc::new(f))
    }

    /// The names of the identity headers.
    pub fn identity_headers(self, headers: IdentityHeaders) -> Self {
        self.with(|c| c.identity = headers)
    }

    /// Also copies the JSON body of a refusal (up to 4 KiB) into this
    /// response header, for proxies that drop the sub-request's body
    /// (nginx) and can answer the client with a header's value instead.
    pub fn error_body_header(self, name: HeaderName) -> Self {
        self.with(|c| c.error_body = Some(name))
    }

    /// The format of this layer's own refusals (a peer that is not a
    /// trusted proxy, a malformed original URI); default flat. Refusals
    /// from the stack inside keep the `AuthLayer`'s format.
    pub fn error_format(self, format: ErrorFormat) -> Self {
        self.with(|c| c.format = format)
    }
}

impl<S> Layer<S> for ForwardAuthLayer {
    type Service = ForwardAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardAuthService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`ForwardAuthLayer`].
#[derive(Clone)]
pub struct ForwardAuthService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for ForwardAuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardAuthService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> ForwardAuthService<S> {
    auth_core::define_inner_service_accessors!();
}

/// The first of `names` present in `headers`, as text.
fn first<'h>(headers: &'h HeaderMap, names: &[HeaderName]) -> Option<&'h [u8]> {
    names
        .iter()
        .find_map(|n| headers.get(n))
        .map(HeaderValue::as_bytes)
}

impl Config {
    fn refuse(&self, code: ErrorCode, reason: RejectReason, message: &'static str) -> Response {
        let err = AuthError::new(code, reason).with_message(message);
        self.format.render(&err).map(Body::from)
    }

    /// Makes `req` the request the proxy asks about, or refuses it.
    fn restore<B>(&self, req: &mut Request<B>) -> Result<(), Box<Response>> {
        let peer =
            (self.peer_ip)(req.headers(), req.extensions()).filter(|ip| self.proxies.contains(*ip));
        let Some(peer) = peer else {
            tracing::warn!("forward auth sub-request from a peer that is not a trusted proxy");
            return Err(Box::new(self.refuse(
                ErrorCode::Forbidden,
                RejectReason::InsufficientAccess,
                "This endpoint answers only the configured reverse proxies",
            )));
        };
        let bad = || {
            Box::new(self.refuse(
                ErrorCode::BadRequest,
                RejectReason::InvalidRequest,
                "The proxy's original method or URI is malformed",
            ))
        };
        if let Some(m) = first(req.headers(), &[X_ORIGINAL_METHOD, X_FORWARDED_METHOD]) {
            *req.method_mut() = Method::from_bytes(m).map_err(|_| bad())?;
        }
        let uri = match first(req.headers(), &[X_ORIGINAL_URI, X_FORWARDED_URI]) {
            // Origin form only: a proxy sends the path and query it received.
            Some(u) if u.first() == Some(&b'/') => std::str::from_utf8(u)
                .ok()
                .and_then(|u| PathAndQuery::from_str(u).ok())
                .map(Uri::from)
                .ok_or_else(bad)?,
            Some(_) => return Err(bad()),
            None => req
                .uri()
                .path_and_query()
                .cloned()
                .map_or_else(|| Uri::from_static("/"), Uri::from),
        };
        *req.uri_mut() = uri.clone();
        // The rate limiter reads the path from here (before any `nest`).
        req.extensions_mut().insert(OriginalUri(uri));
        // The client, as every later component will name it.
        if ClientIp::of(req.extensions()).is_none() {
            let ip = self.proxies.client_ip(peer, req.headers());
            req.extensions_mut().insert(ClientIp(ip));
        }
        Ok(())
    }

    /// The answer for the proxy: identity headers on a 2xx, the refusal's
    /// body copied into a header if configured.
    async fn answer(&self, res: Response) -> Response {
        if res.status().is_success() {
            let (mut parts, body) = res.into_parts();
            return match parts.extensions.remove::<Allowed>() {
                Some(Allowed(ctx)) => match self.identity.write(&ctx, &mut parts.headers) {
                    Ok(()) => Response::from_parts(parts, body),
                    Err(()) => {
                        tracing::error!("forward auth: an identity is not a valid header value");
                        self.refuse(
                            ErrorCode::Internal,
                            RejectReason::Internal,
                            "The caller's identity cannot be passed on in headers",
                        )
                    }
                },
                // A route let through without `allow`: no identity to pass on,
                // and none the stack's own headers could pretend.
                None => {
                    for name in self.identity.names() {
                        parts.headers.remove(name);
                    }
                    Response::from_parts(parts, body)
                }
            };
        }
        let Some(name) = &self.error_body else {
            return res;
        };
        let (mut parts, body) = res.into_parts();
        match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
            Ok(bytes) => {
                if let Ok(value) = HeaderValue::from_bytes(bytes.trim_ascii()) {
                    parts.headers.insert(name.clone(), value);
                }
                Response::from_parts(parts, Body::from(bytes))
            }
            // Too large to copy: the status and headers still say it all.
            Err(_) => Response::from_parts(parts, Body::empty()),
        }
    }
}

/// The response future of [`ForwardAuthService`].
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'static>>,
}

impl ResponseFuture {
    fn new(future: impl Future<Output = Result<Response, Infallible>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for ForwardAuthService<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let config = self.config.clone();
        if let Err(refusal) = config.restore(&mut req) {
            return ResponseFuture::new(async move { Ok(*refusal) });
        }
        let fut = self.inner.call(req);
        ResponseFuture::new(async move {
            let res = fut.await?;
            Ok(config.answer(res).await)
        })
    }
}

/// The identity [`allow`] leaves for the layer.
#[derive(Clone)]
struct Allowed(AuthContext);

/// The handler behind the stack: 200, with the caller's identity for
/// [`ForwardAuthLayer`] to write into the [`IdentityHeaders`]. Refuses with
/// 401 when there is no authenticated caller (and 500 when no `AuthLayer`
/// runs in front), like [`Auth`].
pub async fn allow(Auth(ctx): Auth) -> Response {
    let mut res = StatusCode::OK.into_response();
    res.extensions_mut().insert(Allowed(ctx));
    res
}

/// A router answering sub-requests on every path with `verdicts` behind
/// `layer`. Serve it on its own address, or mount it with `nest_service`
/// (e.g. under Envoy's `path_prefix`). Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the peer is known.
pub fn router(layer: ForwardAuthLayer, verdicts: Router) -> Router {
    Router::new().fallback_service(layer.layer(verdicts))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use auth_core::{Principal, ScopeSet};
    use axum::extract::ConnectInfo;

    use super::*;

    #[test]
    fn accessors_reach_the_inner_service() {
        /// Stands in for the wrapped service: the accessors only move it.
        #[derive(Debug, PartialEq)]
        struct Inner(u32);

        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let mut service = ForwardAuthLayer::new(proxies).layer(Inner(1));
        assert_eq!(service.get_ref(), &Inner(1));
        service.get_mut().0 = 2;
        assert_eq!(service.into_inner(), Inner(2));
    }

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get("/auth").body(()).unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let addr: SocketAddr = format!("{peer}:4000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    }

    fn config() -> Arc<Config> {
        ForwardAuthLayer::new(TrustedProxies::new(["10.0.0.0/8"]).unwrap()).config
    }

    #[test]
    fn the_original_request_comes_only_from_a_trusted_proxy() {
        let c = config();
        let mut req = request(
            "10.0.0.2",
            &[
                ("x-original-uri", "/admin/users?page=2"),
                ("x-original-method", "DELETE"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        );
        c.restore(&mut req).unwrap();
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(req.uri(), "/admin/users?page=2");
        assert_eq!(
            req.extensions().get::<OriginalUri>().unwrap().0,
            "/admin/users?page=2"
        );
        assert_eq!(
            auth_core::client_ip::ClientIp::of(req.extensions()),
            Some("203.0.113.9".parse().unwrap())
        );

        // Anyone else is refused, whatever they claim.
        let mut direct = request("198.51.100.7", &[("x-original-uri", "/public")]);
        assert_eq!(c.restore(&mut direct).unwrap_err().status(), 403);
        // Traefik's names; absolute or malformed URIs are refused.
        let mut traefik = request(
            "10.0.0.2",
            &[("x-forwarded-uri", "/t"), ("x-forwarded-method", "PUT")],
        );
        c.restore(&mut traefik).unwrap();
        assert_eq!(
            (traefik.method(), traefik.uri().path()),
            (&Method::PUT, "/t")
        );
        for bad in ["http://evil.example/x", "relative", "/a b"] {
            let mut req = request("10.0.0.2", &[("x-original-uri", bad)]);
            assert_eq!(c.restore(&mut req).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[tokio::test]
    async fn identity_headers_replace_what_the_stack_said() {
        let c = config();
        let ctx = AuthContext::for_user(
            auth_core::CredentialKind::Jwt,
            Principal::user("ana"),
            ScopeSet::parse(["read", "write"]).unwrap(),
        )
        .with_workspace("ws1");
        let mut res = StatusCode::OK.into_response();
        res.headers_mut()
            .insert("x-auth-user", HeaderValue::from_static("mallory"));
        res.extensions_mut().insert(Allowed(ctx));
        let res = c.answer(res).await;
        let h = res.headers();
        assert_eq!(h["x-auth-user"], "ana");
        assert_eq!(h["x-auth-effective-user"], "ana");
        assert_eq!(h["x-auth-scopes"], "read write");
        assert_eq!(h["x-auth-workspace"], "ws1");
        assert!(h.get("x-auth-key-id").is_none(), "no key id behind a JWT");

        // Not through `allow`: no identity at all.
        let mut res = StatusCode::NO_CONTENT.into_response();
        res.headers_mut()
            .insert("x-auth-user", HeaderValue::from_static("mallory"));
        assert!(c.answer(res).await.headers().get("x-auth-user").is_none());
    }
}
