//! [`AuthenticatedUpgrade`]: a WebSocket upgrade authenticated from the
//! subprotocol header, as browsers must, and [`AuthenticatedSocket`]: the
//! socket, which follows its credential after the handshake.
//!
//! A browser's `WebSocket` API cannot set `Authorization`; it can only list
//! subprotocols: `new WebSocket(url, ["Bearer", token])` sends
//! `Sec-WebSocket-Protocol: Bearer, <token>`, which the `AuthLayer` reads. The
//! browser then fails the handshake unless the server selects one of the
//! listed protocols, so this extractor selects `Bearer` (never the token).

use std::{fmt, future::Future, net::IpAddr};

use auth_core::{
    client_ip::ClientIp, watch::CredentialChange, watch::CredentialWatch, AuthContext, Verifier,
};
use axum::{
    extract::{
        ws::{
            close_code, rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket,
            WebSocketUpgrade,
        },
        FromRequestParts,
    },
    response::{IntoResponse, Response},
};
use http::request::Parts;

use crate::{Auth, AuthRejection};

/// Initial capacity of a socket's read buffer, and the most read from the
/// network at once: 4 KiB. An idle authenticated socket then costs a few
/// KiB of memory (axum's default buffer is 128 KiB); a larger message
/// grows the buffer up to [`DEFAULT_MAX_MESSAGE_SIZE`].
pub const DEFAULT_READ_BUFFER_SIZE: usize = 4 * 1024;

/// Largest message accepted: 64 KiB (axum's default is 64 MiB). API
/// sockets carry small, rate-limited messages; a larger one closes the
/// socket with code 1009 (message too big).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Largest frame accepted: 64 KiB, like a message (axum's default is
/// 16 MiB). Checked on the frame header, before the payload is read.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024;

/// An authenticated WebSocket upgrade: the [`AuthContext`] and axum's
/// [`WebSocketUpgrade`] with the client's `Bearer` subprotocol selected.
///
/// The upgrade comes with limits fit for API sockets:
/// [`DEFAULT_READ_BUFFER_SIZE`], [`DEFAULT_MAX_MESSAGE_SIZE`] and
/// [`DEFAULT_MAX_FRAME_SIZE`]; change them with
/// [`configure`](Self::configure). Messages are written out as they are
/// sent (no write buffering).
///
/// ```
/// use auth_axum::AuthenticatedUpgrade;
/// use auth_core::Verifier;
/// use axum::{extract::ws::Message, response::Response, routing::get, Extension, Router};
///
/// async fn chat(ws: AuthenticatedUpgrade, Extension(verifier): Extension<Verifier>) -> Response {
///     ws.on_upgrade(&verifier, |mut socket| async move {
///         let hello = format!("hello {}", socket.context().effective_user());
///         let _ = socket.send(Message::Text(hello.into())).await;
///         // `None` once the client leaves, or the key is revoked (closed with 1008).
///         while let Some(Ok(msg)) = socket.recv().await {
///             let _ = socket.send(msg).await;
///         }
///     })
/// }
///
/// # fn app(verifier: auth_core::Verifier) -> Router {
/// Router::new()
///     .route("/chat", get(chat))
///     .layer(Extension(verifier.clone()))
///     .layer(auth_tower::AuthLayer::new(verifier))
/// # }
/// ```
pub struct AuthenticatedUpgrade {
    ctx: AuthContext,
    client: Option<IpAddr>,
    upgrade: WebSocketUpgrade,
}

// Not derived: `WebSocketUpgrade`'s `Debug` lists the offered subprotocols,
// which include the token.
impl fmt::Debug for AuthenticatedUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticatedUpgrade")
            .field("ctx", &self.ctx)
            .field("client", &self.client)
            .field("selected_protocol", &self.upgrade.selected_protocol())
            .finish_non_exhaustive()
    }
}

impl AuthenticatedUpgrade {
    /// The request's context.
    pub fn context(&self) -> &AuthContext {
        &self.ctx
    }

    /// Adjusts the upgrade: buffer, message and frame sizes, e.g.
    /// `ws.configure(|u| u.max_message_size(1 << 20).max_frame_size(1 << 20))`
    /// for sockets that carry larger messages.
    pub fn configure(mut self, f: impl FnOnce(WebSocketUpgrade) -> WebSocketUpgrade) -> Self {
        self.upgrade = f(self.upgrade);
        self
    }

    /// Completes the handshake and runs `callback` with the socket, which
    /// follows its credential through `verifier` (the one behind the
    /// `AuthLayer`): see [`AuthenticatedSocket`].
    pub fn on_upgrade<C, Fut>(self, verifier: &Verifier, callback: C) -> Response
    where
        C: FnOnce(AuthenticatedSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (ctx, client, verifier) = (self.ctx, self.client, verifier.clone());
        self.upgrade.on_upgrade(move |socket| {
            let watch = verifier.watch_credential(&ctx, client);
            drop(verifier);
            callback(AuthenticatedSocket {
                socket,
                watch,
                closed: false,
            })
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUpgrade {
    type Rejection = WebSocketAuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Auth(ctx) = Auth::from_request_parts(parts, state)
            .await
            .map_err(WebSocketAuthRejection::Auth)?;
        let client = ClientIp::of(&parts.extensions);
        let offered = auth_tower::offered_bearer_protocol(&parts.headers).map(str::to_owned);
        let mut upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(WebSocketAuthRejection::Upgrade)?
            .read_buffer_size(DEFAULT_READ_BUFFER_SIZE)
            .write_buffer_size(0)
            .max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
            .max_frame_size(DEFAULT_MAX_FRAME_SIZE);
        if let Some(bearer) = offered {
            upgrade = upgrade.protocols([bearer]);
        }
        Ok(Self {
            ctx,
            client,
            upgrade,
        })
    }
}

/// An authenticated WebSocket that follows its credential: when the key is
/// revoked, expires or is disabled, when an edit takes the client's address
/// off the key's allowlist, or when a JWT's user secret is regenerated, the
/// socket is closed with code 1008 (policy violation); when an edit narrows
/// the key's scopes or changes its policy, [`context`](Self::context)
/// returns the new context. A message over the size limit closes it with
/// code 1009 (message too big).
///
/// Both are noticed while [`recv`](Self::recv) waits and before each
/// [`send`](Self::send). Closes are counted in the
/// `keygate_websocket_closed_total{cause}` counter (`credential_ended`,
/// `message_too_big`).
pub struct AuthenticatedSocket {
    socket: WebSocket,
    watch: CredentialWatch,
    closed: bool,
}

impl fmt::Debug for AuthenticatedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticatedSocket")
            .field("ctx", self.watch.context())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl AuthenticatedSocket {
    /// The connection's current context.
    pub fn context(&self) -> &AuthContext {
        self.watch.context()
    }

    /// The next message. `None` when the connection is over: the client
    /// left, or this socket closed it (credential ended: 1008; message too
    /// big: 1009).
    pub async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        if self.closed {
            return None;
        }
        loop {
            tokio::select! {
                msg = self.socket.recv() => {
                    return match msg {
                        Some(Err(e)) if too_big(&e) => {
                            self.close(close_code::SIZE, "message too big", "message_too_big").await;
                            None
                        }
                        other => other,
                    };
                }
                change = self.watch.changed() => {
                    if self.on_change(change).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Sends a message, unless the credential has ended (then the socket is
    /// closed with 1008 and the message is not sent).
    pub async fn send(&mut self, msg: Message) -> Result<(), axum::Error> {
        use futures_util::FutureExt;
        while !self.closed {
            match self.watch.changed().now_or_never() {
                Some(change) => {
                    self.on_change(change).await;
                }
                None => return self.socket.send(msg).await,
            }
        }
        Err(axum::Error::new(CredentialEnded))
    }

    /// The socket itself.
    pub fn get_ref(&self) -> &WebSocket {
        &self.socket
    }

    /// The socket itself, e.g. to send without the credential check.
    pub fn get_mut(&mut self) -> &mut WebSocket {
        &mut self.socket
    }

    /// The socket and the watch of its credential, for applications that
    /// split the socket and follow the watch themselves.
    pub fn into_inner(self) -> (WebSocket, CredentialWatch) {
        (self.socket, self.watch)
    }

    /// Whether the change closed the socket.
    async fn on_change(&mut self, change: CredentialChange) -> bool {
        match change {
            CredentialChange::Updated(_) => false,
            CredentialChange::Ended(reason) => {
                tracing::debug!(reason = reason.as_str(), "websocket credential ended");
                self.close(
                    close_code::POLICY,
                    "credential revoked or expired",
                    "credential_ended",
                )
                .await;
                true
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str, cause: &'static str) {
        self.closed = true;
        metrics::counter!("keygate_websocket_closed_total", "cause" => cause).increment(1);
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
    }
}

/// Whether a read failed on the size limits.
fn too_big(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A send refused because the socket's credential ended.
#[derive(Debug)]
struct CredentialEnded;

impl fmt::Display for CredentialEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the socket's credential ended; it was closed")
    }
}

impl std::error::Error for CredentialEnded {}

/// Why an [`AuthenticatedUpgrade`] was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum WebSocketAuthRejection {
    /// Not authenticated (401) or no `AuthLayer` in front (500).
    Auth(AuthRejection),
    /// Not a valid WebSocket upgrade request.
    Upgrade(WebSocketUpgradeRejection),
}

impl IntoResponse for WebSocketAuthRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(r) => r.into_response(),
            Self::Upgrade(r) => r.into_response(),
        }
    }
}

impl fmt::Display for WebSocketAuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth(r) => fmt::Display::fmt(r, f),
            Self::Upgrade(r) => fmt::Display::fmt(r, f),
        }
    }
}

impl std::error::Error for WebSocketAuthRejection {}
