//! Sign-in for the demos' browser pages (`server`'s settings page, `tools`'
//! account page): users sign in at `/login` with a password (argon2id), get
//! a cookie session (tower-sessions, stored on the same `--db`), and reach
//! the demo's pages. API keys and tokens keep working on the API.
//!
//! - Passwords: `<demo> passwd --user <id>` reads one from standard input.
//!   A demo user has none until then, and cannot sign in.
//! - Sign-in attempts have their own, stricter limits (429 with
//!   `Retry-After`): every attempt counts against its client address, and
//!   only *failures* count against the name tried, with a ceiling high
//!   enough for a person's typos. Wrong passwords sent from elsewhere do not
//!   lock the owner out; spraying one name from many addresses meets the
//!   ceiling. Every attempt is audited.
//! - Password checks run on a few argon2 workers behind a bounded queue:
//!   past it, sign-in answers 503 with `Retry-After` at once instead of
//!   piling up memory.
//! - A wrong user name and a wrong password get the same answer after the
//!   same work: an unknown user is checked against a dummy hash.
//! - Cookies are `HttpOnly`, `SameSite=Lax` and `Secure`, unless the server
//!   was started for plain HTTP on purpose ([`SignInOptions::secure_cookies`]
//!   off, `--plain-http`).
//! - A session ends after [`SignInOptions::idle_timeout`] without a request,
//!   after [`SignInOptions::absolute_lifetime`] whatever its use, at sign-out,
//!   and when the user's password changes (`passwd` ends every session of
//!   the user: each session holds a fingerprint of the password hash it was
//!   opened with).
//! - Creating, rotating or editing a key needs a password entered within
//!   [`SignInOptions::reauthenticate_after`]: an older session gets 403
//!   `reauthentication_required` with the `location` of the page that asks
//!   for the password again (`/login/confirm`).
//! - Under a session the key API accepts only JSON bodies and only
//!   same-origin changes; `/login`, `/login/confirm` and `/logout` apply the
//!   same origin rule (`AllowedOrigins::allows_request`).

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
use auth_axum::AllowedOrigins;
use auth_core::{
    audit::AuditLog, audit::AuditOutcome, client_ip::ClientIp, client_ip::TrustedProxies,
    clock::SystemClock, clock::WallClock, AuditEvent, RejectReason,
};
use auth_ratelimit::{FailedAuthLimiter, Quota, RateLimiter, Rule};
use axum::{
    extract::{ConnectInfo, FromRequestParts, Request},
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Extension, Form, Router,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::{postgres::PgPool, sqlite::SqlitePool};
use time::OffsetDateTime;
use tower_sessions::{cookie::SameSite, Expiry, MemoryStore, Session, SessionManagerLayer};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use super::limits;

/// The session key holding the [`SignedIn`] record.
const SESSION_ACCOUNT: &str = "account";
/// Where a session too old for a change confirms the password.
pub const CONFIRM: &str = "/login/confirm";
/// Shortest password `passwd` accepts.
pub const MIN_PASSWORD: usize = 10;

/// Who may sign in to a demo, and where they land.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// The demo's name: in page titles, the tables (`<name>_passwords`,
    /// `<name>_sessions`) and the Redis key prefixes.
    pub name: &'static str,
    /// The users who may sign in (once `passwd` gave them a password).
    pub users: &'static [&'static str],
    /// Where a signed-in user is sent: the page behind the sign-in.
    pub home: &'static str,
}

/// Sign-in settings.
#[derive(Clone, Debug)]
pub struct SignInOptions {
    /// Sign-in attempts per minute per client address.
    pub attempts_per_minute: u32,
    /// Failed sign-ins per user name, from anywhere (default 100 at once,
    /// then 100 an hour): past it, the name is refused with 429 before any
    /// password check.
    pub failures_per_name: Quota,
    /// Password checks that may wait for an argon2 worker (default 32);
    /// past that, 503 with `Retry-After`.
    pub password_check_queue: usize,
    /// Mark cookies `Secure` (default). Off only for a server started on
    /// plain HTTP for local use (`--plain-http`).
    pub secure_cookies: bool,
    /// Sessions end after this long without a request.
    pub idle_timeout: time::Duration,
    /// Sessions end this long after sign-in, however busy (default 12 hours).
    pub absolute_lifetime: time::Duration,
    /// Creating, rotating or editing a key needs a password entered this
    /// recently (default 15 minutes); older sessions confirm it again.
    pub reauthenticate_after: time::Duration,
    /// Share the sign-in limits in this Redis.
    pub redis: Option<String>,
    /// Proxies whose X-Forwarded-For names the client (`--trusted-proxy`).
    pub trusted_proxies: TrustedProxies,
    /// What session ages are measured with.
    pub clock: Arc<dyn WallClock>,
}

impl Default for SignInOptions {
    fn default() -> Self {
        Self {
            attempts_per_minute: 5,
            failures_per_name: Quota::per_hour(100).with_burst(100),
            password_check_queue: 32,
            secure_cookies: true,
            idle_timeout: time::Duration::hours(8),
            absolute_lifetime: time::Duration::hours(12),
            reauthenticate_after: time::Duration::minutes(15),
            redis: None,
            trusted_proxies: TrustedProxies::none(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// What a session holds: who signed in, when, when they last typed their
/// password, and a fingerprint of the password hash it was checked against
/// (a new password ends the session).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedIn {
    /// The user's id.
    pub user: String,
    /// Sign-in, in Unix seconds: the session's absolute lifetime runs from here.
    signed_in_at: i64,
    /// The latest password entry, in Unix seconds (sign-in or confirmation).
    confirmed_at: i64,
    /// BLAKE3 of the stored password hash, hex.
    password: String,
}

/// A fingerprint of a stored password hash: equal while the password is
/// unchanged, and not the hash itself.
fn fingerprint(stored_hash: &str) -> blake3::Hash {
    blake3::Hasher::new_derive_key("keygate demo session password fingerprint")
        .update(stored_hash.as_bytes())
        .finalize()
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
    site: Site,
    db: Db,
    dummy_hash: Arc<str>,
    limiter: RateLimiter,
    name_failures: FailedAuthLimiter,
    audit: Arc<dyn AuditLog>,
    options: SignInOptions,
    /// Password checks running at once: each holds ~19 MiB of argon2
    /// memory on a blocking thread, so a flood from many addresses (past the
    /// per-address limit) waits here instead of growing the pool.
    checks: Arc<tokio::sync::Semaphore>,
    /// Password checks running or waiting: a permit is taken without
    /// waiting, so the queue in front of `checks` is bounded.
    admitted: Arc<tokio::sync::Semaphore>,
}

/// Why a password was not checked.
#[derive(Debug)]
enum CheckError {
    /// The account database failed.
    Store(sqlx::Error),
    /// Every worker is busy and the queue is full.
    Busy,
}

/// Password checks that may run at once.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;

impl Accounts {
    /// Opens `db` (the `--db` of the keys: a SQLite path, a `postgres://`
    /// URL, or `memory:`), creating the password and session tables.
    pub async fn open(
        site: Site,
        db: &str,
        audit: Arc<dyn AuditLog>,
        options: SignInOptions,
    ) -> Result<Self, String> {
        let passwords = format!("{}_passwords", site.name);
        let db = if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            let pool = PgPool::connect(db)
                .await
                .map_err(|e| format!("cannot open the account database: {e}"))?;
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {passwords} (user_id TEXT PRIMARY KEY, \
                 hash TEXT NOT NULL, updated_at BIGINT NOT NULL)"
            ))
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
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {passwords} (user_id TEXT PRIMARY KEY, \
                 hash TEXT NOT NULL, updated_at INTEGER NOT NULL) STRICT"
            ))
            .execute(&pool)
            .await
            .map_err(|e| format!("cannot create the password table: {e}"))?;
            Db::Sqlite(pool)
        };
        let per_minute = Quota::per_minute(options.attempts_per_minute.max(1));
        let limiter = limits::limiter(
            vec![Rule::per_ip("login-ip", per_minute)],
            options.redis.as_deref(),
            &format!("keygate:{}:login", site.name),
            &options.trusted_proxies,
        )?;
        let name_failures = limits::failed_auth(
            options.failures_per_name,
            auth_core::response::ErrorFormat::Flat,
            options.redis.as_deref(),
            &format!("keygate:{}:login-name", site.name),
            &TrustedProxies::none(),
        )?;
        // Unknown users are checked against this, so they cost the same.
        let dummy_hash = hash_password("no user has this password, it is random").await?;
        Ok(Self {
            site,
            db,
            dummy_hash: dummy_hash.into(),
            limiter,
            name_failures,
            audit,
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_PASSWORD_CHECKS)),
            admitted: Arc::new(tokio::sync::Semaphore::new(
                CONCURRENT_PASSWORD_CHECKS + options.password_check_queue,
            )),
            options,
        })
    }

    /// Sets `user`'s password (argon2id, random salt).
    pub async fn set_password(&self, user: &str, password: &str) -> Result<(), String> {
        if !self.site.users.contains(&user) {
            return Err(format!(
                "unknown user '{user}'; users: {}",
                self.site.users.join(", ")
            ));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(format!(
                "the password must have at least {MIN_PASSWORD} characters"
            ));
        }
        let hash = hash_password(password).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let upsert = format!(
            "INSERT INTO {}_passwords (user_id, hash, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
            self.site.name
        );
        let result = match &self.db {
            Db::Sqlite(pool) => sqlx::query(&upsert)
                .bind(user)
                .bind(&hash)
                .bind(now)
                .execute(pool)
                .await
                .map(drop),
            Db::Postgres(pool) => sqlx::query(&upsert)
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
        let select = format!(
            "SELECT hash FROM {}_passwords WHERE user_id = $1",
            self.site.name
        );
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(&select)
                    .bind(user)
                    .fetch_optional(pool)
                    .await
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(&select)
                    .bind(user)
                    .fetch_optional(pool)
                    .await
            }
            Db::Memory(map) => Ok(map.lock().get(user).cloned()),
        }
    }

    /// The stored hash when `password` is `user`'s; the same work whether
    /// or not the user exists or has a password.
    async fn check(&self, user: &str, password: &str) -> Result<Option<String>, CheckError> {
        // Admission first, without waiting: a full queue answers at once.
        let Ok(_admitted) = self.admitted.try_acquire() else {
            return Err(CheckError::Busy);
        };
        let stored = if self.site.users.contains(&user) {
            self.stored_hash(user).await.map_err(CheckError::Store)?
        } else {
            // The same query for names that do not exist.
            // (No NUL byte: PostgreSQL's TEXT refuses it, and an error here
            // would tell unknown names from wrong passwords.)
            self.stored_hash(" no such user ")
                .await
                .map_err(CheckError::Store)?;
            None
        };
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let password = password.to_owned();
        let Ok(_permit) = self.checks.acquire().await else {
            return Ok(None); // never closed
        };
        let checked = hash.clone();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&checked).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        Ok((known && matches).then_some(hash))
    }

    /// The address `name`'s failures are counted under in the per-name
    /// limiter (which counts per address): a unique local IPv6 /64 from a
    /// keyed hash of the lower-cased name, so no store sees the name.
    fn name_bucket(name: &str) -> IpAddr {
        let hash = blake3::Hasher::new_derive_key("keygate demo sign-in name bucket")
            .update(name.to_lowercase().as_bytes())
            .finalize();
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        octets[1..8].copy_from_slice(&hash.as_bytes()[..7]);
        IpAddr::from(octets)
    }

    fn now(&self) -> i64 {
        self.options.clock.now().unix_timestamp()
    }

    /// The session's user, if it is still valid: within its absolute
    /// lifetime, and opened with the user's current password. An ended
    /// session is emptied. 503 when a store is down.
    pub async fn signed_in(&self, session: &Session) -> Result<Option<SignedIn>, Response> {
        let record = match session.get::<SignedIn>(SESSION_ACCOUNT).await {
            Ok(Some(record)) if self.site.users.contains(&record.user.as_str()) => record,
            Ok(_) => return Ok(None),
            Err(e) => return Err(sessions_unavailable(e)),
        };
        let current = match self.stored_hash(&record.user).await {
            Ok(hash) => hash,
            Err(e) => {
                tracing::warn!(error = %e, "account database failed");
                return Err(sessions_unavailable(e));
            }
        };
        let same_password = current.is_some_and(|hash| {
            blake3::Hash::from_hex(&record.password).is_ok_and(|held| held == fingerprint(&hash))
        });
        let within_lifetime =
            self.now() - record.signed_in_at < self.options.absolute_lifetime.whole_seconds();
        if same_password && within_lifetime {
            return Ok(Some(record));
        }
        if let Err(e) = session.flush().await {
            return Err(sessions_unavailable(e));
        }
        Ok(None)
    }

    /// The stricter limits of password entries: every attempt from the
    /// client's address, and the failures of the name tried. `Err` is the
    /// 429 page, with `Retry-After`.
    async fn limit(&self, user: &str, client: Option<IpAddr>) -> Result<(), Response> {
        let mut probe = Request::builder()
            .method(Method::POST)
            .uri("/login")
            .body(())
            .unwrap_or_default();
        if let Some(ip) = client {
            probe.extensions_mut().insert(ClientIp(ip));
        }
        let refused = match self.limiter.check(&probe).await {
            Ok(_) => match self.name_failures.check(Self::name_bucket(user)).await {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            },
            Err(refused) => refused,
        };
        let retry = refused.headers().get(header::RETRY_AFTER).cloned();
        let wait = retry
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|s| format!(" Try again in {s} seconds."))
            .unwrap_or_default();
        let mut res = page(
            &self.site,
            refused.status(),
            &format!("Too many sign-in attempts.{wait}"),
            user,
        );
        if let Some(r) = retry {
            res.headers_mut().insert(header::RETRY_AFTER, r);
        }
        Err(res)
    }

    /// Counts a wrong password against the name tried.
    async fn record_failure(&self, user: &str) {
        self.name_failures
            .record_failure(Self::name_bucket(user))
            .await;
    }

    /// Whether `record`'s password entry is too old for a change to a key.
    fn needs_confirmation(&self, record: &SignedIn) -> bool {
        self.now() - record.confirmed_at >= self.options.reauthenticate_after.whole_seconds()
    }

    /// The sessions' table in the account database.
    fn sessions_table(&self) -> String {
        format!("{}_sessions", self.site.name)
    }

    /// Whether `user` is one of the site's users.
    pub fn is_user(&self, user: &str) -> bool {
        self.site.users.contains(&user)
    }

    /// `app` with `/` (to the site's home or `/login`), `/login`,
    /// `/login/confirm`, `/logout` and the sign-in page's files, behind
    /// cookie sessions; `app`'s handlers find these `Accounts` as an
    /// `Extension`.
    pub async fn mount(&self, app: Router) -> Result<Router, String> {
        let router = Router::new()
            .route("/", get(home))
            .route("/login", get(login_page).post(login))
            .route(CONFIRM, get(confirm_page).post(confirm))
            .route("/login.css", get(login_css))
            .route(ICON, get(icon))
            .route("/logout", post(logout))
            .merge(app)
            .layer(Extension(self.clone()));
        self.session_layer(router).await
    }

    /// "Sudo mode": `Ok(Some(user))` when the session's password was entered
    /// within [`SignInOptions::reauthenticate_after`], `Ok(None)` signed
    /// out, and `Err` with 403 `reauthentication_required` (and the
    /// `location` of the confirmation page) when it is older.
    pub async fn require_recent_password(
        &self,
        session: &Session,
    ) -> Result<Option<SignedIn>, Response> {
        match self.signed_in(session).await? {
            Some(record) if self.needs_confirmation(&record) => {
                let body = serde_json::json!({
                    "error": "reauthentication_required",
                    "message": "Confirm your password to make this change",
                    "location": CONFIRM,
                });
                let mut res = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Err(res)
            }
            other => Ok(other),
        }
    }

    /// The session layer over the same database.
    async fn session_layer(&self, router: Router) -> Result<Router, String> {
        let options = &self.options;
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                let store = SqliteStore::new(pool.clone())
                    .with_table_name(self.sessions_table())
                    .map_err(|e| e.to_string())?;
                store.migrate().await.map_err(no_session_table)?;
                persistent_sessions(router, store, options)
            }
            Db::Postgres(pool) => {
                let store = PostgresStore::new(pool.clone())
                    .with_table_name(self.sessions_table())
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
        let mut event = AuditEvent::new(OffsetDateTime::now_utc(), kind, Method::POST, "/login");
        // Only names of real users: a password typed into the name field
        // must not end up in the log.
        event.actor = known.then(|| user.into());
        event.reason = outcome.err();
        event.status = Some(status.as_u16());
        event.client_ip = client;
        event.user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(auth_core::audit::MAX_USER_AGENT).collect());
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

fn sessions_unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "session store failed");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Sessions are temporarily unavailable",
    )
}

/// 401 `unauthorized` in the flat error format: a JSON route without a
/// session.
pub fn sign_in_first() -> Response {
    json_error(StatusCode::UNAUTHORIZED, "unauthorized", "Sign in first")
}

fn json_error(status: StatusCode, code: &'static str, message: &'static str) -> Response {
    let err = auth_core::AuthError::custom(code, status, message);
    auth_core::response::ErrorFormat::Flat
        .render(&err)
        .map(axum::body::Body::from)
}

/// The page middleware for pages that need a signed-in user: a browser
/// without a session is sent to `/login`, for the page at the nested root
/// only (its JSON routes answer 401 on their own).
pub async fn page_needs_sign_in(
    Extension(accounts): Extension<Accounts>,
    session: Session,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == "/" || req.uri().path().is_empty() {
        match accounts.signed_in(&session).await {
            Ok(Some(_)) => {}
            Ok(None) => return Redirect::to("/login").into_response(),
            Err(res) => return res,
        }
    }
    next.run(req).await
}

async fn home(Extension(accounts): Extension<Accounts>, session: Session) -> Response {
    match accounts.signed_in(&session).await {
        Ok(Some(_)) => Redirect::to(accounts.site.home).into_response(),
        Ok(None) => Redirect::to("/login").into_response(),
        Err(res) => res,
    }
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

/// Whether the form was sent from this site (against login CSRF and forced
/// sign-out): the key router's rule, [`AllowedOrigins::allows_request`].
pub fn same_origin(headers: &HeaderMap) -> bool {
    AllowedOrigins::same_host().allows_request(headers, None)
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
    Extension(accounts): Extension<Accounts>,
    session: Session,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let user = form.user.trim().to_owned();
    let known = accounts.is_user(&user);
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
            &accounts.site,
            StatusCode::FORBIDDEN,
            "Sign-in refused: the form was not sent from this site.",
            &user,
        );
    }
    if let Err(refused) = accounts.limit(&user, client).await {
        accounts.audit_attempt(
            &user,
            known,
            client,
            &headers,
            Err(RejectReason::RateLimited),
            refused.status(),
        );
        return refused;
    }
    match accounts.check(&user, &form.password).await {
        Ok(Some(hash)) => {
            // A new session id at sign-in: no fixation.
            let now = accounts.now();
            let record = SignedIn {
                user: user.clone(),
                signed_in_at: now,
                confirmed_at: now,
                password: fingerprint(&hash).to_hex().to_string(),
            };
            let stored = async {
                session.cycle_id().await?;
                session.insert(SESSION_ACCOUNT, &record).await
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
                    &accounts.site,
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
            Redirect::to(accounts.site.home).into_response()
        }
        Ok(None) => {
            accounts.record_failure(&user).await;
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
                &accounts.site,
                StatusCode::UNAUTHORIZED,
                "Wrong user name or password.",
                &user,
            )
        }
        Err(CheckError::Busy) => {
            accounts.audit_attempt(
                &user,
                known,
                client,
                &headers,
                Err(RejectReason::RateLimited),
                StatusCode::SERVICE_UNAVAILABLE,
            );
            busy(page(
                &accounts.site,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is busy. Try again in a moment.",
                &user,
            ))
        }
        Err(CheckError::Store(e)) => {
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
                &accounts.site,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable.",
                &user,
            )
        }
    }
}

async fn login_page(Extension(accounts): Extension<Accounts>, session: Session) -> Response {
    match accounts.signed_in(&session).await {
        Ok(Some(_)) => Redirect::to(accounts.site.home).into_response(),
        _ => page(&accounts.site, StatusCode::OK, "", ""),
    }
}

/// The password form of a signed-in user whose session is too old for a
/// change to a key.
async fn confirm_page(Extension(accounts): Extension<Accounts>, session: Session) -> Response {
    match accounts.signed_in(&session).await {
        Ok(Some(record)) => confirm_form(&accounts.site, StatusCode::OK, "", &record.user),
        Ok(None) => Redirect::to("/login").into_response(),
        Err(res) => res,
    }
}

#[derive(Deserialize)]
struct ConfirmForm {
    password: String,
}

/// `POST /login/confirm`: the signed-in user's password again, under the
/// sign-in limits; on success the session may change keys for another
/// [`SignInOptions::reauthenticate_after`].
async fn confirm(
    Extension(accounts): Extension<Accounts>,
    session: Session,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let mut record = match accounts.signed_in(&session).await {
        Ok(Some(record)) => record,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(res) => return res,
    };
    let user = record.user.clone();
    let client = peer.map(|p| accounts.options.trusted_proxies.client_ip(p.ip(), &headers));
    let audit = |outcome, status| {
        accounts.audit_attempt(&user, true, client, &headers, outcome, status);
    };
    if !same_origin(&headers) {
        audit(Err(RejectReason::InvalidRequest), StatusCode::FORBIDDEN);
        return confirm_form(
            &accounts.site,
            StatusCode::FORBIDDEN,
            "Refused: the form was not sent from this site.",
            &user,
        );
    }
    if let Err(refused) = accounts.limit(&user, client).await {
        audit(Err(RejectReason::RateLimited), refused.status());
        return refused;
    }
    match accounts.check(&user, &form.password).await {
        Ok(Some(hash)) => {
            record.confirmed_at = accounts.now();
            record.password = fingerprint(&hash).to_hex().to_string();
            if let Err(e) = session.insert(SESSION_ACCOUNT, &record).await {
                audit(
                    Err(RejectReason::StoreUnavailable),
                    StatusCode::SERVICE_UNAVAILABLE,
                );
                return sessions_unavailable(e);
            }
            audit(Ok(()), StatusCode::SEE_OTHER);
            Redirect::to(accounts.site.home).into_response()
        }
        Ok(None) => {
            accounts.record_failure(&user).await;
            audit(Err(RejectReason::WrongSecret), StatusCode::UNAUTHORIZED);
            confirm_form(
                &accounts.site,
                StatusCode::UNAUTHORIZED,
                "Wrong password.",
                &user,
            )
        }
        Err(CheckError::Busy) => {
            audit(
                Err(RejectReason::RateLimited),
                StatusCode::SERVICE_UNAVAILABLE,
            );
            busy(confirm_form(
                &accounts.site,
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy. Try again in a moment.",
                &user,
            ))
        }
        Err(CheckError::Store(e)) => {
            audit(
                Err(RejectReason::StoreUnavailable),
                StatusCode::SERVICE_UNAVAILABLE,
            );
            sessions_unavailable(e)
        }
    }
}

async fn logout(
    Extension(accounts): Extension<Accounts>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return page(
            &accounts.site,
            StatusCode::FORBIDDEN,
            "Sign-out refused: the form was not sent from this site.",
            "",
        );
    }
    if let Err(e) = session.flush().await {
        // The session may still be valid: say so rather than pretend.
        tracing::warn!(error = %e, "session store failed at sign-out");
        return page(
            &accounts.site,
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-out failed: the session store is unavailable. Try again.",
            "",
        );
    }
    Redirect::to("/login").into_response()
}

const LOGIN_HTML: &str = include_str!("signin/login.html");
const CONFIRM_HTML: &str = include_str!("signin/confirm.html");
const LOGIN_CSS: &str = include_str!("signin/login.css");
/// The sign-in pages' icon.
const ICON: &str = "/login/icon.svg";

async fn icon() -> Response {
    let mut res = auth_axum::ui::ICON_SVG.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    res
}

/// `res` with `Retry-After: 1`: the password-check queue was full.
fn busy(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

fn error_html(error: &str) -> String {
    if error.is_empty() {
        String::new()
    } else {
        format!(
            r#"<p class="error" role="alert" id="login-error">{}</p>"#,
            escape(error)
        )
    }
}

fn page(site: &Site, status: StatusCode, error: &str, user: &str) -> Response {
    let users = site.users.join(", ");
    let html = LOGIN_HTML
        .replace("{{NAME}}", site.name)
        .replace("{{ERROR}}", &error_html(error))
        .replace("{{USER}}", &escape(user))
        .replace("{{USERS}}", &escape(&users));
    html_page(status, html)
}

fn confirm_form(site: &Site, status: StatusCode, error: &str, user: &str) -> Response {
    let html = CONFIRM_HTML
        .replace("{{NAME}}", site.name)
        .replace("{{ERROR}}", &error_html(error))
        .replace("{{USER}}", &escape(user))
        .replace("{{ACTION}}", CONFIRM);
    html_page(status, html)
}

fn html_page(status: StatusCode, html: String) -> Response {
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    auth_axum::ui::insert_security_headers(h);
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
pub async fn passwd_command(site: Site, db: &str, user: &str) -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    let audit: Arc<dyn AuditLog> = Arc::new(auth_core::audit::MemoryAuditLog::new(1));
    let accounts = Accounts::open(site, db, audit, SignInOptions::default()).await?;
    accounts.set_password(user, password).await?;
    eprintln!("password set for `{user}`, whose existing sessions have ended: sign in at /login");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every argon2 worker busy, `password_check_queue` checks wait;
    /// the next one is turned away at once instead of joining them.
    #[tokio::test]
    async fn the_queue_of_password_checks_is_bounded() {
        let audit: Arc<dyn AuditLog> = Arc::new(auth_core::audit::MemoryAuditLog::new(1));
        let options = SignInOptions {
            password_check_queue: 2,
            ..SignInOptions::default()
        };
        let site = Site {
            name: "test",
            users: &["alice"],
            home: "/",
        };
        let accounts = Accounts::open(site, "memory:", audit, options)
            .await
            .unwrap();
        accounts
            .set_password("alice", "a long enough password")
            .await
            .unwrap();
        // Every worker busy, with checks admitted as they would be.
        let running = accounts
            .admitted
            .clone()
            .acquire_many_owned(CONCURRENT_PASSWORD_CHECKS as u32)
            .await
            .unwrap();
        let workers = accounts
            .checks
            .clone()
            .acquire_many_owned(CONCURRENT_PASSWORD_CHECKS as u32)
            .await
            .unwrap();
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let accounts = accounts.clone();
                tokio::spawn(async move { accounts.check("alice", "a long enough password").await })
            })
            .collect();
        // Both admitted (and waiting for a worker) once no admission is left.
        while accounts.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            accounts.check("alice", "a long enough password").await,
            Err(CheckError::Busy)
        ));
        drop((running, workers));
        for w in waiting {
            assert!(matches!(w.await.unwrap(), Ok(Some(_))));
        }
        // Room again.
        assert!(matches!(accounts.check("alice", "wrong").await, Ok(None)));
    }
}
