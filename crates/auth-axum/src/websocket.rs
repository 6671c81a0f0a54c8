//! [`AuthenticatedUpgrade`]: a WebSocket upgrade authenticated from the
//! subprotocol header, as browsers must.
//!
//! A browser's `WebSocket` API cannot set `Authorization`; it can only list
//! subprotocols: `new WebSocket(url, ["Bearer", token])` sends
//! `Sec-WebSocket-Protocol: Bearer, <token>`, which the `AuthLayer` reads. The
//! browser then fails the handshake unless the server selects one of the
//! listed protocols, so this extractor selects `Bearer` (never the token).

use std::{fmt, future::Future};

use auth_core::AuthContext;
use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, WebSocket, WebSocketUpgrade},
        FromRequestParts,
    },
    response::{IntoResponse, Response},
};
use http::request::Parts;

use crate::{Auth, AuthRejection};

/// An authenticated WebSocket upgrade: the [`AuthContext`] and axum's
/// [`WebSocketUpgrade`] with the client's `Bearer` subprotocol selected.
///
/// ```
/// use auth_axum::AuthenticatedUpgrade;
/// use axum::{extract::ws::Message, response::Response, routing::get, Router};
///
/// async fn chat(ws: AuthenticatedUpgrade) -> Response {
///     ws.on_upgrade(|mut socket, ctx| async move {
///         let hello = format!("hello {}", ctx.effective_user());
///         let _ = socket.send(Message::Text(hello.into())).await;
///     })
/// }
///
/// # fn app(verifier: auth_core::Verifier) -> Router {
/// Router::new().route("/chat", get(chat)).layer(auth_tower::AuthLayer::new(verifier))
/// # }
/// ```
pub struct AuthenticatedUpgrade {
    ctx: AuthContext,
    upgrade: WebSocketUpgrade,
}

// Not derived: `WebSocketUpgrade`'s `Debug` lists the offered subprotocols,
// which include the token.
impl fmt::Debug for AuthenticatedUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticatedUpgrade")
            .field("ctx", &self.ctx)
            .field("selected_protocol", &self.upgrade.selected_protocol())
            .finish_non_exhaustive()
    }
}

impl AuthenticatedUpgrade {
    /// The request's context.
    pub fn context(&self) -> &AuthContext {
        &self.ctx
    }

    /// Adjusts the upgrade (buffer and message sizes, …).
    pub fn configure(mut self, f: impl FnOnce(WebSocketUpgrade) -> WebSocketUpgrade) -> Self {
        self.upgrade = f(self.upgrade);
        self
    }

    /// Completes the handshake and runs `callback` with the socket and the context.
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket, AuthContext) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let ctx = self.ctx;
        self.upgrade.on_upgrade(move |socket| callback(socket, ctx))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUpgrade {
    type Rejection = WebSocketAuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Auth(ctx) = Auth::from_request_parts(parts, state)
            .await
            .map_err(WebSocketAuthRejection::Auth)?;
        let offered = auth_tower::offered_bearer_protocol(&parts.headers).map(str::to_owned);
        let mut upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(WebSocketAuthRejection::Upgrade)?;
        if let Some(bearer) = offered {
            upgrade = upgrade.protocols([bearer]);
        }
        Ok(Self { ctx, upgrade })
    }
}

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
