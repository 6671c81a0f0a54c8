//! `GET /ws`: an authenticated WebSocket (`Sec-WebSocket-Protocol: Bearer,
//! <token>`) that echoes text messages, about one per second; faster ones
//! get a `rate_limited` event instead of an echo. The connection is closed
//! (code 1008) as soon as its key is revoked or expires (or, for a JWT, its
//! user's secret is regenerated).

use auth_axum::AuthenticatedUpgrade;
use auth_core::Verifier;
use auth_ratelimit::{MessageLimiter, Quota};
use axum::{
    extract::ws::{close_code, CloseFrame, Message},
    response::Response,
    Extension,
};

/// About one message per second per connection.
pub(super) const MESSAGES: Quota = Quota::per_second(1);

/// The upgrade; connects per IP are limited by the rate-limit layer.
pub(super) async fn echo(
    ws: AuthenticatedUpgrade,
    Extension(verifier): Extension<Verifier>,
) -> Response {
    ws.on_upgrade(move |mut socket, ctx| async move {
        let mut limiter = MessageLimiter::new(MESSAGES);
        tracing::debug!(user = ctx.effective_user(), "websocket open");
        // Resolves when the key is revoked or expires, or a JWT's user
        // secret is regenerated.
        let mut ended = verifier.credential_ended(&ctx);
        loop {
            let msg = tokio::select! {
                msg = socket.recv() => msg,
                () = &mut ended => {
                    let close = CloseFrame { code: close_code::POLICY, reason: "token revoked or expired".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
            };
            let Some(Ok(msg)) = msg else { break };
            let reply = match msg {
                Message::Text(text) => match limiter.check() {
                    Ok(_) => Message::Text(text),
                    Err(limited) => limited.message(),
                },
                Message::Close(_) => break,
                // Pings are answered by axum; binary frames are not part of this API.
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}
