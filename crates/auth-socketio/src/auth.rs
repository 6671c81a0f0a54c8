//! [`SocketIoAuth`]: authenticating a Socket.IO connect with the HTTP
//! routes' [`AuthLayer`], as a socketioxide connect middleware.

use std::{
    convert::Infallible,
    fmt,
    future::{ready, Ready},
    sync::Arc,
    task::{Context, Poll},
};

use std::net::IpAddr;

use auth_core::{
    client_ip::ClientIp, watch::CredentialChange, watch::CredentialWatch, AuthContext, AuthError,
    RejectReason,
};
use auth_ratelimit::{FailedAuthLimiter, Quota, RateLimiter};
use auth_tower::{AuthLayer, RenderAuthError};
use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Request, Response, StatusCode};
use socketioxide::{
    adapter::Adapter,
    extract::TryData,
    handler::{ConnectMiddleware, FromConnectParts},
    socket::Socket,
};
use socketioxide_core::Value;
use tower_layer::Layer;
use tower_service::Service;

use super::throttle::EventLimiter;

/// Authenticates Socket.IO connects with the same [`AuthLayer`] as the HTTP
/// routes, and applies connect and event limits.
///
/// A Socket.IO client connects in two steps: an HTTP handshake (engine.io,
/// possibly a WebSocket upgrade), then a `CONNECT` packet carrying the
/// client's `auth` payload, e.g. `io(url, { auth: { api_token } })`.
/// The token usually travels in that payload, out of reach of HTTP
/// layers, so this is a socketioxide connect middleware
/// (`handler.with(auth)`), run at the `CONNECT`:
///
/// 1. **connect limits** ([`SocketIoAuth::connect_limits`]): the limiter
///    checks the handshake request as a WebSocket connect, whatever the
///    transport, so [`Rule::websocket_connects`](auth_ratelimit::Rule::websocket_connects)
///    counts every Socket.IO connect (e.g. 10 per minute per IP). This
///    comes before any token is looked at.
/// 2. **the token**: `auth.api_token` when the payload has one (presented
///    to the layer as `Authorization: Bearer`, so the layer must read that
///    source, as it does by default), else the handshake's own headers:
///    `Authorization: Bearer` or `Sec-WebSocket-Protocol: Bearer, <token>`.
/// 3. **the layer decides** on the handshake request carrying that token:
///    the same verifier (API keys and JWTs alike), impersonation and
///    workspaces from the handshake's headers, the same audit events and
///    error format.
///
/// On success the [`AuthContext`] goes into the socket's extensions, where
/// [`SocketAuth`](super::SocketAuth) finds it, with the connection's event
/// budget for [`Throttle`](super::Throttle).
///
/// The socket then follows its credential through the layer's verifier
/// ([`Verifier::watch_credential`](auth_core::Verifier::watch_credential)):
/// when the key is revoked, expires or is disabled, when an edit takes the
/// client's address off the key's allowlist, or when a JWT's user secret
/// is regenerated, the socket is sent a [`CREDENTIAL_ENDED_EVENT`] event
/// (`{"error":"unauthorized","message":…,"reason":…}`) and disconnected;
/// when an edit narrows the key's scopes or changes its policy, handlers
/// get the new context from [`SocketAuth`](super::SocketAuth). A refusal refuses the connection: the client's
/// `connect_error` carries, as its `message`, the error body in the layer's
/// format, e.g. `{"error":"unauthorized","message":"Invalid or missing API token"}`,
/// or the limiter's `{"error":"rate_limited",…}`.
///
/// Put [`AuthLayer::sensitive_headers`] outside the Socket.IO layer, so that
/// socketioxide's `Debug` output of the handshake hides credential headers.
///
/// ```
/// use auth_socketio::{
///     socketioxide::{extract::{Data, SocketRef}, handler::ConnectHandler, SocketIo},
///     SocketAuth, SocketIoAuth, Throttle,
/// };
/// use auth_ratelimit::{Quota, RateLimiter, Rule};
/// use auth_tower::AuthLayer;
/// use axum::Router;
///
/// fn app(auth: AuthLayer, api: Router) -> Router {
///     let connects = RateLimiter::builder()
///         .rule(Rule::websocket_connects("ws-connect", Quota::per_minute(10)))
///         .build()
///         .unwrap();
///     let sio_auth = SocketIoAuth::new(auth.clone())
///         .connect_limits(connects)
///         .event_quota(Quota::per_second(1));
///     let (layer, io) = SocketIo::builder().req_path("/ext-socket.io").build_layer();
///     let on_connect = |socket: SocketRef, SocketAuth(ctx): SocketAuth| async move {
///         tracing::info!(user = ctx.effective_user(), "connected");
///         socket.on("echo", |socket: SocketRef, _: Throttle, Data(text): Data<String>| async move {
///             let _ = socket.emit("echo", &text);
///         });
///     };
///     io.ns("/", on_connect.with(sio_auth));
///     api.layer(auth.clone())
///         .layer(layer)
///         .layer(auth.sensitive_headers())
/// }
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct SocketIoAuth {
    layer: AuthLayer,
    connects: Option<RateLimiter>,
    failures: Option<FailedAuthLimiter>,
    events: Option<Quota>,
}

impl fmt::Debug for SocketIoAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketIoAuth")
            .field("layer", &self.layer)
            .field("connect_limits", &self.connects.is_some())
            .field("failed_auth_limits", &self.failures.is_some())
            .field("event_quota", &self.events)
            .finish()
    }
}

impl SocketIoAuth {
    /// Authenticates with `layer`; no connect or event limits.
    pub fn new(layer: AuthLayer) -> Self {
        Self {
            layer,
            connects: None,
            failures: None,
            events: None,
        }
    }

    /// Counts refused connects (401) per client address with `limiter`, the
    /// one whose layer guards the HTTP routes, and refuses every connect from
    /// an address past its limit with 429 before its token is looked at.
    pub fn failed_auth_limits(mut self, limiter: FailedAuthLimiter) -> Self {
        self.failures = Some(limiter);
        self
    }

    /// Checks every connect with `limiter` first (see the type's docs).
    pub fn connect_limits(mut self, limiter: RateLimiter) -> Self {
        self.connects = Some(limiter);
        self
    }

    /// Events per connection: each event whose handler takes
    /// [`Throttle`](super::Throttle) takes a token from this bucket.
    pub fn event_quota(mut self, quota: Quota) -> Self {
        self.events = Some(quota);
        self
    }

    /// The connection's context, or the refusal to send as `connect_error`.
    ///
    /// `handshake` is the engine.io handshake request
    /// ([`Socket::req_parts`]); `api_token` the `auth` payload's token, if any.
    pub async fn authenticate(
        &self,
        handshake: &Parts,
        api_token: Option<&str>,
    ) -> Result<AuthContext, ConnectRefusal> {
        self.admit(handshake, api_token).await.map(|(ctx, _)| ctx)
    }

    /// [`SocketIoAuth::authenticate`], with the client address the layer
    /// admitted the connection from.
    async fn admit(
        &self,
        handshake: &Parts,
        api_token: Option<&str>,
    ) -> Result<(AuthContext, Option<IpAddr>), ConnectRefusal> {
        let mut req = request(handshake, api_token);
        let failures = self
            .failures
            .as_ref()
            .and_then(|f| Some((f, f.client_ip(&req)?)));
        if let Some((_, ip)) = failures {
            // Resolved once: the layer's audit event and allowlist check use it.
            req.extensions_mut().insert(ClientIp(ip));
        }
        if let Some((limiter, ip)) = failures {
            limiter
                .check(ip)
                .await
                .map_err(ConnectRefusal::from_response)?;
        }
        if let Some(limiter) = &self.connects {
            limiter
                .check(&as_websocket_connect(&req))
                .await
                .map_err(ConnectRefusal::from_response)?;
        }
        let mut service = self.layer.layer(Capture);
        // `Capture` is always ready, and so is the layer in front of it.
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap_or_else(|never| match never {});
        let res = service
            .call(req)
            .await
            .unwrap_or_else(|never| match never {});
        match res.extensions().get::<AuthContext>() {
            Some(ctx) => Ok((ctx.clone(), ClientIp::of(res.extensions()))),
            None => {
                if let Some((limiter, ip)) = failures {
                    if res.status() == StatusCode::UNAUTHORIZED {
                        limiter.record_failure(ip).await;
                    }
                }
                Err(ConnectRefusal::from_response(res))
            }
        }
    }

    /// The middleware's work on one socket.
    async fn connect<A: Adapter>(
        &self,
        socket: Arc<Socket<A>>,
        payload: &Option<Value>,
    ) -> Result<(), ConnectRefusal> {
        let token = match payload {
            None => None,
            Some(_) => match TryData::<serde_json::Value>::from_connect_parts(&socket, payload) {
                Ok(TryData(Ok(payload))) => payload_token(payload),
                _ => Some(String::new()),
            },
        };
        let (ctx, client) = self.admit(socket.req_parts(), token.as_deref()).await?;
        if let Some(quota) = self.events {
            socket.extensions.insert(EventLimiter::new(quota));
        }
        let watch = self.layer.verifier().watch_credential(&ctx, client);
        socket.extensions.insert(ctx);
        follow_credential(&socket, watch);
        Ok(())
    }
}

/// Used as `handler.with(socket_io_auth)` on a namespace.
impl<A: Adapter> ConnectMiddleware<A, SocketIoAuth> for SocketIoAuth {
    async fn call<'a>(
        &'a self,
        socket: Arc<Socket<A>>,
        auth: &'a Option<Value>,
    ) -> Result<(), Box<dyn fmt::Display + Send>> {
        self.connect(socket, auth)
            .await
            .map_err(|r| Box::new(r) as Box<dyn fmt::Display + Send>)
    }
}

/// The event a socket is sent before it is disconnected because its
/// credential ended.
pub const CREDENTIAL_ENDED_EVENT: &str = "revoked";

/// Applies the credential's changes to the socket until it is gone: the
/// task holds the socket weakly, and the socket's extensions hold what
/// aborts the task, so each ends the other.
fn follow_credential<A: Adapter>(socket: &Arc<Socket<A>>, mut watch: CredentialWatch) {
    let weak = Arc::downgrade(socket);
    let task = tokio::spawn(async move {
        loop {
            let change = watch.changed().await;
            let Some(socket) = weak.upgrade() else {
                return;
            };
            match change {
                CredentialChange::Updated(ctx) => {
                    socket.extensions.insert(ctx);
                }
                CredentialChange::Ended(reason) => {
                    tracing::debug!(reason = reason.as_str(), "socket.io credential ended");
                    let body = serde_json::json!({
                        "error": "unauthorized",
                        "message": "Token revoked or expired",
                        "reason": reason.as_str(),
                    });
                    let _ = socket.emit(CREDENTIAL_ENDED_EVENT, &body);
                    let _ = socket.disconnect();
                    return;
                }
            }
        }
    });
    socket
        .extensions
        .insert(Following(Arc::new(AbortOnDrop(task.abort_handle()))));
}

/// Kept in a socket's extensions: its credential's task, aborted with it.
#[derive(Clone)]
struct Following(#[allow(dead_code)] Arc<AbortOnDrop>);

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The token of an `auth` payload `{ "api_token": "<token>" }` (other
/// members are ignored). A payload of another shape, or a token that is not
/// a string, gives an empty token: the layer refuses it as malformed.
fn payload_token(payload: serde_json::Value) -> Option<String> {
    use serde_json::Value as Json;
    match payload {
        Json::Null => None,
        Json::Object(mut members) => match members.remove("api_token") {
            None | Some(Json::Null) => None,
            Some(Json::String(token)) => Some(token),
            Some(_) => Some(String::new()),
        },
        _ => Some(String::new()),
    }
}

/// The handshake request for the layer, with the payload's token, if any,
/// as the only credential.
fn request(handshake: &Parts, api_token: Option<&str>) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = handshake.method.clone();
    *req.uri_mut() = handshake.uri.clone();
    *req.version_mut() = handshake.version;
    *req.headers_mut() = handshake.headers.clone();
    *req.extensions_mut() = handshake.extensions.clone();
    if let Some(token) = api_token {
        let headers = req.headers_mut();
        headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        // A token no header can hold (control characters, …) becomes a bare
        // `Bearer`, which the layer refuses as malformed, in its own format.
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .unwrap_or(HeaderValue::from_static("Bearer"));
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    req
}

/// The same request as a WebSocket upgrade, for the connect limiter.
fn as_websocket_connect(req: &Request<()>) -> Request<()> {
    let mut limited = Request::new(());
    *limited.method_mut() = req.method().clone();
    *limited.uri_mut() = req.uri().clone();
    *limited.headers_mut() = req.headers().clone();
    *limited.extensions_mut() = req.extensions().clone();
    limited
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    limited
}

/// The service behind the layer: answers with the context it was given.
#[derive(Clone, Copy)]
struct Capture;

impl Service<Request<()>> for Capture {
    type Response = Response<Bytes>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Bytes>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let res = match req.extensions().get::<AuthContext>() {
            Some(ctx) => {
                let mut res = Response::new(Bytes::new());
                res.extensions_mut().insert(ctx.clone());
                if let Some(ip) = ClientIp::of(req.extensions()) {
                    res.extensions_mut().insert(ClientIp(ip));
                }
                res
            }
            // A layer in optional mode let a connect without a credential
            // through: a socket is never anonymous.
            None => req.render_auth_error(&AuthError::unauthorized(RejectReason::Missing)),
        };
        ready(Ok(res))
    }
}

/// A refused connect: the status the HTTP routes would have answered, and
/// the error body, sent to the client as the `connect_error` message.
///
/// ```
/// use auth_socketio::ConnectRefusal;
/// use auth_core::{AuthError, response::ErrorFormat, RejectReason};
///
/// let res = ErrorFormat::Flat.render(&AuthError::unauthorized(RejectReason::Missing));
/// let refusal = ConnectRefusal::from_response(res);
/// assert_eq!(refusal.status(), 401);
/// assert_eq!(refusal.to_string(), r#"{"error":"unauthorized","message":"Invalid or missing API token"}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRefusal {
    status: StatusCode,
    message: String,
}

impl ConnectRefusal {
    /// The refusal an error response stands for (its body must be UTF-8 to
    /// be sent; an error body never holds the token).
    pub fn from_response(res: Response<Bytes>) -> Self {
        let status = res.status();
        let message = String::from_utf8(res.into_body().to_vec()).unwrap_or_else(|_| {
            status
                .canonical_reason()
                .unwrap_or("Connection refused")
                .to_owned()
        });
        Self { status, message }
    }

    /// The HTTP status of the same refusal (401, 403, 429, 503, …).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error body: the `connect_error` message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConnectRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectRefusal {}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use async_trait::async_trait;
    use auth_core::{
        audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, response::ErrorFormat,
        KeyIssuer, Keys, MemoryKeyStore, NewKey, Principal, ScopeSet, SecretHasher, TokenPrefix,
        Verifier,
    };
    use auth_ratelimit::Rule;
    use auth_tower::{ResolveError, Subject, SubjectDecision, SubjectResolver};
    use axum::extract::ConnectInfo;

    use super::*;

    struct Admins;

    #[async_trait]
    impl SubjectResolver for Admins {
        async fn resolve(
            &self,
            actor: &AuthContext,
            user_id: &str,
        ) -> Result<SubjectDecision, ResolveError> {
            Ok(if actor.actor().user_id() == "admin" {
                SubjectDecision::Allow(Subject::new(
                    Principal::user(user_id),
                    ScopeSet::parse(["read"]).unwrap(),
                ))
            } else {
                SubjectDecision::Deny
            })
        }
    }

    struct Fixture {
        issuer: KeyIssuer,
        verifier: Verifier,
        audit: Arc<MemoryAuditLog>,
    }

    impl Fixture {
        fn new() -> Self {
            let keys = Keys::builder(
                Arc::new(MemoryKeyStore::new()),
                TokenPrefix::new("st_").unwrap(),
            )
            .hasher(SecretHasher::for_tests())
            .build();
            Self {
                issuer: keys.issuer,
                verifier: keys.verifier,
                audit: Arc::new(MemoryAuditLog::default()),
            }
        }

        fn auth(&self) -> SocketIoAuth {
            SocketIoAuth::new(
                AuthLayer::builder(self.verifier.clone())
                    .subject_resolver(Admins)
                    .audit(self.audit.clone())
                    .build(),
            )
        }

        async fn token(&self, user: &str, scopes: &[&str]) -> String {
            let key = self
                .issuer
                .issue(NewKey::new(
                    Principal::user(user),
                    "socket",
                    ScopeSet::parse(scopes).unwrap(),
                ))
                .await
                .unwrap();
            key.token.expose_secret().to_owned()
        }
    }

    /// An engine.io WebSocket handshake from `ip`, with extra headers.
    fn handshake(ip: [u8; 4], headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::get("/ext-socket.io/?EIO=4&transport=websocket");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        parts
    }

    const PEER: [u8; 4] = [203, 0, 113, 7];

    fn error_code(refusal: &ConnectRefusal) -> String {
        let body: serde_json::Value = serde_json::from_str(refusal.message()).unwrap();
        body["error"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn payload_token_authenticates_and_wins_over_headers() {
        let f = Fixture::new();
        let alice = f.token("alice", &["read"]).await;
        let bob = f.token("bob", &["read"]).await;
        let ctx = f
            .auth()
            .authenticate(&handshake(PEER, &[]), Some(&alice))
            .await
            .unwrap();
        assert_eq!(ctx.effective_user(), "alice");
        let bearer_bob = format!("Bearer {bob}");
        let ctx = f
            .auth()
            .authenticate(
                &handshake(PEER, &[("authorization", &bearer_bob)]),
                Some(&alice),
            )
            .await
            .unwrap();
        assert_eq!(ctx.effective_user(), "alice", "the payload's token is used");
        let query = AuditQuery::default().limit(10);
        let events = f.audit.query(&query).await.unwrap().events;
        assert_eq!(events.len(), 2, "each connect is audited like a request");
        for e in events {
            assert_eq!(e.actor.as_deref(), Some("alice"));
            assert_eq!(e.path, "/ext-socket.io/");
        }
    }

    #[tokio::test]
    async fn header_tokens_authenticate_without_a_payload() {
        let f = Fixture::new();
        let alice = f.token("alice", &["read"]).await;
        let bearer = format!("Bearer {alice}");
        let ctx = f
            .auth()
            .authenticate(&handshake(PEER, &[("authorization", &bearer)]), None)
            .await
            .unwrap();
        assert_eq!(ctx.effective_user(), "alice");
        let protocol = format!("Bearer, {alice}");
        let upgrade = [
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-protocol", protocol.as_str()),
        ];
        let ctx = f
            .auth()
            .authenticate(&handshake(PEER, &upgrade), None)
            .await
            .unwrap();
        assert_eq!(ctx.effective_user(), "alice");
    }

    #[tokio::test]
    async fn bad_missing_and_revoked_tokens_are_refused_in_the_layer_format() {
        let f = Fixture::new();
        let auth = f.auth();
        let none = auth.authenticate(&handshake(PEER, &[]), None).await;
        let none = none.unwrap_err();
        assert_eq!(none.status(), 401);
        assert_eq!(
            none.message(),
            r#"{"error":"unauthorized","message":"Invalid or missing API token"}"#
        );
        for bad in ["st_nope", "", "line\nbreak", "ünïcode"] {
            let r = auth.authenticate(&handshake(PEER, &[]), Some(bad)).await;
            let r = r.unwrap_err();
            assert_eq!(
                (r.status().as_u16(), error_code(&r)),
                (401, "unauthorized".into()),
                "{bad:?}"
            );
            assert!(!r.message().contains(bad) || bad.is_empty());
        }
        let key = f
            .issuer
            .issue(NewKey::new(
                Principal::user("carol"),
                "k",
                ScopeSet::empty(),
            ))
            .await
            .unwrap();
        f.issuer.revoke(key.record.id).await.unwrap();
        let r = auth
            .authenticate(&handshake(PEER, &[]), Some(key.token.expose_secret()))
            .await
            .unwrap_err();
        assert_eq!(r.status(), 401);

        let envelope = SocketIoAuth::new(
            AuthLayer::builder(f.verifier.clone())
                .error_format(ErrorFormat::Envelope)
                .build(),
        );
        let r = envelope
            .authenticate(&handshake(PEER, &[]), Some("st_nope"))
            .await
            .unwrap_err();
        assert!(r
            .message()
            .starts_with(r#"{"success":false,"error":{"code":"UNAUTHORIZED""#));
    }

    #[tokio::test]
    async fn an_optional_layer_still_refuses_anonymous_sockets() {
        let f = Fixture::new();
        let auth = SocketIoAuth::new(AuthLayer::builder(f.verifier.clone()).optional().build());
        let r = auth
            .authenticate(&handshake(PEER, &[]), None)
            .await
            .unwrap_err();
        assert_eq!(
            (r.status().as_u16(), error_code(&r)),
            (401, "unauthorized".into())
        );
    }

    #[tokio::test]
    async fn impersonation_comes_from_the_handshake_headers() {
        let f = Fixture::new();
        let admin = f.token("admin", &["read", "sudo"]).await;
        let alice = f.token("alice", &["read", "sudo"]).await;
        let as_bob = [("x-subject-user", "bob")];
        let ctx = f
            .auth()
            .authenticate(&handshake(PEER, &as_bob), Some(&admin))
            .await
            .unwrap();
        assert_eq!(
            (ctx.actor().user_id(), ctx.effective_user()),
            ("admin", "bob")
        );
        let r = f
            .auth()
            .authenticate(&handshake(PEER, &as_bob), Some(&alice))
            .await
            .unwrap_err();
        assert_eq!(
            (r.status().as_u16(), error_code(&r)),
            (403, "forbidden".into())
        );
    }

    #[tokio::test]
    async fn connects_are_limited_per_ip_before_the_token_is_checked() {
        let f = Fixture::new();
        let alice = f.token("alice", &["read"]).await;
        let limiter = RateLimiter::builder()
            .rule(Rule::websocket_connects("ws-connect", Quota::per_minute(2)))
            .build()
            .unwrap();
        let auth = f.auth().connect_limits(limiter);
        // A polling handshake (no upgrade) counts as a WebSocket connect too.
        let polling = || {
            let mut p = handshake(PEER, &[]);
            p.uri = "/ext-socket.io/?EIO=4&transport=polling".parse().unwrap();
            p
        };
        auth.authenticate(&polling(), Some(&alice)).await.unwrap();
        auth.authenticate(&handshake(PEER, &[]), Some("st_bad"))
            .await
            .unwrap_err();
        let r = auth
            .authenticate(&polling(), Some(&alice))
            .await
            .unwrap_err();
        assert_eq!(
            (r.status().as_u16(), error_code(&r)),
            (429, "rate_limited".into())
        );
        // Another address has its own budget.
        auth.authenticate(&handshake([198, 51, 100, 1], &[]), Some(&alice))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn refused_connects_count_as_failed_authentication_per_address() {
        let f = Fixture::new();
        let alice = f.token("alice", &["read"]).await;
        let failures = FailedAuthLimiter::builder(Quota::per_minute(3))
            .error_format(ErrorFormat::Envelope)
            .build();
        let auth = f.auth().failed_auth_limits(failures);
        // A valid connect costs nothing.
        auth.authenticate(&handshake(PEER, &[]), Some(&alice))
            .await
            .unwrap();
        for _ in 0..3 {
            let r = auth
                .authenticate(&handshake(PEER, &[]), Some("st_guess"))
                .await
                .unwrap_err();
            assert_eq!(r.status(), 401);
        }
        // Past the limit even a valid token is refused from that address,
        // before the verifier is asked, in the limiter's format.
        let events = f
            .audit
            .query(&AuditQuery::default())
            .await
            .unwrap()
            .events
            .len();
        let r = auth
            .authenticate(&handshake(PEER, &[]), Some(&alice))
            .await
            .unwrap_err();
        assert_eq!(r.status(), 429);
        assert!(
            r.message()
                .contains(r#"{"success":false,"error":{"code":"RATE_LIMITED""#),
            "{}",
            r.message()
        );
        let after = f
            .audit
            .query(&AuditQuery::default())
            .await
            .unwrap()
            .events
            .len();
        assert_eq!(
            after, events,
            "a refused address never reaches the auth layer"
        );
        // Other addresses are unaffected.
        auth.authenticate(&handshake([198, 51, 100, 2], &[]), Some(&alice))
            .await
            .unwrap();
        let r = auth
            .authenticate(&handshake([198, 51, 100, 2], &[]), Some("st_guess"))
            .await
            .unwrap_err();
        assert_eq!(r.status(), 401);
    }

    #[test]
    fn payload_shapes() {
        use serde_json::json;
        assert_eq!(payload_token(json!({"api_token": "t"})), Some("t".into()));
        assert_eq!(
            payload_token(json!({"api_token": "t", "x": 1})),
            Some("t".into())
        );
        assert_eq!(payload_token(json!({})), None);
        assert_eq!(payload_token(json!({"api_token": null})), None);
        assert_eq!(payload_token(json!(null)), None);
        assert_eq!(payload_token(json!({"api_token": 5})), Some(String::new()));
        assert_eq!(payload_token(json!("t")), Some(String::new()));
        assert_eq!(payload_token(json!([1])), Some(String::new()));
    }

    #[test]
    fn refusal_of_a_non_utf8_body_keeps_the_status() {
        let mut res = Response::new(Bytes::from_static(b"\xff"));
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let r = ConnectRefusal::from_response(res);
        assert_eq!(r.status(), 503);
        assert_eq!(r.to_string(), "Service Unavailable");
    }

    #[tokio::test]
    async fn connects_are_checked_against_the_keys_ip_allowlist() {
        let f = Fixture::new();
        let policy = auth_core::policy::KeyPolicy::default()
            .ip_allowlist(vec!["203.0.113.0/24".parse().unwrap()]);
        let token = f
            .issuer
            .issue(
                NewKey::new(Principal::user("alice"), "socket", ScopeSet::empty()).policy(policy),
            )
            .await
            .unwrap()
            .token
            .expose_secret()
            .to_owned();
        let proxies = auth_ratelimit::TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let direct = SocketIoAuth::new(
            AuthLayer::builder(f.verifier.clone())
                // What `auth_axum::connect_info_ip` does.
                .client_ip(|_, ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.ip()))
                .trusted_proxies(proxies.clone())
                .build(),
        );
        direct
            .authenticate(&handshake(PEER, &[]), Some(&token))
            .await
            .unwrap();
        let r = direct
            .authenticate(
                &handshake([198, 51, 100, 1], &[("x-forwarded-for", "203.0.113.7")]),
                Some(&token),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (r.status().as_u16(), error_code(&r).as_str()),
            (403, "ip_not_allowed")
        );

        // The failed-authentication limiter resolves the address first; the
        // layer (no peer function of its own) checks the same client.
        let behind_proxy = SocketIoAuth::new(AuthLayer::builder(f.verifier.clone()).build())
            .failed_auth_limits(
                FailedAuthLimiter::builder(Quota::per_minute(3))
                    .trusted_proxies(proxies)
                    .build(),
            );
        behind_proxy
            .authenticate(
                &handshake([10, 0, 0, 1], &[("x-forwarded-for", "203.0.113.7")]),
                Some(&token),
            )
            .await
            .unwrap();
        let r = behind_proxy
            .authenticate(
                &handshake(
                    [10, 0, 0, 1],
                    &[("x-forwarded-for", "203.0.113.7, 198.51.100.1")],
                ),
                Some(&token),
            )
            .await
            .unwrap_err();
        assert_eq!(error_code(&r), "ip_not_allowed");
    }
}
