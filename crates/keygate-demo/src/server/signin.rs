//! Sign-in for the settings page, as a web product does it: the
//! demo users sign in at `/login` with a password (argon2id), get a cookie
//! session (tower-sessions, stored on the same `--db`), and manage their
//! keys at `/settings/tokens`. API keys keep working on `/api/...`.
//!
//! - Passwords: `server passwd --user alice` reads one from standard input.
//!   A demo user has none until then, and cannot sign in.
//! - Sign-in attempts have their own, stricter limit: per client address
//!   and per user name (429 with `Retry-After`). Every attempt is audited.
//! - A wrong user name and a wrong password get the same answer after the
//!   same work: an unknown user is checked against a dummy hash.
//! - Cookies are `HttpOnly`, `SameSite=Lax`, and `Secure` with
//!   [`SignInOptions::secure_cookies`] (serve over TLS, or behind a TLS proxy).
//! - Under a session the key API accepts only JSON bodies and only
//!   same-origin changes (`KeyManager::check_origin`); `/login` and
//!   `/logout` check `Origin` too.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use auth_axum::{AllowedOrigins, DefaultScopes, KeyManager, KeyOwner, SettingsPage};
use auth_core::{
    AuditEvent, AuditLog, AuditOutcome, ClientIp, Principal, RejectReason, ScopeSet, TrustedProxies,
};
use auth_ratelimit::{KeyBy, Quota, RateLimiter, Rule};
use axum::{
    extract::{ConnectInfo, FromRequestParts, Request},
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use parking_lot::Mutex;
use serde::Deserialize;
use sqlx::{postgres::PgPool, sqlite::SqlitePool};
use time::OffsetDateTime;
use tower_sessions::{cookie::SameSite, Expiry, MemoryStore, Session, SessionManagerLayer};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use super::{all_scopes, Server, USERS};
use crate::support::limits;

/// The session key holding the signed-in user's id.
const SESSION_USER: &str = "user";
/// Where the settings page is.
pub const SETTINGS: &str = "/settings/tokens";
/// Shortest password `passwd` accepts.
pub const MIN_PASSWORD: usize = 10;
/// The header the sign-in limiter reads the attempted user name from (set
/// on a request built in the handler, never taken from the client).
const LOGIN_USER_HEADER: &str = "x-keygate-login-user";

/// What each scope allows, for the "New key" dialog.
pub const SCOPE_DESCRIPTIONS: &[(&str, &str)] = &[
    ("nodes:read", "Read nodes you have access to"),
    (
        "nodes:write",
        "Create, change and delete nodes, and share them",
    ),
    ("tokens:manage", "Create, rotate and revoke API tokens"),
];

/// Sign-in settings.
#[derive(Clone, Debug)]
pub struct SignInOptions {
    /// Sign-in attempts per minute per client address (and per user name).
    pub attempts_per_minute: u32,
    /// Mark cookies `Secure` (when the site is served over TLS).
    pub secure_cookies: bool,
    /// Sessions end after this long without a request.
    pub idle_timeout: time::Duration,
    /// Share the sign-in limits in this Redis.
    pub redis: Option<String>,
    /// Proxies whose X-Forwarded-For names the client (`--trusted-proxy`).
    pub trusted_proxies: TrustedProxies,
}

impl Default for SignInOptions {
    fn default() -> Self {
        Self {
            attempts_per_minute: 5,
            secure_cookies: false,
            idle_timeout: time::Duration::hours(8),
            redis: None,
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

/// Where passwords and sessions live: the same database as the keys.
#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Memory(Arc<Mutex<HashMap<String, String>>>),
}

/// The demo users' passwords, the session store and the sign-in limiter.
#[derive(Debug, Clone)]
pub struct Accounts {
    db: Db,
    dummy_hash: Arc<str>,
    limiter: RateLimiter,
    audit: Arc<dyn AuditLog>,
    options: SignInOptions,
    /// Password checks running at once: each holds ~19 MiB of argon2
    /// memory on a blocking thread, so a flood from many addresses (past the
    /// per-address limit) waits here instead of growing the pool.
    checks: Arc<tokio::sync::Semaphore>,
}

/// Password checks that may run at once.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;

impl Accounts {
    /// Opens `db` (the `--db` of the keys: a SQLite path, a `postgres://`
    /// URL, or `memory:`), creating the password and session tables.
    pub async fn open(
        db: &str,
        audit: Arc<dyn AuditLog>,
        options: SignInOptions,
    ) -> Result<Self, String> {
        let db = if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            let pool = PgPool::connect(db)
                .await
                .map_err(|e| format!("cannot open the account database: {e}"))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS server_passwords (user_id TEXT PRIMARY KEY, \
                 hash TEXT NOT NULL, updated_at BIGINT NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(|e| format!("cannot create the password table: {e}"))?;
            Db::Postgres(pool)
        } else if db == "memory:" {
            Db::Memory(Arc::default())
        } else {
            let path = db
                .strip_prefix("sqlite://")
                .or_else(|| db.strip_prefix("sqlite:"))
                .unwrap_or(db);
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                .map_err(|e| format!("invalid database path: {e}"))?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePool::connect_with(opts)
                .await
                .map_err(|e| format!("cannot open the account database: {e}"))?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS server_passwords (user_id TEXT PRIMARY KEY, \
                 hash TEXT NOT NULL, updated_at INTEGER NOT NULL) STRICT",
            )
            .execute(&pool)
            .await
            .map_err(|e| format!("cannot create the password table: {e}"))?;
            Db::Sqlite(pool)
        };
        let per_minute = Quota::per_minute(options.attempts_per_minute.max(1));
        let limiter = limits::limiter(
            vec![
                Rule::per_ip("login-ip", per_minute),
                Rule::new("login-user", per_minute).by(KeyBy::custom(|info| {
                    info.headers()
                        .get(LOGIN_USER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })),
            ],
            options.redis.as_deref(),
            "keygate:server:login",
            &options.trusted_proxies,
        )?;
        // Unknown users are checked against this, so they cost the same.
        let dummy_hash = hash_password("no user has this password, it is random").await?;
        Ok(Self {
            db,
            dummy_hash: dummy_hash.into(),
            limiter,
            audit,
            options,
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_PASSWORD_CHECKS)),
        })
    }

    /// Sets `user`'s password (argon2id, random salt).
    pub async fn set_password(&self, user: &str, password: &str) -> Result<(), String> {
        if !USERS.contains(&user) {
            return Err(format!(
                "unknown user '{user}'; users: {}",
                USERS.join(", ")
            ));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(format!(
                "the password must have at least {MIN_PASSWORD} characters"
            ));
        }
        let hash = hash_password(password).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let upsert = "INSERT INTO server_passwords (user_id, hash, updated_at) VALUES ($1, $2, $3) \
                      ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at";
        let result = match &self.db {
            Db::Sqlite(pool) => sqlx::query(upsert)
                .bind(user)
                .bind(&hash)
                .bind(now)
                .execute(pool)
                .await
                .map(drop),
            Db::Postgres(pool) => sqlx::query(upsert)
                .bind(user)
                .bind(&hash)
                .bind(now)
                .execute(pool)
                .await
                .map(drop),
            Db::Memory(map) => {
                map.lock().insert(user.to_owned(), hash);
                Ok(())
            }
        };
        result.map_err(|e| format!("cannot store the password: {e}"))
    }

    async fn stored_hash(&self, user: &str) -> Result<Option<String>, sqlx::Error> {
        let select = "SELECT hash FROM server_passwords WHERE user_id = $1";
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(select)
                    .bind(user)
                    .fetch_optional(pool)
                    .await
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(select)
                    .bind(user)
                    .fetch_optional(pool)
                    .await
            }
            Db::Memory(map) => Ok(map.lock().get(user).cloned()),
        }
    }

    /// Whether `password` is `user`'s; the same work whether or not the
    /// user exists or has a password.
    async fn check(&self, user: &str, password: &str) -> Result<bool, sqlx::Error> {
        let stored = if USERS.contains(&user) {
            self.stored_hash(user).await?
        } else {
            // The same query for names that do not exist.
            // (No NUL byte: PostgreSQL's TEXT refuses it, and an error here
            // would tell unknown names from wrong passwords.)
            self.stored_hash(" no such user ").await?;
            None
        };
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let password = password.to_owned();
        let Ok(_permit) = self.checks.acquire().await else {
            return Ok(false); // never closed
        };
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        Ok(known && matches)
    }

    /// The session layer over the same database.
    async fn session_layer(&self, router: Router) -> Result<Router, String> {
        let options = &self.options;
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                let store = SqliteStore::new(pool.clone())
                    .with_table_name(SESSION_TABLE)
                    .map_err(|e| e.to_string())?;
                store.migrate().await.map_err(no_session_table)?;
                persistent_sessions(router, store, options)
            }
            Db::Postgres(pool) => {
                let store = PostgresStore::new(pool.clone())
                    .with_table_name(SESSION_TABLE)
                    .map_err(|e| e.to_string())?;
                store.migrate().await.map_err(no_session_table)?;
                persistent_sessions(router, store, options)
            }
            Db::Memory(_) => router.layer(configure(
                SessionManagerLayer::new(MemoryStore::default()),
                options,
            )),
        })
    }

    fn audit_attempt(
        &self,
        user: &str,
        known: bool,
        client: Option<IpAddr>,
        headers: &HeaderMap,
        outcome: Result<(), RejectReason>,
        status: StatusCode,
    ) {
        let kind = if outcome.is_ok() {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failure
        };
        let mut event = AuditEvent::new(OffsetDateTime::now_utc(), kind, "POST", "/login");
        // Only names of real users: a password typed into the name field
        // must not end up in the log.
        event.actor = known.then(|| user.to_owned());
        event.reason = outcome.err();
        event.status = Some(status.as_u16());
        event.client_ip = client;
        event.user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(auth_core::MAX_USER_AGENT).collect());
        self.audit.record(event);
    }
}

/// Cookie settings: `HttpOnly`, `SameSite=Lax`, `Secure` when asked, an
/// idle timeout.
fn configure<St: tower_sessions::SessionStore + Clone>(
    layer: SessionManagerLayer<St>,
    options: &SignInOptions,
) -> SessionManagerLayer<St> {
    layer
        .with_name("keygate_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(options.secure_cookies)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(options.idle_timeout))
}

/// The sessions' table in the account database.
const SESSION_TABLE: &str = "server_sessions";

fn no_session_table(e: impl std::fmt::Display) -> String {
    format!("cannot create the session table: {e}")
}

/// `router` with sessions in `store`, whose expired sessions are deleted
/// every hour in the background.
fn persistent_sessions<S>(router: Router, store: S, options: &SignInOptions) -> Router
where
    S: tower_sessions::SessionStore + tower_sessions::ExpiredDeletion + Clone + 'static,
{
    let cleanup = store.clone();
    tokio::spawn(async move {
        let _ = cleanup
            .continuously_delete_expired(tokio::time::Duration::from_secs(3600))
            .await;
    });
    router.layer(configure(SessionManagerLayer::new(store), options))
}

async fn hash_password(password: &str) -> Result<String, String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The signed-in user: the owner of the keys on the settings page, who may
/// grant every scope (a token has the same rights as its user).
#[derive(Debug)]
pub struct SessionUser {
    principal: Principal,
    scopes: ScopeSet,
}

impl<S: Send + Sync> FromRequestParts<S> for SessionUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match session_user(&session).await {
            Ok(Some(user)) => Ok(Self {
                principal: Principal::user(user),
                scopes: all_scopes(),
            }),
            Ok(None) => Err(json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Sign in first",
            )),
            Err(res) => Err(res),
        }
    }
}

impl KeyOwner for SessionUser {
    fn principal(&self) -> &Principal {
        &self.principal
    }
    fn grantable_scopes(&self) -> &ScopeSet {
        &self.scopes
    }
}

/// The signed-in demo user, if any; 503 when the session store is down.
async fn session_user(session: &Session) -> Result<Option<String>, Response> {
    match session.get::<String>(SESSION_USER).await {
        Ok(user) => Ok(user.filter(|u| USERS.contains(&u.as_str()))),
        Err(e) => {
            tracing::warn!(error = %e, "session store failed");
            Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Sessions are temporarily unavailable",
            ))
        }
    }
}

fn json_error(status: StatusCode, code: &'static str, message: &'static str) -> Response {
    let err = auth_core::AuthError::custom(code, status, message);
    auth_core::ErrorFormat::Flat
        .render(&err)
        .map(axum::body::Body::from)
}

/// `/`, `/login`, `/logout` and the settings page at [`SETTINGS`], behind
/// cookie sessions. Merge it with the API router.
pub async fn routes(server: &Server, accounts: &Accounts) -> Result<Router, String> {
    let keys = KeyManager::new(server.issuer.clone(), server.audit.clone())
        .known_scopes(all_scopes())
        .default_scopes(DefaultScopes::OwnerGrantable)
        .describe_scopes(SCOPE_DESCRIPTIONS.iter().copied())
        .check_origin(AllowedOrigins::same_host());
    let page = SettingsPage::new("Settings · API tokens")
        .sign_out("/logout")
        .router::<SessionUser, ()>(keys)
        .layer(middleware::from_fn(page_needs_sign_in));
    let state = accounts.clone();
    let router = Router::new()
        .route("/", get(home))
        .route(
            "/login",
            get(login_page).post(
                move |session: Session, peer: Peer, headers: HeaderMap, form: Form<LoginForm>| {
                    login(state.clone(), session, peer, headers, form)
                },
            ),
        )
        .route("/login.css", get(login_css))
        .route("/logout", post(logout))
        .nest(SETTINGS, page);
    accounts.session_layer(router).await
}

/// The page itself sends a browser without a session to `/login`; its API
/// answers 401 (from [`SessionUser`]).
async fn page_needs_sign_in(session: Session, req: Request, next: Next) -> Response {
    if req.uri().path() == "/" || req.uri().path().is_empty() {
        match session_user(&session).await {
            Ok(Some(_)) => {}
            Ok(None) => return Redirect::to("/login").into_response(),
            Err(res) => return res,
        }
    }
    next.run(req).await
}

async fn home(session: Session) -> Response {
    match session_user(&session).await {
        Ok(Some(_)) => Redirect::to(SETTINGS).into_response(),
        Ok(None) => Redirect::to("/login").into_response(),
        Err(res) => res,
    }
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

/// 403 unless the request comes from this site (login CSRF, forced logout).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| host.is_some_and(|h| h.eq_ignore_ascii_case(authority))),
        None => headers
            .get("sec-fetch-site")
            .is_none_or(|s| matches!(s.to_str(), Ok("same-origin" | "none"))),
    }
}

/// The client's socket address, when the server was started with
/// `ConnectInfo` (always in the examples).
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

async fn login(
    accounts: Accounts,
    session: Session,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let user = form.user.trim().to_owned();
    let known = USERS.contains(&user.as_str());
    // The client as the API routes see it: through the trusted proxies.
    let client = peer.map(|p| accounts.options.trusted_proxies.client_ip(p.ip(), &headers));
    if !same_origin(&headers) {
        accounts.audit_attempt(
            &user,
            known,
            client,
            &headers,
            Err(RejectReason::InvalidRequest),
            StatusCode::FORBIDDEN,
        );
        return page(
            StatusCode::FORBIDDEN,
            "Sign-in refused: the form was not sent from this site.",
            &user,
        );
    }
    // The stricter limit: by address, and by the name tried.
    let mut probe = Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header(
            LOGIN_USER_HEADER,
            HeaderValue::from_str(&user.to_lowercase()).unwrap_or(HeaderValue::from_static("-")),
        )
        .body(())
        .unwrap_or_default();
    if let Some(ip) = client {
        probe.extensions_mut().insert(ClientIp(ip));
    }
    if let Err(refused) = accounts.limiter.check(&probe).await {
        let retry = refused.headers().get(header::RETRY_AFTER).cloned();
        accounts.audit_attempt(
            &user,
            known,
            client,
            &headers,
            Err(RejectReason::RateLimited),
            refused.status(),
        );
        let wait = retry
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|s| format!(" Try again in {s} seconds."))
            .unwrap_or_default();
        let mut res = page(
            refused.status(),
            &format!("Too many sign-in attempts.{wait}"),
            &user,
        );
        if let Some(r) = retry {
            res.headers_mut().insert(header::RETRY_AFTER, r);
        }
        return res;
    }
    match accounts.check(&user, &form.password).await {
        Ok(true) => {
            // A new session id at sign-in: no fixation.
            let stored = async {
                session.cycle_id().await?;
                session.insert(SESSION_USER, &user).await
            };
            if let Err(e) = stored.await {
                tracing::warn!(error = %e, "session store failed at sign-in");
                accounts.audit_attempt(
                    &user,
                    known,
                    client,
                    &headers,
                    Err(RejectReason::StoreUnavailable),
                    StatusCode::SERVICE_UNAVAILABLE,
                );
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in is temporarily unavailable.",
                    &user,
                );
            }
            accounts.audit_attempt(
                &user,
                known,
                client,
                &headers,
                Ok(()),
                StatusCode::SEE_OTHER,
            );
            Redirect::to(SETTINGS).into_response()
        }
        Ok(false) => {
            let reason = if known {
                RejectReason::WrongSecret
            } else {
                RejectReason::UnknownSubject
            };
            accounts.audit_attempt(
                &user,
                known,
                client,
                &headers,
                Err(reason),
                StatusCode::UNAUTHORIZED,
            );
            page(
                StatusCode::UNAUTHORIZED,
                "Wrong user name or password.",
                &user,
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "account database failed at sign-in");
            accounts.audit_attempt(
                &user,
                known,
                client,
                &headers,
                Err(RejectReason::StoreUnavailable),
                StatusCode::SERVICE_UNAVAILABLE,
            );
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable.",
                &user,
            )
        }
    }
}

async fn login_page(session: Session) -> Response {
    match session_user(&session).await {
        Ok(Some(_)) => Redirect::to(SETTINGS).into_response(),
        _ => page(StatusCode::OK, "", ""),
    }
}

async fn logout(session: Session, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return page(
            StatusCode::FORBIDDEN,
            "Sign-out refused: the form was not sent from this site.",
            "",
        );
    }
    if let Err(e) = session.flush().await {
        // The session may still be valid: say so rather than pretend.
        tracing::warn!(error = %e, "session store failed at sign-out");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-out failed: the session store is unavailable. Try again.",
            "",
        );
    }
    Redirect::to("/login").into_response()
}

const LOGIN_HTML: &str = include_str!("login.html");
const LOGIN_CSS: &str = include_str!("login.css");

fn page(status: StatusCode, error: &str, user: &str) -> Response {
    let error_html = if error.is_empty() {
        String::new()
    } else {
        format!(
            r#"<p class="error" role="alert" id="login-error">{}</p>"#,
            escape(error)
        )
    };
    let users = USERS.join(", ");
    let html = LOGIN_HTML
        .replace("{{ERROR}}", &error_html)
        .replace("{{USER}}", &escape(user))
        .replace("{{USERS}}", &escape(&users));
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(auth_axum::ui::CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

async fn login_css() -> Response {
    let mut res = LOGIN_CSS.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `server passwd --user <id>`: reads the new password from the first line
/// of standard input.
pub async fn passwd_command(db: &str, user: &str) -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    let audit: Arc<dyn AuditLog> = Arc::new(auth_core::MemoryAuditLog::new(1));
    let accounts = Accounts::open(db, audit, SignInOptions::default()).await?;
    accounts.set_password(user, password).await?;
    eprintln!("password set for `{user}`: sign in at /login");
    Ok(())
}
