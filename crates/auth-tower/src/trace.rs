//! Tracing: the request span records who made the request, never the credential.
//!
//! Field names follow OpenTelemetry's semantic conventions where one exists
//! (`http.request.method`, `url.path`, `network.protocol.version`,
//! `user.id` for the actor); keygate's own are under `keygate.`.
//!
//! After a successful authentication the layer records [`KEY_ID`],
//! [`ACTOR`], [`SUBJECT`] and [`WORKSPACE`] into the *current* span, which is
//! the request span when a tower-http `TraceLayer` sits in front. A span only
//! keeps fields it declared when it was created: [`AuthMakeSpan`] declares
//! them, or declare them in your own `make_span_with` as `tracing::field::Empty`.
//!
//! ```
//! use auth_tower::AuthMakeSpan;
//! use tower_http::trace::TraceLayer;
//!
//! let trace = TraceLayer::new_for_http().make_span_with(AuthMakeSpan::new());
//! ```

use auth_core::AuthContext;
use http::Request;
use tower_http::trace::MakeSpan;
use tracing::{field::Empty, level_filters::LevelFilter, Level, Span};

/// Span field: the key id (public, not secret).
pub const KEY_ID: &str = "keygate.key.id";
/// Span field: the user who owns the credential (OpenTelemetry's `user.id`).
pub const ACTOR: &str = "user.id";
/// Span field: the subject user, when acting on someone's behalf.
pub const SUBJECT: &str = "keygate.subject.id";
/// Span field: the selected workspace.
pub const WORKSPACE: &str = "keygate.workspace";

/// Records the context's identities in the current span. Values are
/// formatted by the subscriber only if the span is enabled.
pub(crate) fn record_in_current_span(ctx: &AuthContext) {
    // No subscriber wants anything: there is no span to look up.
    if LevelFilter::current() == LevelFilter::OFF {
        return;
    }
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(id) = ctx.key_id() {
        span.record(KEY_ID, tracing::field::display(id));
    }
    span.record(ACTOR, ctx.actor().user_id());
    if let Some(subject) = ctx.subject() {
        span.record(SUBJECT, subject.user_id());
    }
    if let Some(ws) = ctx.workspace() {
        span.record(WORKSPACE, ws);
    }
}

/// A tower-http [`MakeSpan`] for request spans that declares the auth fields
/// and records the request path **without the query string** (which may hold a
/// credential when query-parameter auth is on), unlike tower-http's
/// `DefaultMakeSpan`, which records the full URI.
#[derive(Clone, Debug)]
pub struct AuthMakeSpan {
    level: Level,
}

impl AuthMakeSpan {
    /// Spans at `INFO`.
    pub fn new() -> Self {
        Self { level: Level::INFO }
    }

    /// Spans at `level`.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

impl Default for AuthMakeSpan {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> MakeSpan<B> for AuthMakeSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        macro_rules! span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "request",
                    http.request.method = %req.method(),
                    url.path = %req.uri().path(),
                    network.protocol.version = ?req.version(),
                    keygate.key.id = Empty,
                    user.id = Empty,
                    keygate.subject.id = Empty,
                    keygate.workspace = Empty,
                )
            };
        }
        match self.level {
            Level::ERROR => span!(Level::ERROR),
            Level::WARN => span!(Level::WARN),
            Level::INFO => span!(Level::INFO),
            Level::DEBUG => span!(Level::DEBUG),
            _ => span!(Level::TRACE),
        }
    }
}
