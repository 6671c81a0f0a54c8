//! `cargo run --example session_keys`: users manage their own keys over
//! HTTP, signed in with a cookie session, and use them on the API.
//!
//! - `POST /login {"user": "alice", "password": "…"}` starts a session
//!   (tower-sessions; the password is printed at start). Your application's
//!   own sign-in goes here.
//! - `/account/keys` is `KeyManager`'s router behind the session: list,
//!   create (the token is in the answer, once), rotate, revoke, activity. The
//!   owner is the session's user (`SessionUser: KeyOwner`). Cookie sessions
//!   need cross-site request protection: a change that carries the cookie
//!   must name this site (`Origin`, or `Sec-Fetch-Site: same-origin`), as
//!   browsers do, and every change must be JSON.
//! - `/api/me` takes the keys made there, as a `Bearer` token.
//!
//! ```sh
//! curl -c jar -H 'content-type: application/json' -d '{"user":"alice","password":"…"}' localhost:3014/login
//! curl -b jar -H 'origin: http://localhost:3014' -H 'content-type: application/json' -d '{"name":"laptop"}' localhost:3014/account/keys
//! ```

use std::net::SocketAddr;

use auth_axum::{keys_router, AllowedOrigins, Auth, KeyManager, KeyOwner};
use auth_core::{store::open_store, Keys, Principal, ScopeSet, TokenPrefix};
use auth_ratelimit::{Quota, RateLimiter, RedisStore, Rule};
use auth_tower::AuthLayer;
use axum::{
    extract::FromRequestParts,
    http::{request::Parts, StatusCode},
    routing::{get, post},
    Json, Router,
};
use clap::Parser;
use rand::{distributions::Alphanumeric, Rng};
use tower_sessions::{MemoryStore, Session, SessionManagerLayer};

#[derive(Parser, Debug)]
struct Args {
    /// The key store: a SQLite file (created if missing) or a postgres:// URL
    #[arg(long, default_value = "data/session_keys.db")]
    db: String,
    /// Share the API's rate limit with other instances through this Redis
    #[arg(long)]
    redis: Option<String>,
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:3014")]
    addr: SocketAddr,
}

/// The signed-in user: the owner of the keys the router manages.
struct SessionUser {
    principal: Principal,
    scopes: ScopeSet,
}

impl<S: Send + Sync> FromRequestParts<S> for SessionUser {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        match session.get::<String>("user").await {
            Ok(Some(user)) => Ok(Self {
                principal: Principal::user(user),
                // What this user may put on a key; here, everything the API has.
                scopes: ScopeSet::parse(["profile:read"]).expect("valid scopes"),
            }),
            Ok(None) => Err((StatusCode::UNAUTHORIZED, "sign in first")),
            Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")),
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

#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = open_store(&args.db).await?;
    // The issuer and the verifier, from one hasher (argon2id defaults) and
    // one prefix, so they cannot disagree.
    let Keys {
        issuer, verifier, ..
    } = Keys::builder(store.keys.clone(), TokenPrefix::new("sk_")?).build();

    let password: String = rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    println!("sign in as alice with password {password}");
    let login = move |session: Session, Json(login): Json<Login>| async move {
        let ok = login.user == "alice"
            && constant_time_eq::constant_time_eq(login.password.as_bytes(), password.as_bytes());
        if !ok {
            return Err((StatusCode::UNAUTHORIZED, "wrong user or password"));
        }
        // A new session id at sign-in, so a planted cookie cannot be reused.
        session
            .cycle_id()
            .await
            .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable"))?;
        session
            .insert("user", login.user)
            .await
            .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable"))?;
        Ok("signed in\n")
    };

    let keys = KeyManager::new(issuer, store.audit.clone())
        .describe_scopes([("profile:read", "Read your profile")])
        .check_origin(AllowedOrigins::same_host());
    let account = Router::new()
        .route("/login", post(login))
        .nest("/account/keys", keys_router::<SessionUser, _>(keys))
        .layer(SessionManagerLayer::new(MemoryStore::default()).with_secure(false));
    let mut limits = RateLimiter::builder().rule(Rule::per_user("api", Quota::per_minute(60)));
    if let Some(url) = &args.redis {
        limits = limits.redis(RedisStore::open(url)?.with_prefix("session_keys"));
    }
    let limits = limits.build()?;
    let api = Router::new()
        .route("/api/me", get(|Auth(ctx): Auth| async move { Json(ctx) }))
        .layer(limits.layer())
        .layer(
            AuthLayer::builder(verifier)
                .audit(store.audit.clone())
                .build(),
        );

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = account.merge(api);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
