//! The settings page in a real browser: headless Chromium driven over
//! WebDriver (fantoccini + Debian's `chromium-driver`), against the `server`
//! example with sign-in, on a SQLite file.
//!
//! Without `chromium` and `chromedriver` the tests print "skipping ..." and
//! return, unless `CI=true`, where they fail. With `SAVE_SCREENSHOTS=1` they write
//! docs/screenshots/{list,new-token,activity}.png.

use keygate_demo::support;

use keygate_demo::server;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use auth_core::SecretHasher;
use fantoccini::{
    actions::{InputSource, KeyAction, KeyActions},
    key::Key,
    Client, ClientBuilder, Locator,
};
use keygate_test_support::{eventually, services};
use serde_json::{json, Value};
use server::signin::{Accounts, SignInOptions};
use support::{serve::spawn, Backend};

const PASSWORD: &str = "correct horse battery staple";

/// A chromedriver on a free port, ended on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, or says why not: `None` means skip (a failure
/// under `CI=true`).
async fn driver(test: &str) -> Option<Driver> {
    let [chromedriver, _] = services::programs(
        test,
        ["chromedriver", "chromium"],
        "apt-get install chromium chromium-driver",
    )?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Ready when its status says so.
    let http = reqwest::Client::new();
    eventually("chromedriver ready", || async {
        match http.get(format!("{}/status", driver.url)).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true),
            Err(_) => false,
        }
    })
    .await;
    Some(driver)
}

async fn browser(driver: &Driver) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": services::find_program("chromium").unwrap(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--force-prefers-reduced-motion",
                "--password-store=basic", "--no-first-run",
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// The server example with sign-in on a SQLite file, alice's password set.
struct App {
    base: String,
    backend: Backend,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let db = db.to_str().unwrap();
    let backend = Backend::open(db, SecretHasher::for_tests()).await.unwrap();
    let server = server::Server::new(&backend, &server::Options::default()).unwrap();
    // Served on plain HTTP: cookies without `Secure`, as with `--plain-http`.
    let options = SignInOptions {
        secure_cookies: false,
        ..SignInOptions::default()
    };
    let accounts = Accounts::open(server::signin::SITE, db, backend.audit.clone(), options)
        .await
        .unwrap();
    accounts.set_password("alice", PASSWORD).await.unwrap();
    let router = server.router_with_sign_in(&accounts).await.unwrap();
    let addr: SocketAddr = spawn(router).await;
    App {
        base: format!("http://{addr}"),
        backend,
        _dir: dir,
        http: reqwest::Client::new(),
    }
}

impl App {
    async fn api(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect(script)
}

/// Waits until `script` (an expression) is truthy in the page.
async fn until(c: &Client, script: &str) {
    let body = format!("return !!({script});");
    eventually(script, || async { js(c, &body).await == Value::Bool(true) }).await;
}

/// Whether the element `css` selects is on screen: it exists, takes up
/// room (no `display: none` on it or above it) and is not `visibility:
/// hidden`. Present in the page is not enough.
async fn visible(c: &Client, css: &str) -> bool {
    let script = format!(
        "const el = document.querySelector({css:?}); \
         if (!el) return false; \
         const r = el.getBoundingClientRect(); \
         return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden';"
    );
    js(c, &script).await == Value::Bool(true)
}

/// Asserts which of `shown` are visible and which of `not_shown` are not.
async fn assert_visible(c: &Client, state: &str, shown: &[&str], not_shown: &[&str]) {
    for css in shown {
        assert!(visible(c, css).await, "{state}: {css} should be visible");
    }
    for css in not_shown {
        assert!(
            !visible(c, css).await,
            "{state}: {css} should not be visible"
        );
    }
}

/// Clicks the element `css` selects.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of the element `css` selects.
async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn press(c: &Client, key: Key) {
    let k: char = key.into();
    let actions = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: k })
        .then(KeyAction::Up { value: k });
    c.perform_actions(actions).await.unwrap();
}

async fn type_text(c: &Client, text: &str) {
    let mut actions = KeyActions::new("keyboard".into());
    for ch in text.chars() {
        actions = actions
            .then(KeyAction::Down { value: ch })
            .then(KeyAction::Up { value: ch });
    }
    c.perform_actions(actions).await.unwrap();
}

async fn active_id(c: &Client) -> String {
    js(
        c,
        "return document.activeElement && document.activeElement.id || '';",
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

/// The browser's console since the last call (chromedriver's log endpoint).
async fn console(c: &Client, driver: &Driver) -> Vec<Value> {
    let id = c.session_id().await.unwrap().unwrap();
    let r: Value = reqwest::Client::new()
        .post(format!("{}/session/{id}/se/log", driver.url))
        .json(&json!({ "type": "browser" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["value"].as_array().cloned().unwrap_or_default()
}

async fn screenshot(c: &Client, name: &str) {
    if std::env::var("SAVE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let png = c.screenshot().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn sign_in(c: &Client, app: &App, password: &str) {
    c.goto(&format!("{}/", app.base)).await.unwrap();
    until(c, "document.getElementById('sign-in')").await;
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    c.find(Locator::Css("#user"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click(c, "#sign-in").await;
}

/// Signs in, then waits for the list to load.
async fn open_settings(c: &Client, app: &App) {
    sign_in(c, app, PASSWORD).await;
    until(c, "location.pathname === '/settings/tokens'").await;
    until(
        c,
        "document.getElementById('keys').getAttribute('aria-busy') === 'false'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_use_rotate_revoke_and_activity_in_a_browser() {
    let Some(driver) = driver("create_use_rotate_revoke_and_activity_in_a_browser").await else {
        return;
    };
    let app = app().await;
    let c = browser(&driver).await;

    // Sign in: a wrong password first (same page, an error), then the right one.
    sign_in(&c, &app, "not the password").await;
    until(&c, "document.getElementById('login-error')").await;
    let error = text_of(&c, "#login-error").await;
    assert_eq!(error, "Wrong user name or password.");
    // The 401 of that answer is the only thing in the console so far.
    for entry in console(&c, &driver).await {
        let message = entry["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("/login") && message.contains("401"),
            "{entry}"
        );
    }
    open_settings(&c, &app).await;
    let empty = text_of(&c, "#keys .empty").await;
    assert!(empty.contains("no API keys yet"), "{empty}");

    // Create a key with two scopes; read the token from the page.
    click(&c, "#new-key").await;
    until(
        &c,
        "document.querySelector('#scope-list input[value=\"nodes:write\"]')",
    )
    .await;
    assert_eq!(active_id(&c).await, "key-name");
    c.find(Locator::Css("#key-name"))
        .await
        .unwrap()
        .send_keys("ci deploy")
        .await
        .unwrap();
    for scope in ["nodes:read", "nodes:write"] {
        c.find(Locator::Css(&format!(
            "#scope-list input[value=\"{scope}\"]"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    }
    // The descriptions come from the KeyManager.
    let scopes_text = text_of(&c, "#scope-list").await;
    assert!(
        scopes_text.contains("Create, rotate and revoke API tokens"),
        "{scopes_text}"
    );
    click(&c, "#create-submit").await;
    until(
        &c,
        "document.getElementById('token-value').textContent.length > 0",
    )
    .await;
    let token = text_of(&c, "#token-value").await;
    assert!(token.starts_with("st_"), "{token}");
    let warning = text_of(&c, "#token-warning").await;
    assert!(warning.contains("will not be shown again"));
    screenshot(&c, "new-token").await;

    // The token works on the API, with exactly the two scopes.
    let (status, me) = app.api("/api/me", &token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["scopes"], json!(["nodes:read", "nodes:write"]));
    let key_id = me["key_id"].as_str().unwrap().to_owned();
    assert_eq!(app.api("/api/nodes", &token).await.0, 200);

    // Closed: the token is in neither the page nor the list.
    click(&c, "#token-dialog [data-close]").await;
    until(&c, "!document.getElementById('token-dialog').open").await;
    until(&c, "document.querySelector('#keys li.key')").await;
    until(
        &c,
        "document.getElementById('token-value').textContent === ''",
    )
    .await;
    let source = c.source().await.unwrap();
    assert!(
        !source.contains(&token),
        "the token is still in the page: {}",
        source
            .find(&token)
            .map(|i| &source[i.saturating_sub(300)..(i + 300).min(source.len())])
            .unwrap_or_default()
    );
    let secret_tail = &token[token.len() - 20..];
    assert!(!source.contains(secret_tail));
    let list_text = text_of(&c, "#keys").await;
    assert!(
        list_text.contains("ci deploy") && list_text.contains("nodes:write"),
        "{list_text}"
    );
    assert!(!list_text.contains(&token));
    screenshot(&c, "list").await;

    // Activity: the request just made, and the chart (events are written
    // in batches: write out what is queued first).
    app.backend.audit.flush().await.unwrap();
    let key = format!("#keys li.key[data-id=\"{key_id}\"]");
    c.find(Locator::Css(&format!("{key} [data-action=\"activity\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "document.querySelector('#events table')").await;
    until(
        &c,
        "[...document.querySelectorAll('#events td')].some(td => td.textContent === '/api/nodes')",
    )
    .await;
    until(
        &c,
        "document.querySelector('#usage-chart rect.bar.success')",
    )
    .await;
    let label = js(
        &c,
        "return document.getElementById('usage-chart').getAttribute('aria-label');",
    )
    .await;
    assert!(label.as_str().unwrap().contains("2 success"), "{label}");
    screenshot(&c, "activity").await;

    // Disable: the token is refused from its next request; enable again.
    click(&c, &format!("{key} [data-action=\"toggle\"]")).await;
    until(&c, "document.getElementById('confirm-dialog').open").await;
    click(&c, "#confirm-ok").await;
    until(
        &c,
        &format!("document.querySelector('{key} .badge').textContent === 'Disabled'"),
    )
    .await;
    assert_eq!(app.api("/api/nodes", &token).await.0, 401);
    assert_eq!(
        text_of(&c, &format!("{key} [data-action=\"toggle\"]")).await,
        "Enable"
    );
    click(&c, &format!("{key} [data-action=\"toggle\"]")).await;
    until(
        &c,
        &format!("document.querySelector('{key} .badge').textContent === 'Active'"),
    )
    .await;
    assert_eq!(app.api("/api/nodes", &token).await.0, 200);

    // Rename through the edit dialog.
    click(&c, &format!("{key} [data-action=\"edit\"]")).await;
    until(&c, "document.getElementById('edit-dialog').open").await;
    js(
        &c,
        "document.getElementById('edit-name').value = 'renamed in the browser';",
    )
    .await;
    click(&c, "#edit-submit").await;
    until(
        &c,
        &format!(
            "document.querySelector('{key} .key-name').textContent === 'renamed in the browser'"
        ),
    )
    .await;

    // Rotate with the default grace (1 hour): both tokens work for now.
    c.find(Locator::Css(&format!("{key} [data-action=\"rotate\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "document.getElementById('confirm-dialog').open").await;
    assert_eq!(
        js(&c, "return document.getElementById('grace').value;").await,
        json!("3600")
    );
    click(&c, "#confirm-ok").await;
    until(
        &c,
        "document.getElementById('token-value').textContent.length > 0",
    )
    .await;
    let rotated = text_of(&c, "#token-value").await;
    assert_ne!(rotated, token);
    click(&c, "#token-dialog [data-close]").await;
    assert_eq!(app.api("/api/nodes", &token).await.0, 200);
    let (status, me) = app.api("/api/me", &rotated).await;
    assert_eq!(status, 200);
    let new_id = me["key_id"].as_str().unwrap().to_owned();
    until(
        &c,
        &format!("document.querySelector('#keys li.key[data-id=\"{new_id}\"]')"),
    )
    .await;
    let old_badge = c
        .find(Locator::Css(&format!("{key} .badge")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(old_badge.starts_with("Rotation grace"), "{old_badge}");

    // Revoke the replacement: its token is refused at once.
    c.find(Locator::Css(&format!(
        "#keys li.key[data-id=\"{new_id}\"] [data-action=\"revoke\"]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until(&c, "document.getElementById('confirm-dialog').open").await;
    click(&c, "#confirm-ok").await;
    until(&c, &format!(
        "document.querySelector('#keys li.key[data-id=\"{new_id}\"] .badge').textContent === 'Revoked'"
    ))
    .await;
    assert_eq!(app.api("/api/nodes", &rotated).await.0, 401);

    // Nothing went wrong in the console on the settings page.
    let errors: Vec<Value> = console(&c, &driver)
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console: {errors:?}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_can_be_created_with_the_keyboard_alone() {
    let Some(driver) = driver("a_key_can_be_created_with_the_keyboard_alone").await else {
        return;
    };
    let app = app().await;
    let c = browser(&driver).await;
    open_settings(&c, &app).await;

    // Tab to "New key", open it with Enter.
    for _ in 0..10 {
        if active_id(&c).await == "new-key" {
            break;
        }
        press(&c, Key::Tab).await;
    }
    assert_eq!(active_id(&c).await, "new-key");
    press(&c, Key::Enter).await;
    until(&c, "document.getElementById('create-dialog').open").await;
    until(&c, "document.querySelector('#scope-list input')").await;
    assert_eq!(active_id(&c).await, "key-name");
    type_text(&c, "keyboard").await;
    // Tab to the first scope and tick it with Space.
    press(&c, Key::Tab).await;
    assert_eq!(active_id(&c).await, "scope-0");
    type_text(&c, " ").await;
    // Focus stays in the dialog: Tab around until "Create key", then Enter.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let id = active_id(&c).await;
        if id == "create-submit" {
            break;
        }
        seen.push(id);
        press(&c, Key::Tab).await;
    }
    let inside = js(
        &c,
        "return document.getElementById('create-dialog').contains(document.activeElement);",
    )
    .await;
    assert_eq!(inside, json!(true), "focus left the dialog: {seen:?}");
    assert_eq!(active_id(&c).await, "create-submit");
    press(&c, Key::Enter).await;
    until(
        &c,
        "document.getElementById('token-value').textContent.length > 0",
    )
    .await;
    let token = text_of(&c, "#token-value").await;
    assert_eq!(active_id(&c).await, "copy-token");
    // Escape closes the dialog; the token is gone; focus returns to the page.
    press(&c, Key::Escape).await;
    until(&c, "!document.getElementById('token-dialog').open").await;
    assert_eq!(
        js(
            &c,
            "return document.getElementById('token-value').textContent;"
        )
        .await,
        json!("")
    );
    until(&c, "document.querySelector('#keys li.key')").await;
    let list = text_of(&c, "#keys").await;
    assert!(
        list.contains("keyboard") && list.contains("nodes:read"),
        "{list}"
    );
    let (status, me) = app.api("/api/me", &token).await;
    assert_eq!(status, 200);
    assert_eq!(me["scopes"], json!(["nodes:read"]));

    // At phone width nothing overflows sideways, and the actions stay reachable.
    c.set_window_size(390, 844).await.unwrap();
    until(&c, "window.innerWidth <= 400").await;
    let overflow = js(
        &c,
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    )
    .await;
    assert_eq!(overflow, json!(0), "the page scrolls sideways at 390 px");
    let revoke = js(
        &c,
        "const r = document.querySelector('#keys [data-action=\"revoke\"]').getBoundingClientRect(); return r.right <= window.innerWidth && r.width > 0;",
    )
    .await;
    assert_eq!(revoke, json!(true));
    c.close().await.unwrap();
}

use keygate_demo::pod;

/// The pod has no sign-in: its page asks for a key holding `keys.manage`,
/// keeps it in the tab, and offers the pod's scopes with their descriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_page_works_with_a_management_key() {
    let Some(driver) = driver("the_pod_page_works_with_a_management_key").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pod.db");
    let backend = Backend::open(db.to_str().unwrap(), SecretHasher::for_tests())
        .await
        .unwrap();
    let app = pod::Pod::new(&backend, &pod::Options::default()).unwrap();
    let manager = backend
        .issuer(pod::PREFIX)
        .issue(auth_core::NewKey::new(
            auth_core::Principal::user("alice"),
            "settings",
            auth_core::ScopeSet::parse(["keys.manage", "read:entities", "skills.invoke"]).unwrap(),
        ))
        .await
        .unwrap();
    let base = format!("http://{}", spawn(app.router()).await);
    let c = browser(&driver).await;
    c.goto(&format!("{base}{}", pod::SETTINGS)).await.unwrap();
    until(&c, "document.getElementById('bearer-token')").await;
    c.find(Locator::Css("#bearer-token"))
        .await
        .unwrap()
        .send_keys(manager.token.expose_secret())
        .await
        .unwrap();
    click(&c, ".bearer button").await;
    until(&c, "document.querySelector('#keys li.key')").await;
    until(
        &c,
        "document.getElementById('signed-in-as').textContent === 'Signed in as alice'",
    )
    .await;

    click(&c, "#new-key").await;
    until(
        &c,
        "document.querySelectorAll('#scope-list input').length === 9",
    )
    .await;
    let scopes = text_of(&c, "#scope-list").await;
    assert!(
        scopes.contains("Read via Hub Protocol: entities, documents, search, memory"),
        "{scopes}"
    );
    // Only what the management key holds can be granted.
    let disabled = js(
        &c,
        "return [...document.querySelectorAll('#scope-list input:disabled')].length;",
    )
    .await;
    assert_eq!(disabled, json!(6));
    c.find(Locator::Css("#key-name"))
        .await
        .unwrap()
        .send_keys("claude code")
        .await
        .unwrap();
    for scope in ["read:entities", "skills.invoke"] {
        c.find(Locator::Css(&format!(
            "#scope-list input[value=\"{scope}\"]"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    }
    click(&c, "#expiry option[value=\"never\"]").await;
    click(&c, "#create-submit").await;
    until(
        &c,
        "document.getElementById('token-value').textContent.length > 0",
    )
    .await;
    let token = text_of(&c, "#token-value").await;
    assert!(token.starts_with("sk_live_"), "{token}");
    let r = reqwest::Client::new()
        .get(format!("{base}/api/external/skills"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let errors: Vec<Value> = console(&c, &driver)
        .await
        .into_iter()
        .filter(|e| {
            e["level"] == "SEVERE" && !e["message"].as_str().unwrap_or_default().contains(" 401 ")
        })
        .collect();
    assert!(errors.is_empty(), "console: {errors:?}");
    c.close().await.unwrap();
}

use keygate_demo::tools;

/// The tools demo's "regenerate my key" page, behind the password sign-in: the
/// page shows the signed-in user's controls only (no token form), the old
/// token stops working, the new one (shown once) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_page_regenerates_my_token() {
    let Some(driver) = driver("the_tools_page_regenerates_my_token").await else {
        return;
    };
    let opened = tools::store::open("memory:", SecretHasher::for_tests())
        .await
        .unwrap();
    let app = tools::Tools::new(
        &opened.backend,
        opened.secrets,
        auth_core::jwt::MasterKey::generate(),
        &tools::Options::default(),
    )
    .unwrap();
    let options = SignInOptions {
        secure_cookies: false,
        ..SignInOptions::default()
    };
    let accounts = keygate_demo::support::signin::Accounts::open(
        tools::page::SITE,
        "memory:",
        opened.backend.audit.clone(),
        options,
    )
    .await
    .unwrap();
    accounts.set_password("u1", PASSWORD).await.unwrap();
    let old = app.jwt.token_for("u1").await.unwrap();
    let base = format!(
        "http://{}",
        spawn(app.router_with_sign_in(&accounts).await.unwrap()).await
    );
    let me = |token: String| {
        let url = format!("{base}/api/me");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(old.clone()).await, 200);

    let c = browser(&driver).await;
    c.goto(&format!("{base}{}", tools::page::PATH))
        .await
        .unwrap();
    until(&c, "document.getElementById('sign-in')").await;
    c.find(Locator::Css("#user"))
        .await
        .unwrap()
        .send_keys("u1")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, "#sign-in").await;
    until(
        &c,
        "document.getElementById('signed-in-as') && document.getElementById('signed-in-as').textContent === 'Signed in as u1'",
    )
    .await;
    screenshot(&c, "tools-signed-in").await;
    assert_visible(
        &c,
        "signed in",
        &["#regenerate", "#sign-out"],
        &["#current-token", "#confirm-dialog", "#token-dialog"],
    )
    .await;
    click(&c, "#regenerate").await;
    until(&c, "document.getElementById('confirm-dialog').open").await;
    assert_visible(&c, "dialog open", &["#confirm-dialog", "#confirm-ok"], &[]).await;
    click(&c, "#confirm-ok").await;
    until(
        &c,
        "document.getElementById('token-value').textContent.length > 0",
    )
    .await;
    let new = text_of(&c, "#token-value").await;
    assert_ne!(new, old);
    click(&c, "#token-dialog [data-close]").await;
    until(&c, "!document.getElementById('token-dialog').open").await;
    until(
        &c,
        "document.getElementById('token-value').textContent === ''",
    )
    .await;
    assert!(!c.source().await.unwrap().contains(&new));
    assert_eq!(me(old).await, 401);
    assert_eq!(me(new).await, 200);
    let errors: Vec<Value> = console(&c, &driver)
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console: {errors:?}");
    // Signing out with the page's button ends the session.
    click(&c, "#sign-out").await;
    until(&c, "location.pathname === '/login'").await;
    c.goto(&format!("{base}{}", tools::page::PATH))
        .await
        .unwrap();
    until(&c, "location.pathname === '/login'").await;
    c.close().await.unwrap();
}

/// Signing out with the page's own button (a form post, which Chromium sends
/// with the page's referrer policy) ends the session: the old cookie is
/// refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_with_the_button_ends_the_session() {
    let Some(driver) = driver("signing_out_with_the_button_ends_the_session").await else {
        return;
    };
    let app = app().await;
    let c = browser(&driver).await;
    open_settings(&c, &app).await;
    let cookie = c.get_named_cookie("keygate_session").await.unwrap();
    let cookie = format!("keygate_session={}", cookie.value());
    let list = |cookie: String| {
        let url = format!("{}/settings/tokens/api", app.base);
        let http = app.http.clone();
        async move {
            http.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(list(cookie.clone()).await, 200);
    assert_visible(&c, "signed in", &["nav form button"], &[]).await;
    click(&c, "nav form button").await;
    until(&c, "location.pathname === '/login'").await;
    until(&c, "document.getElementById('sign-in')").await;
    let page = c.source().await.unwrap();
    assert!(!page.contains("refused"), "{page}");
    assert_eq!(list(cookie).await, 401);
    // The browser is signed out too.
    c.goto(&format!("{}/settings/tokens", app.base))
        .await
        .unwrap();
    until(&c, "location.pathname === '/login'").await;
    c.close().await.unwrap();
}

/// The settings page in each state shows only the controls that apply: no
/// empty "External id" or "Metadata" on a card without them, the custom date
/// only when chosen, the dialog over the page when open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_page_shows_only_the_controls_that_apply() {
    let Some(driver) = driver("the_server_page_shows_only_the_controls_that_apply").await else {
        return;
    };
    let app = app().await;
    app.backend
        .issuer(server::PREFIX)
        .issue(auth_core::NewKey::new(
            auth_core::Principal::user("alice"),
            "plain key",
            auth_core::ScopeSet::parse(["nodes:read"]).unwrap(),
        ))
        .await
        .unwrap();
    let c = browser(&driver).await;
    open_settings(&c, &app).await;
    until(&c, "document.querySelector('#keys li.key')").await;
    screenshot(&c, "server-signed-in").await;
    assert_visible(
        &c,
        "signed in",
        &[
            "#new-key",
            "nav form button",
            "#keys li.key .key-name",
            "#keys li.key .chips li",
        ],
        &[
            "#keys li.key .external",
            "#keys li.key .meta",
            "#activity",
            "#create-dialog",
            "#token-dialog",
        ],
    )
    .await;
    click(&c, "#new-key").await;
    until(&c, "document.getElementById('create-dialog').open").await;
    screenshot(&c, "server-dialog").await;
    assert_visible(
        &c,
        "dialog open",
        &["#create-dialog", "#key-name", "#create-submit"],
        &["#custom-date-field", "#token-dialog"],
    )
    .await;
    click(&c, "#expiry option[value=\"custom\"]").await;
    assert_visible(&c, "custom date", &["#custom-date-field"], &[]).await;
    c.close().await.unwrap();
}

/// The pod page (bearer sign-in): before a key is given, only the sign-in
/// form; after, "New key" and "Forget key" and the list; forgetting the key
/// goes back. The scope chips of a card stay one line high beside its five
/// action buttons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_page_shows_key_controls_only_once_signed_in() {
    let Some(driver) = driver("the_pod_page_shows_key_controls_only_once_signed_in").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pod.db");
    let backend = Backend::open(db.to_str().unwrap(), SecretHasher::for_tests())
        .await
        .unwrap();
    let app = pod::Pod::new(&backend, &pod::Options::default()).unwrap();
    let manager = backend
        .issuer(pod::PREFIX)
        .issue(auth_core::NewKey::new(
            auth_core::Principal::user("alice"),
            "settings",
            auth_core::ScopeSet::parse(["keys.manage", "read:entities", "skills.invoke"]).unwrap(),
        ))
        .await
        .unwrap();
    let base = format!("http://{}", spawn(app.router()).await);
    let c = browser(&driver).await;
    c.goto(&format!("{base}{}", pod::SETTINGS)).await.unwrap();
    until(&c, "document.getElementById('bearer-token')").await;
    screenshot(&c, "pod-signed-out").await;
    assert_visible(
        &c,
        "signed out",
        &["#bearer-token", ".bearer button"],
        &["#new-key", "#forget-bearer", "#create-dialog"],
    )
    .await;
    c.find(Locator::Css("#bearer-token"))
        .await
        .unwrap()
        .send_keys(manager.token.expose_secret())
        .await
        .unwrap();
    click(&c, ".bearer button").await;
    until(&c, "document.querySelector('#keys li.key')").await;
    screenshot(&c, "pod-signed-in").await;
    assert_visible(
        &c,
        "signed in",
        &["#new-key", "#forget-bearer", "#keys li.key .chips li"],
        &["#bearer-token", "#keys li.key .external", "#create-dialog"],
    )
    .await;
    // One line of text per chip, however tall the card's action column is:
    // heights in ems of the chip's font.
    let heights = js(
        &c,
        "return [...document.querySelectorAll('#keys .chips li')].map(li => \
         li.getBoundingClientRect().height / parseFloat(getComputedStyle(li).fontSize));",
    )
    .await;
    let heights = heights.as_array().unwrap();
    assert!(!heights.is_empty());
    for h in heights {
        let h = h.as_f64().unwrap_or(f64::MAX);
        assert!(h < 2.5, "a chip {h} ems high");
    }
    click(&c, "#new-key").await;
    until(&c, "document.getElementById('create-dialog').open").await;
    assert_visible(&c, "dialog open", &["#create-dialog", "#key-name"], &[]).await;
    click(&c, "#create-dialog [data-close]").await;
    until(&c, "!document.getElementById('create-dialog').open").await;
    click(&c, "#forget-bearer").await;
    until(&c, "document.getElementById('bearer-token')").await;
    assert_visible(
        &c,
        "forgotten",
        &["#bearer-token"],
        &["#new-key", "#forget-bearer"],
    )
    .await;
    c.close().await.unwrap();
}

/// Swagger UI (feature `openapi-ui`) in a real browser: it renders every
/// documented operation under its Content-Security-Policy, the console
/// reports nothing refused, and every file it loaded came from this origin.
#[cfg(feature = "openapi-ui")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_the_document_under_its_csp() {
    use axum::{routing::get, Json, Router};
    use keygate::auth_axum::openapi;

    let Some(driver) = driver("swagger_ui_renders_the_document_under_its_csp").await else {
        return;
    };
    let router = Router::new()
        .route(
            "/openapi.json",
            get(|| async { Json(openapi::document("/api/tokens", Some("/admin/keys"))) }),
        )
        .merge(openapi::swagger_ui("/docs", "/openapi.json"));
    let base = format!("http://{}", spawn(router).await);
    let c = browser(&driver).await;
    c.goto(&format!("{base}/docs")).await.unwrap();
    // The key router's 9 operations and the admin router's 3.
    until(&c, "document.querySelectorAll('.opblock').length === 12").await;
    let foreign = js(
        &c,
        &format!(
            "return performance.getEntriesByType('resource').map(e => e.name)\
             .filter(n => !n.startsWith('{base}/'))"
        ),
    )
    .await;
    assert_eq!(foreign, json!([]));
    screenshot(&c, "swagger-ui").await;
    let refused: Vec<Value> = console(&c, &driver)
        .await
        .into_iter()
        .filter(|l| {
            let m = l["message"].as_str().unwrap_or_default();
            m.contains("Content Security Policy") || m.contains("Refused")
        })
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    c.close().await.unwrap();
}
