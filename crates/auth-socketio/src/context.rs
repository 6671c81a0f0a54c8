//! [`SocketAuth`]: the connection's [`AuthContext`] as a handler argument.

use std::{fmt, ops::Deref, sync::Arc};

use auth_core::AuthContext;
use socketioxide::{
    adapter::Adapter,
    handler::{FromConnectParts, FromDisconnectParts, FromMessageParts},
    socket::{DisconnectReason, Socket},
};
use socketioxide_core::Value;

/// The [`AuthContext`] [`SocketIoAuth`](super::SocketIoAuth) verified when
/// the socket connected, for connect, message and disconnect handlers.
///
/// Without it (the namespace's handler was not wrapped with
/// `.with(socket_io_auth)`) the extraction fails and socketioxide does not
/// call the handler: a forgotten middleware fails closed.
///
/// ```
/// use auth_socketio::SocketAuth;
/// use auth_socketio::socketioxide::extract::{AckSender, SocketRef};
///
/// fn on_connect(socket: SocketRef, SocketAuth(ctx): SocketAuth) {
///     let user = ctx.effective_user().to_owned();
///     socket.on("whoami", move |ack: AckSender| {
///         let user = user.clone();
///         async move {
///             let _ = ack.send(&user);
///         }
///     });
/// }
/// # let _ = on_connect;
/// ```
#[derive(Clone, Debug)]
pub struct SocketAuth(pub AuthContext);

impl Deref for SocketAuth {
    type Target = AuthContext;

    fn deref(&self) -> &AuthContext {
        &self.0
    }
}

impl From<SocketAuth> for AuthContext {
    fn from(auth: SocketAuth) -> Self {
        auth.0
    }
}

/// The socket has no [`AuthContext`]: `SocketIoAuth` did not run on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAuthenticated;

impl fmt::Display for NotAuthenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("socket not authenticated: is the namespace handler wrapped with SocketIoAuth?")
    }
}

impl std::error::Error for NotAuthenticated {}

fn context<A: Adapter>(socket: &Socket<A>) -> Result<SocketAuth, NotAuthenticated> {
    socket
        .extensions
        .get::<AuthContext>()
        .map(SocketAuth)
        .ok_or(NotAuthenticated)
}

impl<A: Adapter> FromConnectParts<A> for SocketAuth {
    type Error = NotAuthenticated;

    fn from_connect_parts(s: &Arc<Socket<A>>, _: &Option<Value>) -> Result<Self, Self::Error> {
        context(s)
    }
}

impl<A: Adapter> FromMessageParts<A> for SocketAuth {
    type Error = NotAuthenticated;

    fn from_message_parts(
        s: &Arc<Socket<A>>,
        _: &mut Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        context(s)
    }
}

impl<A: Adapter> FromDisconnectParts<A> for SocketAuth {
    type Error = NotAuthenticated;

    fn from_disconnect_parts(s: &Arc<Socket<A>>, _: DisconnectReason) -> Result<Self, Self::Error> {
        context(s)
    }
}
