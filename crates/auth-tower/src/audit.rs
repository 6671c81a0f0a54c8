//! Building audit events on the request path and handing them to the sink.

use std::{net::IpAddr, sync::Arc};

use auth_core::{
    audit::audit_now, audit::AuditOutcome, audit::CompactString, audit::KeyCreated,
    audit::KeyManaged, audit::RefusedFor, audit::MAX_USER_AGENT, AuditEvent, AuditSink,
    AuthContext, KeyId, RejectReason,
};
use http::{header, request::Parts, HeaderMap, Method, Request, StatusCode, Uri};

use crate::config::Config;

/// What is known about a refused attempt, for its audit event.
#[derive(Default)]
pub(crate) struct Attempt<'a> {
    /// The key id, if the token was well formed.
    pub(crate) key_id: Option<KeyId>,
    /// The key's context once verified (kept only when auditing).
    pub(crate) verified: Option<AuthContext>,
    /// The subject user the request asked for.
    pub(crate) subject: Option<&'a str>,
}

impl Attempt<'_> {
    /// Who did what, for a refused attempt.
    pub(crate) fn who(&self) -> Who<'_> {
        Who {
            key_id: self
                .verified
                .as_ref()
                .and_then(AuthContext::key_id)
                .or(self.key_id),
            actor: self.verified.as_ref().map(|c| c.actor().shared_user_id()),
            subject: self.subject.map(Arc::from),
        }
    }
}

/// The identities named in an audit event: the key record's own user ids,
/// shared (a reference count each, no copy).
pub(crate) struct Who<'a> {
    pub(crate) key_id: Option<KeyId>,
    pub(crate) actor: Option<&'a Arc<str>>,
    pub(crate) subject: Option<Arc<str>>,
}

impl<'a> Who<'a> {
    /// An authenticated request: the actor and, when impersonating, the subject.
    pub(crate) fn of(ctx: &'a AuthContext) -> Self {
        Self {
            key_id: ctx.key_id(),
            actor: Some(ctx.actor().shared_user_id()),
            subject: ctx.subject().map(|s| s.shared_user_id().clone()),
        }
    }
}

/// The parts of a request an audit event describes.
pub(crate) struct Head<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    /// Resolved once per request (see `Config::client_ip`).
    client_ip: Option<IpAddr>,
}

impl<'a> Head<'a> {
    pub(crate) fn of_parts(p: &'a Parts, client_ip: Option<IpAddr>) -> Self {
        Self {
            method: &p.method,
            uri: &p.uri,
            headers: &p.headers,
            client_ip,
        }
    }

    pub(crate) fn of<B>(r: &'a Request<B>, client_ip: Option<IpAddr>) -> Self {
        Self {
            method: r.method(),
            uri: r.uri(),
            headers: r.headers(),
            client_ip,
        }
    }
}

/// An event waiting for the response status. Recorded by
/// [`PendingAudit::finish`], or on drop (status unknown) if the response
/// never came, so that no attempt goes unrecorded once decided.
///
/// The event is boxed once, here, and the box is what the sink takes
/// ([`AuditSink::record_boxed`]); futures carrying an `Option<PendingAudit>`
/// stay small when no audit sink is configured.
pub(crate) struct PendingAudit {
    sink: Arc<dyn AuditSink>,
    event: Option<Box<AuditEvent>>,
}

impl PendingAudit {
    pub(crate) fn finish(mut self, status: Option<StatusCode>) {
        if let Some(mut event) = self.event.take() {
            event.status = status.map(|s| s.as_u16());
            self.sink.record_boxed(event);
        }
    }

    /// As [`finish`](Self::finish), with what the response's extensions
    /// say: the key the request created ([`KeyCreated`]), that it managed
    /// keys ([`KeyManaged`]) and, when a layer inside refused the request,
    /// why ([`RefusedFor`]).
    pub(crate) fn finish_with(mut self, status: Option<StatusCode>, marks: &http::Extensions) {
        if let Some(mut event) = self.event.take() {
            if let Some(RefusedFor(reason)) = marks.get::<RefusedFor>() {
                event.outcome = AuditOutcome::Failure;
                event.reason = Some(*reason);
            }
            event.status = status.map(|s| s.as_u16());
            event.created_key = marks.get::<KeyCreated>().map(|k| k.0);
            event.key_management =
                event.created_key.is_some() || marks.get::<KeyManaged>().is_some();
            self.sink.record_boxed(event);
        }
    }
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            self.sink.record_boxed(event);
        }
    }
}

/// The event for an attempt, if an audit sink is configured. Only then is
/// the attempt described; a path or `User-Agent` over 24 bytes is
/// allocated, shorter ones are held in the event. The path never includes the query string,
/// which may hold a credential.
pub(crate) fn pending<'a>(
    config: &Config,
    reason: Option<RejectReason>,
    attempt: impl FnOnce() -> (Head<'a>, Who<'a>),
) -> Option<PendingAudit> {
    crate::metrics::auth_attempt(reason);
    let sink = config.audit.as_ref()?;
    let (req, who) = attempt();
    let user_agent = req.headers.get(header::USER_AGENT).map(|v| {
        let bytes = v.as_bytes();
        CompactString::from_utf8_lossy(&bytes[..bytes.len().min(MAX_USER_AGENT)])
    });
    let outcome = if reason.is_none() {
        AuditOutcome::Success
    } else {
        AuditOutcome::Failure
    };
    let mut event = Box::new(AuditEvent::new(
        audit_now(),
        outcome,
        req.method.clone(),
        req.uri.path(),
    ));
    event.key_id = who.key_id;
    event.actor = who.actor.cloned();
    event.subject = who.subject;
    event.reason = reason;
    event.client_ip = req.client_ip;
    event.user_agent = user_agent;
    Some(PendingAudit {
        sink: sink.clone(),
        event: Some(event),
    })
}
