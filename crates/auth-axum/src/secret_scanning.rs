//! GitHub's secret-scanning partner protocol: GitHub reports our tokens it
//! finds in public code, we revoke them.
//!
//! GitHub `POST`s a JSON array of `{"token", "type", "url", "source"}`,
//! signed with ECDSA P-256 / SHA-256: `Github-Public-Key-Identifier` names
//! the key, `Github-Public-Key-Signature` is the base64 DER signature of the
//! raw body. GitHub publishes its keys at
//! `https://api.github.com/meta/public_keys/secret_scanning`; the application
//! configures them ([`SecretScanning::public_key_pem`]), so this route makes
//! no network call of its own. Every token that is really one of our keys'
//! is revoked ([`KeyIssuer::revoke_by_token`], one audit event each, reason
//! `leaked`) and labelled `true_positive`; anything else `false_positive`.
//! The answer is a JSON array of `{"token_raw", "token_type", "label"}`.
//!
//! Mount it outside the `AuthLayer` (GitHub holds no key of ours): the
//! signature is the authentication. Refusals:
//!
//! | status | code | when |
//! |---|---|---|
//! | 401 | `missing_signature` | either header missing |
//! | 401 | `unknown_public_key` | the key identifier is not configured |
//! | 401 | `invalid_signature` | not base64 DER, or not a signature of this body by that key |
//! | 413 | `payload_too_large` | body over [`SecretScanning::max_body_bytes`] (default 256 KiB) |
//! | 400 | `bad_request` | body not declared JSON, or not a JSON array of reports |
//! | 422 | `too_many_tokens` | more than [`SecretScanning::max_tokens`] (default 1000) |
//! | 503 | `unavailable` | the key store failed: nothing is labelled, GitHub retries |
//!
//! The cheap checks come first, before any body is read or any signature
//! verified: both headers present, a configured key identifier, a
//! well-formed signature, a JSON content type (when declared), a declared
//! length within the limit; then the body, read up to the limit, must
//! start like a JSON array; only then is the ECDSA signature verified.
//!
//! A token repeated in one report is checked and audited once, and every
//! occurrence gets its label. A replayed request revokes nothing new, writes
//! nothing (no store write, no change notification, no audit event: an
//! already revoked key is left as it is), only repeats labels its sender
//! already had, and costs no argon2 (a revoked key's token is confirmed by
//! its constant-time secret check). The audit event's client address is the
//! [`ClientIp`] an outer layer resolved through the trusted proxies, else
//! the socket peer.

use std::{collections::HashMap, fmt, net::SocketAddr, sync::Arc};

use auth_core::{
    client_ip::ClientIp, revoke_by_token::RevocationSource, revoke_by_token::TokenRevocation,
    AuditSink, AuthError, IssueError, KeyIssuer,
};
use auth_tower::RenderAuthError;
use axum::{
    body::{to_bytes, Body},
    extract::{ConnectInfo, OriginalUri, Request},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Extension, Json, Router,
};
use base64::Engine;
use p256::{
    ecdsa::{signature::Verifier, Signature, VerifyingKey},
    pkcs8::DecodePublicKey,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// The header naming the signing key.
pub const KEY_IDENTIFIER_HEADER: &str = "github-public-key-identifier";
/// The header holding the base64 DER signature of the body.
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// GitHub's reports are small (a few hundred bytes per token); the limit
/// bounds what an unauthenticated sender can make the route read.
const DEFAULT_MAX_BODY: usize = 256 << 10;
const DEFAULT_MAX_TOKENS: usize = 1000;

/// The configuration of the secret-scanning route: where keys are revoked,
/// where the revocations are audited, and whose signatures are accepted.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use auth_axum::SecretScanning;
/// use auth_core::*;
/// use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
/// use axum::Router;
///
/// // A key GitHub lists at https://api.github.com/meta/public_keys/secret_scanning
/// # let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEuIHSDNuDc6aTvLwoi6DNrM69+6M1\n7xyZDClzD7eGEx+EPsGsH/3t3dp3zhLzOlrwUMvssD0ryHWyRhluqvutZQ==\n-----END PUBLIC KEY-----\n";
/// let store = Arc::new(MemoryKeyStore::new());
/// let issuer = KeyIssuer::new(store, SecretHasher::for_tests(), TokenPrefix::new("st_").unwrap());
/// let audit = Arc::new(MemoryAuditLog::default());
/// let scanning = SecretScanning::new(issuer, audit)
///     .public_key_pem("bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c", pem)
///     .unwrap();
/// let app: Router = Router::new().nest("/github/secret-scanning", scanning.router());
/// # });
/// ```
#[derive(Clone)]
pub struct SecretScanning {
    issuer: KeyIssuer,
    audit: Arc<dyn AuditSink>,
    keys: HashMap<String, VerifyingKey>,
    max_body: usize,
    max_tokens: usize,
}

impl fmt::Debug for SecretScanning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("SecretScanning")
            .field("issuer", &self.issuer)
            .field("key_identifiers", &ids)
            .field("max_body", &self.max_body)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

/// A configured public key is not a P-256 public key in PEM (SPKI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPublicKey(pub String);

impl fmt::Display for InvalidPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "public key {:?} is not an ECDSA P-256 public key in PEM",
            self.0
        )
    }
}

impl std::error::Error for InvalidPublicKey {}

impl SecretScanning {
    /// Revokes through `issuer` (its store and hasher), audits into `audit`.
    /// Accepts no signature until a key is added.
    pub fn new(issuer: KeyIssuer, audit: Arc<dyn AuditSink>) -> Self {
        Self {
            issuer,
            audit,
            keys: HashMap::new(),
            max_body: DEFAULT_MAX_BODY,
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }

    /// Accepts signatures by the P-256 key `pem` (`-----BEGIN PUBLIC KEY-----`)
    /// when a request names it by `identifier`. GitHub lists several keys
    /// while it rotates them: add each.
    pub fn public_key_pem(
        mut self,
        identifier: impl Into<String>,
        pem: &str,
    ) -> Result<Self, InvalidPublicKey> {
        let identifier = identifier.into();
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| InvalidPublicKey(identifier.clone()))?;
        self.keys.insert(identifier, key);
        Ok(self)
    }

    /// The largest body read (default 256 KiB); larger is 413 unread.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// The most tokens one request may report (default 1000); more is 422.
    /// Each costs a key-store read.
    pub fn max_tokens(mut self, max: usize) -> Self {
        self.max_tokens = max;
        self
    }

    /// The route: `POST /`. Nest it where GitHub was told to send reports.
    pub fn router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/", post(report))
            .layer(Extension(Arc::new(self)))
    }

    /// The key a request's headers name, and its signature, checked for
    /// shape; the body is read only after this.
    fn signer(&self, headers: &HeaderMap) -> Result<(&VerifyingKey, Signature), AuthError> {
        let (Some(id), Some(sig)) = (
            headers.get(KEY_IDENTIFIER_HEADER),
            headers.get(SIGNATURE_HEADER),
        ) else {
            return Err(refusal(
                "missing_signature",
                "Signed reports only: Github-Public-Key-Identifier and Github-Public-Key-Signature are required",
            ));
        };
        let key = id
            .to_str()
            .ok()
            .and_then(|id| self.keys.get(id))
            .ok_or_else(|| refusal("unknown_public_key", "Unknown public key identifier"))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig.as_bytes())
            .ok()
            .and_then(|der| Signature::from_der(&der).ok())
            .ok_or_else(invalid_signature)?;
        Ok((key, sig))
    }
}

fn refusal(code: &'static str, message: &'static str) -> AuthError {
    AuthError::custom(code, StatusCode::UNAUTHORIZED, message)
}

fn invalid_signature() -> AuthError {
    refusal(
        "invalid_signature",
        "The signature does not verify for this body and key",
    )
}

/// One reported match.
#[derive(Deserialize)]
struct Reported {
    token: String,
    #[serde(rename = "type", default)]
    token_type: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

/// Our verdict on one match.
#[derive(Serialize)]
struct Label<'a> {
    token_raw: &'a str,
    token_type: &'a str,
    label: &'static str,
}

async fn report(Extension(cfg): Extension<Arc<SecretScanning>>, req: Request) -> Response {
    let span = tracing::info_span!("secret_scanning.report", tokens = tracing::field::Empty);
    let ext = req.extensions().clone();
    let result = handle(&cfg, req).instrument(span).await;
    let mut res = result.unwrap_or_else(|e| ext.render_auth_error(&e).map(Body::from));
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

async fn handle(cfg: &SecretScanning, req: Request) -> Result<Response, AuthError> {
    let (parts, body) = req.into_parts();
    let (key, sig) = cfg.signer(&parts.headers)?;
    let too_large = || {
        AuthError::custom(
            "payload_too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "Report body too large",
        )
    };
    let not_a_report =
        || AuthError::bad_request("The body must be a JSON array of {token, type, url, source}");
    let json = parts.headers.get(header::CONTENT_TYPE).is_none_or(|ct| {
        ct.to_str().is_ok_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
    });
    if !json {
        return Err(not_a_report());
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_body as u64) {
        return Err(too_large());
    }
    let body = to_bytes(body, cfg.max_body)
        .await
        .map_err(|_| too_large())?;
    // A report is a JSON array: anything else is refused before the
    // signature check, the one expensive step.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return Err(not_a_report());
    }
    key.verify(&body, &sig).map_err(|_| invalid_signature())?;

    let reports: Vec<Reported> = serde_json::from_slice(&body).map_err(|_| not_a_report())?;
    if reports.len() > cfg.max_tokens {
        return Err(AuthError::custom(
            "too_many_tokens",
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("At most {} tokens per report", cfg.max_tokens),
        ));
    }
    tracing::Span::current().record("tokens", reports.len() as u64);
    let mut source = RevocationSource::new(
        parts.method.clone(),
        // The full path, also when the router is nested.
        parts
            .extensions
            .get::<OriginalUri>()
            .map_or(parts.uri.path(), |OriginalUri(u)| u.path()),
    );
    // The address an outer layer resolved through the trusted proxies, as
    // in every other audit row; the socket peer only without one.
    source.client_ip = ClientIp::of(&parts.extensions).or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
    });
    source.user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(auth_core::audit::MAX_USER_AGENT).collect());
    let mut labels = Vec::with_capacity(reports.len());
    let mut revoked = 0usize;
    // A token repeated in one report is checked (and audited) once; every
    // occurrence gets the same label.
    let mut verdicts: HashMap<&str, TokenRevocation> = HashMap::new();
    for r in &reports {
        let verdict = match verdicts.get(r.token.as_str()) {
            Some(v) => *v,
            None => {
                let v = cfg
                    .issuer
                    .revoke_by_token(&r.token, cfg.audit.as_ref(), &source)
                    .await
                    .map_err(store_failed)?;
                verdicts.insert(&r.token, v);
                if let TokenRevocation::Revoked { .. } = v {
                    revoked += 1;
                }
                v
            }
        };
        let label = match verdict {
            TokenRevocation::Revoked { .. } => "true_positive",
            TokenRevocation::NotOurs => "false_positive",
        };
        // Where it leaked, for the operator; never the token.
        if let TokenRevocation::Revoked { key_id, .. } = verdict {
            tracing::warn!(
                %key_id,
                url = r.url.as_deref().unwrap_or(""),
                source = r.source.as_deref().unwrap_or(""),
                "leaked key reported by GitHub secret scanning"
            );
        }
        labels.push(Label {
            token_raw: &r.token,
            token_type: &r.token_type,
            label,
        });
    }
    tracing::info!(
        reported = reports.len() as u64,
        revoked = revoked as u64,
        "secret scanning report"
    );
    Ok((StatusCode::OK, Json(labels)).into_response())
}

/// Fail closed: a report we could not check is answered 503, so GitHub
/// sends it again, rather than labelled.
fn store_failed(e: IssueError) -> AuthError {
    tracing::warn!(error = %e, "secret scanning report could not be checked");
    let err = AuthError::unavailable("Key store temporarily unavailable");
    match e {
        IssueError::Hash(auth_core::hash::HashError::Busy) => {
            err.with_retry_after(std::time::Duration::from_secs(1))
        }
        _ => err,
    }
}
