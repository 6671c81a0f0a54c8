//! `GET /ws`: an authenticated WebSocket (`Sec-WebSocket-Protocol: Bearer,
//! <token>`) that echoes text messages, about one per second; faster ones
//! get a `rate_limited` event instead of an echo. The connection is closed
//! (code 1008) as soon as its key is revoked, disabled or expires, an edit
//! takes the client's address off its allowlist (or, for a JWT, its user's
//! secret is regenerated); a message over 64 KiB closes it with 1009.

use auth_axum::AuthenticatedUpgrade;
use auth_core::Verifier;
use auth_ratelimit::{ws::MessageLimiter, Quota};
use axum::{extract::ws::Message, response::Response, Extension};

/// About one message per second per connection.
pub(super) const MESSAGES: Quota = Quota::per_second(1);

/// The upgrade; connects per IP are limited by the rate-limit layer.
pub(super) async fn echo(
    ws: AuthenticatedUpgrade,
    Extension(verifier): Extension<Verifier>,
) -> Response {
    ws.on_upgrade(&verifier, |mut socket| async move {
        let mut limiter = MessageLimiter::new(MESSAGES);
        tracing::debug!(user = socket.context().effective_user(), "websocket open");
        // `None` once the client leaves or the socket was closed for its credential.
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
