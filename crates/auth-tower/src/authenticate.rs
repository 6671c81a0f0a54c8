//! The decision for one request: credential, verification, impersonation,
//! workspace.
//!
//! [`begin`] decides synchronously whenever it can: a missing or malformed
//! credential, or a key the verifier's cache knows, with no resolver to ask.
//! That is the hot path: no boxed future, no clone of the inner service. Only
//! a cache miss or an application resolver needs [`authenticate`], boxed.

use std::{future::Future, net::IpAddr, pin::Pin, sync::Arc};

use auth_core::{token::ParsedToken, AuthContext, AuthError, Credential, ErrorCode, RejectReason};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response};

use crate::{
    audit::{pending, Attempt, Head, PendingAudit, Who},
    config::Config,
    credential::find_credential,
    headers,
    trace::record_in_current_span,
    SubjectDecision,
};

/// The boxed decision future held by [`ResponseFuture`](crate::ResponseFuture).
pub(crate) type Authenticating<B> = Pin<Box<dyn Future<Output = Outcome<B>> + Send>>;

pub(crate) enum Outcome<B> {
    /// Call the inner service with this request.
    Pass(Request<B>, Option<PendingAudit>),
    /// Answer with this refusal.
    Reject(Response<Bytes>, Option<PendingAudit>),
}

/// The synchronous first step's verdict. The request stays with the caller,
/// so that it is moved as little as possible on the hot path.
pub(crate) enum Step {
    /// Call the inner service with the request, which has no context
    /// (optional mode, no credential).
    Pass(Option<PendingAudit>),
    /// Call the inner service with the request, its context inserted.
    Authenticated(Option<PendingAudit>),
    /// Answer with this refusal.
    Reject(Response<Bytes>, Option<PendingAudit>),
    /// Box [`authenticate`] with the request; the key's context if already
    /// verified, and the client address.
    Wait(Option<AuthContext>, Option<IpAddr>),
}

/// Longest subject user id or workspace id accepted in a header.
const MAX_ID_LEN: usize = 256;

/// What the credential alone says, without waiting on anything.
enum Early {
    /// Optional mode and no credential.
    Anonymous,
    Refused(AuthError),
    Verified(AuthContext),
    /// The verifier must read the store (or run argon2).
    Unknown,
}

pub(crate) fn begin<B>(config: &Config, req: &mut Request<B>) -> Step {
    let client = config.client_ip(req);
    let mut attempt = Attempt::default();
    match early(config, req, client, &mut attempt) {
        Early::Anonymous => Step::Pass(None),
        Early::Refused(err) => {
            let (res, audit) = refuse(config, Head::of(req, client), &attempt, err);
            Step::Reject(res, audit)
        }
        Early::Verified(ctx)
            if config.workspaces.is_none()
                && !headers::contains(req.headers(), &config.subject_header) =>
        {
            record_in_current_span(&ctx);
            let audit = pending(config, None, || (Head::of(req, client), Who::of(&ctx)));
            req.extensions_mut().insert(ctx);
            Step::Authenticated(audit)
        }
        Early::Verified(ctx) => Step::Wait(Some(ctx), client),
        Early::Unknown => Step::Wait(None, client),
    }
}

fn early<B>(
    config: &Config,
    req: &Request<B>,
    client: Option<IpAddr>,
    attempt: &mut Attempt<'_>,
) -> Early {
    let token = match find_credential(&config.sources, req.method(), req.uri(), req.headers()) {
        Err(err) => return Early::Refused(err),
        Ok(None) if config.required => {
            return Early::Refused(AuthError::unauthorized(RejectReason::Missing))
        }
        Ok(None) => return Early::Anonymous,
        Ok(Some(token)) => token,
    };
    // The bytes as they came: a token the cache knows needs no check of its
    // characters; any other is checked on the way to its verdict.
    match config
        .verifier
        .verify_cached_bytes(token.as_bytes(), client)
    {
        None => Early::Unknown,
        // Checked here, on the synchronous path: one pointer test for keys
        // without an allowlist.
        Some(Ok(ctx)) if !ctx.allows_ip(client) => {
            let refusal = ip_not_allowed();
            if config.audit.is_some() {
                attempt.verified = Some(ctx);
            }
            Early::Refused(refusal)
        }
        Some(Ok(ctx)) => Early::Verified(ctx),
        Some(Err(err)) => match token.as_str() {
            // Not a token at all: say so, as before any lookup.
            Err(malformed) => Early::Refused(malformed),
            Ok(token) => {
                attempt.key_id = key_id(token);
                Early::Refused(public(err))
            }
        },
    }
}

/// The key id of a well-formed token, for audit events.
fn key_id(token: &str) -> Option<auth_core::KeyId> {
    ParsedToken::parse(token).ok().map(|p| p.key_id())
}

fn refuse(
    config: &Config,
    req: Head<'_>,
    attempt: &Attempt<'_>,
    err: AuthError,
) -> (Response<Bytes>, Option<PendingAudit>) {
    tracing::debug!(
        reason = err.reason().as_str(),
        status = err.status().as_u16(),
        "request refused by AuthLayer"
    );
    let audit = pending(config, Some(err.reason()), || (req, attempt.who()));
    (config.render(&err), audit)
}

/// The rest of the decision, for requests that must wait: `verified` is the
/// key's context when the cache already knew it.
pub(crate) async fn authenticate<B>(
    config: Arc<Config>,
    req: Request<B>,
    verified: Option<AuthContext>,
    client: Option<IpAddr>,
) -> Outcome<B> {
    // Only the parts are borrowed across awaits: bodies need not be `Sync`.
    let (mut parts, body) = req.into_parts();
    let mut attempt = Attempt::default();
    match decide(&config, &parts, verified, client, &mut attempt).await {
        // Optional mode, no credential: not an authentication attempt.
        Ok(None) => Outcome::Pass(Request::from_parts(parts, body), None),
        Ok(Some(ctx)) => {
            record_in_current_span(&ctx);
            drop(attempt); // it borrows the request, which is changed below
            let audit = pending(&config, None, || {
                (Head::of_parts(&parts, client), Who::of(&ctx))
            });
            parts.extensions.insert(ctx);
            Outcome::Pass(Request::from_parts(parts, body), audit)
        }
        Err(err) => {
            let (res, audit) = refuse(&config, Head::of_parts(&parts, client), &attempt, err);
            Outcome::Reject(res, audit)
        }
    }
}

/// `Ok(None)`: optional mode and no credential.
async fn decide<'r>(
    config: &Config,
    req: &'r http::request::Parts,
    verified: Option<AuthContext>,
    client: Option<IpAddr>,
    attempt: &mut Attempt<'r>,
) -> Result<Option<AuthContext>, AuthError> {
    let ctx = match verified {
        Some(ctx) => ctx,
        None => {
            let token = find_credential(&config.sources, &req.method, &req.uri, &req.headers)?;
            let Some(token) = token else {
                return if config.required {
                    Err(AuthError::unauthorized(RejectReason::Missing))
                } else {
                    Ok(None)
                };
            };
            let token = token.as_str()?;
            match config
                .verifier
                .verify(Credential::new(token).client(client))
                .await
            {
                Ok(ctx) => ctx,
                Err(err) => {
                    attempt.key_id = key_id(token);
                    return Err(public(err));
                }
            }
        }
    };
    if config.audit.is_some() {
        attempt.verified = Some(ctx.clone());
    }
    if !ctx.allows_ip(client) {
        return Err(ip_not_allowed());
    }
    let ctx = impersonate(config, &req.headers, ctx, attempt).await?;
    let ctx = select_workspace(config, &req.headers, ctx).await?;
    Ok(Some(ctx))
}

/// 403 `ip_not_allowed`: the key has an IP allowlist and `client` is not on
/// it (or unknown: no peer address, which fails closed). The address and the
/// key go to the audit event; a log line per refusal would let a stolen key
/// flood the logs.
fn ip_not_allowed() -> AuthError {
    AuthError::new(ErrorCode::IpNotAllowed, RejectReason::IpNotAllowed)
}

/// A store failure's details are for logs: clients get the generic message.
fn public(err: AuthError) -> AuthError {
    if err.code() == ErrorCode::Unavailable {
        AuthError::new(ErrorCode::Unavailable, err.reason())
    } else {
        err
    }
}

fn unavailable(what: &str, err: &crate::ResolveError) -> AuthError {
    tracing::warn!(error = %err, "{what} resolver failed");
    AuthError::new(ErrorCode::Unavailable, RejectReason::StoreUnavailable)
}

/// An id from a header: one value, 1-256 visible ASCII characters; else 400.
fn header_id<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let valid = values.next().is_none()
        && (1..=MAX_ID_LEN).contains(&value.len())
        && value.as_bytes().iter().all(u8::is_ascii_graphic);
    match value.to_str() {
        Ok(id) if valid => Ok(Some(id)),
        _ => Err(AuthError::bad_request(format!(
            "The {name} header must be sent once, with 1-{MAX_ID_LEN} visible ASCII characters"
        ))),
    }
}

async fn impersonate<'r>(
    config: &Config,
    headers: &'r HeaderMap,
    ctx: AuthContext,
    attempt: &mut Attempt<'r>,
) -> Result<AuthContext, AuthError> {
    let Some(user_id) = header_id(headers, &config.subject_header)? else {
        return Ok(ctx);
    };
    attempt.subject = Some(user_id);
    let Some(resolver) = &config.subjects else {
        // Refused, not ignored: running as the actor instead would surprise the client.
        return Err(AuthError::forbidden(
            RejectReason::ImpersonationDenied,
            "Acting on behalf of another user is not enabled on this service",
        ));
    };
    let scope = &*config.impersonation_scope;
    if !ctx.scopes().has(scope) {
        return Err(AuthError::missing_scope(scope).with_message(format!(
            "This token may not act on behalf of other users: it lacks the '{scope}' scope"
        )));
    }
    match resolver.resolve(&ctx, user_id).await {
        Ok(SubjectDecision::Allow(subject)) => {
            Ok(ctx.with_subject(subject.principal, &subject.ceiling))
        }
        Ok(SubjectDecision::Deny) => Err(AuthError::forbidden(
            RejectReason::ImpersonationDenied,
            "This token's owner may not act on behalf of the requested user",
        )),
        Ok(SubjectDecision::Unknown) => Err(AuthError::forbidden(
            RejectReason::UnknownSubject,
            "The requested subject user does not exist",
        )),
        Err(e) => Err(unavailable("subject", &e)),
    }
}

async fn select_workspace(
    config: &Config,
    headers: &HeaderMap,
    ctx: AuthContext,
) -> Result<AuthContext, AuthError> {
    let Some(resolver) = &config.workspaces else {
        return Ok(ctx);
    };
    match header_id(headers, &config.workspace_header)? {
        Some(ws) => match resolver.is_member(&ctx, ws).await {
            Ok(true) => Ok(ctx.with_workspace(ws)),
            Ok(false) => Err(AuthError::forbidden(
                RejectReason::WorkspaceDenied,
                "Not a member of the requested workspace",
            )),
            Err(e) => Err(unavailable("workspace", &e)),
        },
        None => match resolver.default_workspace(&ctx).await {
            Ok(Some(ws)) => Ok(ctx.with_workspace(ws)),
            Ok(None) => Ok(ctx),
            Err(e) => Err(unavailable("workspace", &e)),
        },
    }
}
