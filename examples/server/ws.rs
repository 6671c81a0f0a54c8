//! `GET /ws`: an authenticated WebSocket (`Sec-WebSocket-Protocol: Bearer,
//! <token>`) that echoes text messages, about one per second; faster ones
//! get a `rate_limited` event instead of an echo.

use auth_axum::AuthenticatedUpgrade;
use auth_ratelimit::{MessageLimiter, Quota};
use axum::{extract::ws::Message, response::Response};

/// About one message per second per connection.
pub const MESSAGES: Quota = Quota::per_second(1);

/// The upgrade; connects per IP are limited by the rate-limit layer.
pub async fn echo(ws: AuthenticatedUpgrade) -> Response {
    ws.on_upgrade(|mut socket, ctx| async move {
        let mut limiter = MessageLimiter::new(MESSAGES);
        tracing::debug!(user = ctx.effective_user(), "websocket open");
        while let Some(Ok(msg)) = socket.recv().await {
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
