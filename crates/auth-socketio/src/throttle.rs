//! [`Throttle`]: events per connection, answered with a `rate_limited` event.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_ratelimit::{ws::MessageLimiter, Quota};
use socketioxide::{adapter::Adapter, handler::FromMessageParts, socket::Socket};
use socketioxide_core::Value;

/// The event sent to a client whose event was over the connection's quota.
pub const RATE_LIMITED_EVENT: &str = "rate_limited";

/// The connection's token bucket, in the socket's extensions.
#[derive(Clone)]
pub(crate) struct EventLimiter(Arc<Mutex<MessageLimiter>>);

impl EventLimiter {
    pub(crate) fn new(quota: Quota) -> Self {
        Self(Arc::new(Mutex::new(MessageLimiter::new(quota))))
    }

    fn check(&self) -> Result<(), EventRateLimited> {
        // A panic elsewhere while holding the lock leaves a usable bucket.
        let mut limiter = self.0.lock().unwrap_or_else(|e| e.into_inner());
        limiter.check().map(|_| ()).map_err(|e| EventRateLimited {
            retry_after: e.retry_after(),
            retry_after_ms: e.retry_after_ms(),
        })
    }
}

/// Takes one token from the connection's event quota
/// ([`SocketIoAuth::event_quota`](super::SocketIoAuth::event_quota)) before
/// the handler runs. Over the quota, the handler is not called and the
/// client gets a [`RATE_LIMITED_EVENT`] event `{"retry_after_ms": 1000}`
/// instead; the connection stays open. (An acknowledgement the client asked
/// for is not sent: its own timeout applies.)
///
/// Without a quota configured, every event passes.
///
/// ```
/// use auth_socketio::Throttle;
/// use auth_socketio::socketioxide::extract::{Data, SocketRef};
///
/// fn on_connect(socket: SocketRef) {
///     socket.on("echo", |socket: SocketRef, _: Throttle, Data(text): Data<String>| async move {
///         let _ = socket.emit("echo", &text);
///     });
/// }
/// # let _ = on_connect;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Throttle;

impl<A: Adapter> FromMessageParts<A> for Throttle {
    type Error = EventRateLimited;

    fn from_message_parts(
        s: &Arc<Socket<A>>,
        _: &mut Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        let Some(limiter) = s.extensions.get::<EventLimiter>() else {
            return Ok(Throttle);
        };
        limiter.check().map(|()| Throttle).inspect_err(|limited| {
            #[derive(serde::Serialize)]
            struct Body {
                retry_after_ms: u64,
            }
            let body = Body {
                retry_after_ms: limited.retry_after_ms,
            };
            // A client gone or too slow to read misses the notice, nothing more.
            let _ = s.emit(RATE_LIMITED_EVENT, &body);
        })
    }
}

/// An event over the connection's quota (the handler was not called).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRateLimited {
    retry_after: Duration,
    retry_after_ms: u64,
}

impl EventRateLimited {
    /// How long until an event would pass.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for EventRateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event rate limit exceeded; retry in {} ms",
            self.retry_after_ms
        )
    }
}

impl std::error::Error for EventRateLimited {}
