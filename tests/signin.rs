//! Sign-in of `--example server` over real HTTP: cookie flags, the stricter
//! sign-in limit per address and per user name, the same answer for a wrong
//! user and a wrong password, every attempt audited, and the session-backed
//! key API's CSRF defences. API keys keep working on `/api/...`.

use keygate_demo::support;

use keygate_demo::server;

use std::{sync::Arc, time::Duration};

use auth_core::{
    audit::AuditOutcome, audit::AuditPage, audit::AuditQuery, clock::FakeClock, clock::WallClock,
    RejectReason, SecretHasher,
};
use reqwest::{header, redirect::Policy, StatusCode};
use serde_json::Value;
use server::signin::{Accounts, SignInOptions};
use support::{serve::spawn, Backend};

const PASSWORD: &str = "correct horse battery staple";

struct App {
    base: String,
    backend: Backend,
    accounts: Accounts,
    http: reqwest::Client,
    admin_token: String,
    _dir: tempfile::TempDir,
}

async fn app(options: SignInOptions) -> App {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let db = db.to_str().unwrap();
    let backend = Backend::open(db, SecretHasher::for_tests()).await.unwrap();
    let server = server::Server::new(&backend, &server::Options::default()).unwrap();
    let admin = server.bootstrap_admin().await.unwrap().unwrap();
    let accounts = Accounts::open(server::signin::SITE, db, backend.audit.clone(), options)
        .await
        .unwrap();
    accounts.set_password("alice", PASSWORD).await.unwrap();
    let router = server.router_with_sign_in(&accounts).await.unwrap();
    let addr = spawn(router).await;
    App {
        base: format!("http://{addr}"),
        backend,
        accounts,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        admin_token: admin.token.expose_secret().to_owned(),
        _dir: dir,
    }
}

impl App {
    async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/login", self.base))
            .header(header::ORIGIN, &self.base)
            .form(&[("user", user), ("password", password)])
            .send()
            .await
            .unwrap()
    }

    /// The newest hundred audit events, once the log has written them.
    async fn audit(&self) -> AuditPage {
        self.backend.audit.flush().await.unwrap();
        self.backend
            .audit
            .query(&AuditQuery::default().limit(100))
            .await
            .unwrap()
    }

    /// Signs alice in; her session cookie (`name=value`).
    async fn session(&self) -> String {
        self.session_of("alice", PASSWORD).await
    }

    /// Signs `user` in; the session cookie (`name=value`).
    async fn session_of(&self, user: &str, password: &str) -> String {
        let r = self.login(user, password).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/settings/tokens");
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        cookie.split(';').next().unwrap().to_owned()
    }
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_leads_to_the_settings_page() {
    let app = app(SignInOptions::default()).await;
    // A browser without a session is sent to /login, from / and from the page.
    for path in ["/", "/settings/tokens"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[header::LOCATION], "/login");
    }
    let page = app
        .http
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));

    let r = app.login("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        cookie.contains("Secure"),
        "Secure unless started for plain HTTP: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();

    for path in ["/", "/login"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .header(header::COOKIE, &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()[header::LOCATION], "/settings/tokens", "{path}");
    }
    let r = app
        .http
        .get(format!("{}/settings/tokens", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    // The key API under the session: alice's keys (none yet), and the form.
    let r = app
        .http
        .get(format!("{}/settings/tokens/api/options", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let options: Value = r.json().await.unwrap();
    assert_eq!(options["owner"], "alice");
    assert_eq!(
        options["scopes"][0]["description"],
        "Read nodes you have access to"
    );

    // Sign out: the session is gone.
    let r = app
        .http
        .post(format!("{}/logout", app.base))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::LOCATION], "/login");
    let r = app
        .http
        .get(format!("{}/settings/tokens/api", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Without `Secure` only when started for plain HTTP on purpose.
    let plain = self::app(SignInOptions {
        secure_cookies: false,
        ..SignInOptions::default()
    })
    .await;
    let r = plain.login("alice", PASSWORD).await;
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn wrong_user_and_wrong_password_look_the_same_and_are_audited() {
    let app = app(SignInOptions {
        attempts_per_minute: 50,
        ..SignInOptions::default()
    })
    .await;
    let wrong_password = app.login("alice", "not her password").await;
    let (s1, b1) = (
        wrong_password.status(),
        wrong_password.text().await.unwrap(),
    );
    let no_password = app.login("bob", "bob has no password").await;
    let (s2, b2) = (no_password.status(), no_password.text().await.unwrap());
    let no_user = app.login("mallory", "not her password").await;
    let (s3, b3) = (no_user.status(), no_user.text().await.unwrap());
    assert_eq!(
        (s1, s2, s3),
        (
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED
        )
    );
    let error = |b: &str| {
        b.split("id=\"login-error\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .map(str::to_owned)
    };
    assert_eq!(error(&b1).as_deref(), Some("Wrong user name or password."));
    assert_eq!(error(&b1), error(&b2));
    assert_eq!(error(&b1), error(&b3));
    app.session().await;

    // Every attempt is in the audit log; no password, and no unknown name.
    let page = app.audit().await;
    let logins: Vec<_> = page.events.iter().filter(|e| e.path == "/login").collect();
    assert_eq!(logins.len(), 4, "{logins:?}");
    let summary: Vec<_> = logins
        .iter()
        .rev()
        .map(|e| (e.actor.as_deref(), e.outcome, e.reason, e.status))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some("alice"),
                AuditOutcome::Failure,
                Some(RejectReason::WrongSecret),
                Some(401)
            ),
            (
                Some("bob"),
                AuditOutcome::Failure,
                Some(RejectReason::WrongSecret),
                Some(401)
            ),
            (
                None,
                AuditOutcome::Failure,
                Some(RejectReason::UnknownSubject),
                Some(401)
            ),
            (Some("alice"), AuditOutcome::Success, None, Some(303)),
        ]
    );
    let all = format!("{:?}", page.events);
    assert!(!all.contains("not her password") && !all.contains(PASSWORD));
    assert!(!all.contains("mallory"));
}

#[tokio::test]
async fn sign_in_is_limited_per_address() {
    let app = app(SignInOptions {
        attempts_per_minute: 3,
        ..SignInOptions::default()
    })
    .await;
    // Every attempt from an address counts: the fourth in a minute is
    // refused, even with the right password.
    for _ in 0..3 {
        assert_eq!(app.login("alice", "guess").await.status(), 401);
    }
    let r = app.login("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Too many sign-in attempts"));
    // Whatever name it tries next.
    let r = app.login("bob", "guess").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let page = app.audit().await;
    let limited = page
        .events
        .iter()
        .filter(|e| e.path == "/login" && e.reason == Some(RejectReason::RateLimited))
        .count();
    assert_eq!(limited, 2);
}

/// Options trusting the test's own address as a proxy, so that
/// `X-Forwarded-For` names the client.
fn behind_proxy(options: SignInOptions) -> SignInOptions {
    SignInOptions {
        trusted_proxies: auth_core::client_ip::TrustedProxies::from_nets([
            auth_core::client_ip::TrustedProxies::parse_net("127.0.0.1").unwrap(),
        ]),
        ..options
    }
}

impl App {
    async fn login_from(&self, client: &str, user: &str, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/login", self.base))
            .header(header::ORIGIN, &self.base)
            .header("x-forwarded-for", client)
            .form(&[("user", user), ("password", password)])
            .send()
            .await
            .unwrap()
    }
}

/// Wrong passwords for alice sent from other addresses do not lock her out
/// of her own: only failures count against a name, under a ceiling far
/// above what one address may try.
#[tokio::test]
async fn failures_from_elsewhere_do_not_lock_the_owner_out() {
    let app = app(behind_proxy(SignInOptions::default())).await;
    for i in 0..8 {
        let r = app
            .login_from(&format!("203.0.113.{i}"), "alice", "a guess")
            .await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    // Eight more from one address: its own limit (5 a minute) stops it.
    let mut limited = 0;
    for _ in 0..8 {
        if app
            .login_from("192.0.2.1", "alice", "a guess")
            .await
            .status()
            == 429
        {
            limited += 1;
        }
    }
    assert_eq!(limited, 3);
    let r = app.login_from("198.51.100.7", "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// Spraying one name from many addresses meets the per-name ceiling of
/// failures: past it, even the right password is refused (before any
/// password check), while other names are untouched.
#[tokio::test]
async fn spraying_one_name_from_many_addresses_meets_the_ceiling() {
    let app = app(behind_proxy(SignInOptions {
        failures_per_name: auth_ratelimit::Quota::per_hour(6).with_burst(6),
        ..SignInOptions::default()
    }))
    .await;
    // A success costs the name nothing.
    app.login_from("198.51.100.1", "alice", PASSWORD).await;
    for i in 0..6 {
        let r = app
            .login_from(&format!("203.0.113.{i}"), "ALICE", "a guess")
            .await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    let r = app.login_from("198.51.100.7", "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key(header::RETRY_AFTER));
    let r = app.login_from("198.51.100.8", "bob", "a guess").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_session_key_api_refuses_cross_origin_and_non_json_and_api_keys_still_work() {
    let app = app(SignInOptions::default()).await;
    let session = app.session().await;
    let create = |origin: Option<&str>, content_type: &str| {
        let mut req = app
            .http
            .post(format!("{}/settings/tokens/api", app.base))
            .header(header::COOKIE, &session)
            .header(header::CONTENT_TYPE, content_type)
            .body(r#"{"name":"from the page","scopes":["nodes:read"]}"#);
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        req.send()
    };
    let r = create(Some("https://evil.example"), "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "cross_origin_request");
    let r = create(Some(&app.base), "text/plain").await.unwrap();
    assert_eq!(r.status(), 415);
    let r = create(Some(&app.base), "application/json").await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    assert_eq!(created["owner"], "alice");

    // The new key and the admin's key work on the API, without cookies.
    for t in [token, app.admin_token.as_str()] {
        let r = app
            .http
            .get(format!("{}/api/nodes", app.base))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A session is not an API credential.
    let r = app
        .http
        .get(format!("{}/api/me", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Sign-in from another site is refused (login CSRF).
    let r = app
        .http
        .post(format!("{}/login", app.base))
        .header(header::ORIGIN, "https://evil.example")
        .form(&[("user", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
}

/// Passwords and sessions on PostgreSQL (the `--db` of a fleet): sign in,
/// and the session is found by a second server on the same database.
#[tokio::test]
async fn sessions_live_in_postgres_and_are_shared_by_instances() {
    let Some(url) = keygate_test_support::services::database_url(
        "sessions_live_in_postgres_and_are_shared_by_instances",
    ) else {
        return;
    };
    let backend = Backend::memory(SecretHasher::for_tests());
    let mut bases = Vec::new();
    for _ in 0..2 {
        let server = server::Server::new(&backend, &server::Options::default()).unwrap();
        let accounts = Accounts::open(
            server::signin::SITE,
            &url,
            backend.audit.clone(),
            SignInOptions::default(),
        )
        .await
        .unwrap();
        accounts.set_password("bob", PASSWORD).await.unwrap();
        let router = server.router_with_sign_in(&accounts).await.unwrap();
        bases.push(format!("http://{}", spawn(router).await));
    }
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{}/login", bases[0]))
        .header(header::ORIGIN, &bases[0])
        .form(&[("user", "bob"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let r = http
        .get(format!("{}/settings/tokens/api/options", bases[1]))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let options: Value = r.json().await.unwrap();
    assert_eq!(options["owner"], "bob");

    // On PostgreSQL too, an unknown name and a wrong password get one answer
    // (the lookup for unknown names must not fail where a real one succeeds).
    let mut answers = Vec::new();
    for user in ["bob", "mallory"] {
        let r = http
            .post(format!("{}/login", bases[0]))
            .header(header::ORIGIN, &bases[0])
            .form(&[("user", user), ("password", "not the password")])
            .send()
            .await
            .unwrap();
        answers.push((r.status(), r.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED, "{}", answers[0].1);
    assert_eq!(answers[1].0, StatusCode::UNAUTHORIZED, "{}", answers[1].1);
    // The form keeps the typed name; the rest of the page is the same.
    let [(_, bob), (_, mallory)] = &answers[..] else {
        unreachable!()
    };
    assert_eq!(*bob, mallory.replace("mallory", "bob"));
}

/// A change without a body carries no content type to refuse: the session
/// cookie alone, with neither `Origin` nor `Sec-Fetch-Site` (what a
/// `no-cors` fetch from another site can arrange), must not rotate or
/// revoke a key. The page's own requests name this site and pass.
#[tokio::test]
async fn a_body_less_change_with_the_cookie_alone_is_refused() {
    let app = app(SignInOptions::default()).await;
    let session = app.session().await;
    let r = app
        .http
        .post(format!("{}/settings/tokens/api", app.base))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, &app.base)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"name":"target","scopes":["nodes:read"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = format!("{}/settings/tokens/api/{id}/rotate", app.base);
    let delete = format!("{}/settings/tokens/api/{id}", app.base);
    for (method, url) in [
        (reqwest::Method::POST, &rotate),
        (reqwest::Method::DELETE, &delete),
    ] {
        let r = app
            .http
            .request(method.clone(), url)
            .header(header::COOKIE, &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "cross_origin_request");
        // Another site's fetch metadata, or an opaque origin, is no better.
        for (name, value) in [("sec-fetch-site", "cross-site"), ("origin", "null")] {
            let r = app
                .http
                .request(method.clone(), url)
                .header(header::COOKIE, &session)
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {name}");
        }
    }
    let keys: Value = app
        .http
        .get(format!("{}/settings/tokens/api", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "nothing was rotated: {keys:?}");
    assert_eq!(keys[0]["state"], "active");
    // The same revocation from the page (same-origin fetch metadata) works.
    let r = app
        .http
        .delete(&delete)
        .header(header::COOKIE, &session)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

impl App {
    /// `GET /settings/tokens/api` with `cookie`: 200 while the session lives.
    async fn list_status(&self, cookie: &str) -> StatusCode {
        self.http
            .get(format!("{}/settings/tokens/api", self.base))
            .header(header::COOKIE, cookie)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `POST /settings/tokens/api` from the page (same origin, JSON).
    async fn create(&self, cookie: &str, name: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/settings/tokens/api", self.base))
            .header(header::COOKIE, cookie)
            .header(header::ORIGIN, &self.base)
            .json(&serde_json::json!({ "name": name, "scopes": ["nodes:read"] }))
            .send()
            .await
            .unwrap()
    }
}

/// A manual clock for session ages, and options that use it.
fn clocked() -> (Arc<FakeClock>, SignInOptions) {
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let options = SignInOptions {
        clock: clock.clone() as Arc<dyn WallClock>,
        attempts_per_minute: 50,
        ..SignInOptions::default()
    };
    (clock, options)
}

/// The page's "Sign out" form in Chromium: the page's referrer policy made
/// the browser send `Origin: null`, with `Sec-Fetch-Site: same-origin`. That
/// pair signs out; `null` alone (a sandboxed frame elsewhere) does not. The
/// old cookie is refused afterwards.
#[tokio::test]
async fn sign_out_with_an_opaque_origin_counts_only_with_same_origin_fetch_metadata() {
    let app = app(SignInOptions::default()).await;
    let page = app
        .http
        .get(format!("{}/settings/tokens", app.base))
        .header(header::COOKIE, app.session().await)
        .send()
        .await
        .unwrap();
    // The page's own posts keep their origin.
    assert_eq!(page.headers()[header::REFERRER_POLICY], "same-origin");
    let session = app.session().await;
    let logout = |extra: &'static [(&'static str, &'static str)]| {
        let mut req = app
            .http
            .post(format!("{}/logout", app.base))
            .header(header::COOKIE, &session);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send()
    };
    for refused in [
        &[("origin", "null")][..],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[("origin", "https://evil.example")],
        &[],
    ] {
        let r = logout(refused).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{refused:?}");
        assert_eq!(app.list_status(&session).await, 200, "{refused:?}");
    }
    let r = logout(&[("origin", "null"), ("sec-fetch-site", "same-origin")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/login");
    assert_eq!(app.list_status(&session).await, 401);
}

/// `passwd` ends the user's sessions: each holds a fingerprint of the
/// password hash it was opened with. Other users' sessions live on.
#[tokio::test]
async fn a_new_password_ends_the_users_existing_sessions() {
    let app = app(SignInOptions {
        attempts_per_minute: 50,
        ..SignInOptions::default()
    })
    .await;
    app.accounts
        .set_password("bob", "bob's own long password")
        .await
        .unwrap();
    let alice = app.session().await;
    let bob = app.session_of("bob", "bob's own long password").await;
    assert_eq!(app.list_status(&alice).await, 200);
    app.accounts
        .set_password("alice", "a brand new password")
        .await
        .unwrap();
    assert_eq!(app.list_status(&alice).await, 401);
    let r = app
        .http
        .get(format!("{}/settings/tokens", app.base))
        .header(header::COOKIE, &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::LOCATION], "/login");
    assert_eq!(app.list_status(&bob).await, 200);
    // The new password opens a new session; the old one stays refused.
    let fresh = app.session_of("alice", "a brand new password").await;
    assert_eq!(app.list_status(&fresh).await, 200);
    assert_eq!(app.list_status(&alice).await, 401);
}

/// However busy, a session ends at its absolute lifetime.
#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime() {
    let (clock, options) = clocked();
    let lifetime = options.absolute_lifetime;
    let app = app(options).await;
    let session = app.session().await;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(lifetime.whole_seconds() as u64 / 3 - 1));
        assert_eq!(app.list_status(&session).await, 200);
    }
    clock.advance(Duration::from_secs(10));
    assert_eq!(app.list_status(&session).await, 401);
    let r = app
        .http
        .get(format!("{}/", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::LOCATION], "/login");
}

/// "Sudo mode": a session whose password is older than the limit may list
/// and revoke, but creating, rotating or editing a key sends it to confirm
/// the password first.
#[tokio::test]
async fn an_old_session_confirms_its_password_before_changing_keys() {
    let (clock, options) = clocked();
    let app = app(options).await;
    let session = app.session().await;
    let r = app.create(&session, "fresh").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(Duration::from_secs(15 * 60));

    let refused = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "reauthentication_required", "{body}");
        assert_eq!(body["location"], "/login/confirm");
    };
    refused(app.create(&session, "stale").await).await;
    let key = format!("{}/settings/tokens/api/{id}", app.base);
    let rotate = app
        .http
        .post(format!("{key}/rotate"))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, &app.base)
        .send()
        .await
        .unwrap();
    refused(rotate).await;
    let edit = app
        .http
        .patch(&key)
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, &app.base)
        .json(&serde_json::json!({ "name": "renamed" }))
        .send()
        .await
        .unwrap();
    refused(edit).await;
    assert_eq!(app.list_status(&session).await, 200);

    // The confirmation page: a wrong password is refused, the right one
    // opens another window for changes.
    let page = app
        .http
        .get(format!("{}/login/confirm", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Signed in as <strong>alice"));
    let confirm = |password: &'static str| {
        app.http
            .post(format!("{}/login/confirm", app.base))
            .header(header::COOKIE, &session)
            .header(header::ORIGIN, &app.base)
            .form(&[("password", password)])
            .send()
    };
    assert_eq!(confirm("not it").await.unwrap().status(), 401);
    refused(app.create(&session, "still stale").await).await;
    let r = confirm(PASSWORD).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/settings/tokens");
    assert_eq!(app.create(&session, "confirmed").await.status(), 201);
    // Revoking never needs it.
    clock.advance(Duration::from_secs(20 * 60));
    let r = app
        .http
        .delete(&key)
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Without a session the confirmation page sends the browser to sign in.
    let r = app
        .http
        .get(format!("{}/login/confirm", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::LOCATION], "/login");
}
