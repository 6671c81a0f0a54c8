//! Socket.IO at `/ext-socket.io`, as the demo's clients connect:
//!
//! ```js
//! io("http://127.0.0.1:3000", { path: "/ext-socket.io", transports: ["websocket"], auth: { api_token } })
//! ```
//!
//! Connects are authenticated by the server's own `AuthLayer` (the token
//! from `auth.api_token`, `Authorization: Bearer` or `Sec-WebSocket-Protocol:
//! Bearer, <token>`) and count against its WebSocket connect limit (10 per
//! minute per IP, shared with `/ws`) and against the failed-authentication
//! limit of the HTTP routes (a 401 counts; past the limit, 429); a refusal is a `connect_error` whose
//! message is the JSON error, e.g. `{"error":"unauthorized",…}`. Events:
//! `whoami` (acknowledged with the authenticated context) and `echo`
//! (echoed back), about one per second per connection; faster ones get a
//! `rate_limited` event instead. A socket whose key is revoked, disabled or
//! expires, or whose address an edit takes off the key's allowlist, is sent
//! a `revoked` event and disconnected; an edit that narrows the key's scopes
//! narrows the socket's (`SocketIoAuth` follows the credential).

use auth_socketio::{
    socketioxide::{
        extract::{AckSender, Data, SocketRef},
        handler::ConnectHandler,
        SocketIo,
    },
    SocketAuth, SocketIoAuth, Throttle,
};
use axum::Router;

use super::{ws::MESSAGES, Server};

/// Where Socket.IO is served.
pub(super) const PATH: &str = "/ext-socket.io";

/// `router` with Socket.IO at [`PATH`] in front of it.
pub(super) fn mount(server: &Server, router: Router) -> Router {
    let auth = SocketIoAuth::new(server.protection.auth.clone())
        .connect_limits(server.protection.limiter.clone())
        // Refused connects count per address, with the HTTP routes' 401s.
        .failed_auth_limits(server.protection.failures.clone())
        .event_quota(MESSAGES);
    let (layer, io) = SocketIo::builder().req_path(PATH).build_layer();
    io.ns("/", on_connect.with(auth));
    router
        .layer(layer)
        // Outermost, so the handshake's credential headers are hidden in
        // every Debug output of socketioxide too.
        .layer(server.protection.auth.sensitive_headers())
}

async fn on_connect(socket: SocketRef, SocketAuth(ctx): SocketAuth) {
    tracing::debug!(user = ctx.effective_user(), "socket.io connected");
    socket.on(
        "whoami",
        |_: Throttle, SocketAuth(ctx): SocketAuth, ack: AckSender| async move {
            let _ = ack.send(&ctx);
        },
    );
    socket.on(
        "echo",
        |socket: SocketRef, _: Throttle, Data(data): Data<serde_json::Value>| async move {
            let _ = socket.emit("echo", &data);
        },
    );
}
