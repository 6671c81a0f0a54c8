//! WebSocket limits: connects per IP, messages per connection.
//!
//! **Connects** are HTTP requests (the upgrade handshake), so they go through
//! the [`RateLimitLayer`](crate::RateLimitLayer) like any other: add
//! [`Rule::websocket_connects`](crate::Rule::websocket_connects) (e.g. 10
//! per minute per IP) and an over-limit handshake is answered 429 before the
//! upgrade.
//!
//! **Messages** flow inside the upgraded socket, out of reach of any HTTP
//! layer. Give each connection a [`MessageLimiter`] (e.g. about one message
//! per second) and, for a message over the limit, send the
//! [`RateLimitedEvent`] frame `{"event":"rate_limited","retry_after_ms":…}`
//! instead of handling it. The socket stays open. The limiter knows no
//! WebSocket library: send [`RateLimitedEvent::to_json`] as a text frame
//! (with the `axum` feature, [`RateLimitedEvent::message`] is that frame
//! for axum).
//!
//! ```
//! use auth_ratelimit::{ws::MessageLimiter, Quota};
//! use axum::extract::ws::{Message, WebSocket};
//!
//! async fn serve_socket(mut socket: WebSocket) {
//!     let mut limiter = MessageLimiter::new(Quota::per_second(1).with_burst(3));
//!     while let Some(Ok(msg)) = socket.recv().await {
//!         if let Err(limited) = limiter.check() {
//!             if socket.send(Message::text(limited.to_json())).await.is_err() {
//!                 break;
//!             }
//!             continue;
//!         }
//!         // ... handle `msg` ...
//! #       let _ = msg;
//!     }
//! }
//! ```

use std::{fmt, sync::Arc, time::Duration};

#[cfg(feature = "axum")]
use axum::extract::ws::{Message, Utf8Bytes};

use crate::{gcra, Decision, MonotonicClock, QuantaClock, Quota};

/// A token bucket for one WebSocket connection (owned by the task serving
/// it, so no locking).
pub struct MessageLimiter {
    quota: Quota,
    tat: u64,
    clock: Arc<dyn MonotonicClock>,
}

impl MessageLimiter {
    /// A limiter on the real clock.
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            tat: 0,
            clock: Arc::new(QuantaClock),
        }
    }

    /// Reads the time from `clock` instead (a [`FakeClock`](crate::clock::FakeClock) in tests).
    pub fn clock(mut self, clock: impl MonotonicClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Takes one token: `Ok` to handle the message, `Err` with the event to
    /// send back instead.
    pub fn check(&mut self) -> Result<Decision, RateLimitedEvent> {
        self.check_cost(1)
    }

    /// Takes `cost` tokens (for messages of different weights).
    pub fn check_cost(&mut self, cost: u32) -> Result<Decision, RateLimitedEvent> {
        match gcra::take(self.tat, self.clock.now(), &self.quota, cost) {
            Ok((tat, decision)) => {
                self.tat = tat;
                Ok(decision)
            }
            Err(decision) => Err(RateLimitedEvent {
                retry_after: decision.retry_after().unwrap_or(Duration::from_millis(1)),
            }),
        }
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

impl fmt::Debug for MessageLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageLimiter")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

/// A message over the limit: send [`RateLimitedEvent::message`] back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitedEvent {
    retry_after: Duration,
}

impl RateLimitedEvent {
    /// How long until a message would pass.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The wait in milliseconds, rounded up, at least 1.
    pub fn retry_after_ms(&self) -> u64 {
        let nanos = self.retry_after.as_nanos();
        let ms = nanos / 1_000_000 + u128::from(!nanos.is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    }

    /// The JSON event: `{"event":"rate_limited","retry_after_ms":250}`.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"event":"rate_limited","retry_after_ms":{}}}"#,
            self.retry_after_ms()
        )
    }

    /// The event as an axum WebSocket text frame.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn message(&self) -> Message {
        Message::Text(Utf8Bytes::from(self.to_json()))
    }
}

impl fmt::Display for RateLimitedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn about_one_message_per_second() {
        let clock = FakeClock::new();
        let mut l = MessageLimiter::new(Quota::per_second(1)).clock(clock.clone());
        assert!(l.check().is_ok());
        let ev = l.check().unwrap_err();
        assert_eq!(ev.retry_after(), Duration::from_secs(1));
        assert_eq!(
            ev.to_json(),
            r#"{"event":"rate_limited","retry_after_ms":1000}"#
        );
        clock.advance(Duration::from_micros(999_500));
        let ev = l.check().unwrap_err();
        assert_eq!(ev.retry_after_ms(), 1, "500 µs rounds up to 1 ms");
        clock.advance(Duration::from_micros(500));
        assert!(l.check().is_ok());
    }

    #[cfg(feature = "axum")]
    #[test]
    fn event_frame_is_text_json() {
        let ev = RateLimitedEvent {
            retry_after: Duration::from_millis(250),
        };
        match ev.message() {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["event"], "rate_limited");
                assert_eq!(v["retry_after_ms"], 250);
            }
            other => panic!("not a text frame: {other:?}"),
        }
    }
}
