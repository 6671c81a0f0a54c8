//! Sign-in of `--example server` over real HTTP: cookie flags, the stricter
//! sign-in limit per address and per user name, the same answer for a wrong
//! user and a wrong password, every attempt audited, and the session-backed
//! key API's CSRF defences. API keys keep working on `/api/...`.

use keygate_demo::support;

use keygate_demo::server;

use auth_core::{AuditOutcome, AuditPage, AuditQuery, RejectReason, SecretHasher};
use reqwest::{header, redirect::Policy, StatusCode};
use serde_json::Value;
use server::signin::{Accounts, SignInOptions};
use support::{serve::spawn, Backend};

const PASSWORD: &str = "correct horse battery staple";

struct App {
    base: String,
    backend: Backend,
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
    let accounts = Accounts::open(db, backend.audit.clone(), options)
        .await
        .unwrap();
    accounts.set_password("alice", PASSWORD).await.unwrap();
    let router = server.router_with_sign_in(&accounts).await.unwrap();
    let addr = spawn(router).await;
    App {
        base: format!("http://{addr}"),
        backend,
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
        let r = self.login("alice", PASSWORD).await;
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
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
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

    // Secure cookies when asked (TLS in front).
    let tls = app_with_secure().await;
    let r = tls.login("alice", PASSWORD).await;
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
}

async fn app_with_secure() -> App {
    app(SignInOptions {
        secure_cookies: true,
        ..SignInOptions::default()
    })
    .await
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
async fn sign_in_is_limited_per_address_and_per_user_name() {
    let app = app(SignInOptions {
        attempts_per_minute: 3,
        ..SignInOptions::default()
    })
    .await;
    // Per user name: the fourth try at alice in a minute is refused, even
    // with the right password.
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
    // Per address: this client has now used its three attempts as well
    // (both rules count every attempt), so another name is refused too.
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
        let accounts = Accounts::open(&url, backend.audit.clone(), SignInOptions::default())
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
