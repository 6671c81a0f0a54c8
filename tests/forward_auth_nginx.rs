//! Forward auth behind a real nginx: `auth_request` asks the
//! `auth_axum::forward_auth` router about every request for a tiny
//! upstream, and the keys, route scopes, rate limits, revocations and the
//! audit log of the app's own stack apply to it.
//!
//! Needs Debian's `nginx` on `PATH` (skipped with a message otherwise;
//! failed under `CI=true`, where `.ci/run` installs it). The test starts
//! its own nginx on a free port with its own configuration.

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Arc};

use auth_axum::{
    connect_info_ip,
    forward_auth::{self, ForwardAuthLayer},
    RequireScopeLayer,
};
use auth_core::{
    audit::AuditLog, audit::AuditQuery, audit::MemoryAuditLog, client_ip::TrustedProxies, Keys,
    MemoryKeyStore, NewKey, Principal, ScopeSet, TokenPrefix,
};
use auth_ratelimit::{HeaderStyle, Quota, RateLimiter, Rule};
use auth_tower::AuthLayer;
use axum::{http::HeaderMap, routing::any, Json, Router};
use keygate_test_support::{eventually, fixtures, services};
use reqwest::StatusCode;
use serde_json::Value;

/// Serves `app` on a free local port (with the peer address recorded).
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// The upstream: answers with the path and the `x-auth-*` headers it got.
async fn upstream(uri: axum::http::Uri, headers: HeaderMap) -> Json<Value> {
    let auth: HashMap<String, String> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-auth-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    Json(serde_json::json!({ "path": uri.path(), "auth": auth }))
}

/// nginx's configuration: `/` behind `auth_request`, refusals relayed with
/// their status, headers and body.
fn nginx_conf(dir: &Path, port: u16, auth: SocketAddr, app: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_keygate;
            auth_request_set $auth_key_id $upstream_http_x_auth_key_id;
            auth_request_set $auth_user $upstream_http_x_auth_user;
            auth_request_set $auth_effective_user $upstream_http_x_auth_effective_user;
            auth_request_set $auth_scopes $upstream_http_x_auth_scopes;
            auth_request_set $auth_workspace $upstream_http_x_auth_workspace;
            auth_request_set $auth_status $upstream_status;
            auth_request_set $auth_error $upstream_http_x_auth_error;
            auth_request_set $auth_challenge $upstream_http_www_authenticate;
            auth_request_set $auth_retry_after $upstream_http_retry_after;
            auth_request_set $auth_ratelimit $upstream_http_ratelimit;
            auth_request_set $auth_ratelimit_policy $upstream_http_ratelimit_policy;
            # nginx answers 500 for any refusal but 401 and 403 (a 429 included).
            error_page 401 403 500 = @refused;
            # Set, never passed through: a client cannot name itself.
            proxy_set_header X-Auth-Key-Id $auth_key_id;
            proxy_set_header X-Auth-User $auth_user;
            proxy_set_header X-Auth-Effective-User $auth_effective_user;
            proxy_set_header X-Auth-Scopes $auth_scopes;
            proxy_set_header X-Auth-Workspace $auth_workspace;
            proxy_pass http://{app};
        }}
        location = /_keygate {{
            internal;
            proxy_pass http://{auth};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        location @refused {{
            default_type application/json;
            add_header WWW-Authenticate $auth_challenge always;
            add_header Retry-After $auth_retry_after always;
            add_header RateLimit $auth_ratelimit always;
            add_header RateLimit-Policy $auth_ratelimit_policy always;
            if ($auth_status = 401) {{ return 401 $auth_error; }}
            if ($auth_status = 403) {{ return 403 $auth_error; }}
            if ($auth_status = 429) {{ return 429 $auth_error; }}
            return 503 '{{"error":"unavailable"}}';
        }}
    }}
}}
"#
    )
}

/// A running nginx, stopped when dropped.
struct Nginx {
    child: std::sync::Mutex<std::process::Child>,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn start_nginx(bin: &Path, dir: &Path, auth: SocketAddr, app: SocketAddr) -> Nginx {
    // A port that was free a moment ago; nginx fails loudly if it is not.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port, auth, app)).unwrap();
    let child = std::process::Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("start nginx");
    let nginx = Nginx {
        child: std::sync::Mutex::new(child),
        port,
    };
    eventually("nginx to listen", || async {
        if let Ok(Some(status)) = nginx.child.lock().unwrap().try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status}: {log}");
        }
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    nginx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_applies_keys_scopes_limits_revocation_and_audit() {
    let test = "nginx_auth_request_applies_keys_scopes_limits_revocation_and_audit";
    let Some([nginx_bin]) = services::programs(test, ["nginx"], "apt-get install nginx") else {
        return;
    };

    // The app's stack: keys, a limit, the audit log.
    let store = Arc::new(MemoryKeyStore::new());
    let audit = Arc::new(MemoryAuditLog::default());
    let keys = Keys::builder(store, TokenPrefix::new("fa_").unwrap())
        .hasher(fixtures::hasher())
        .build();
    let issue = |scopes: &'static [&'static str]| {
        let issuer = keys.issuer.clone();
        async move {
            issuer
                .issue(NewKey::new(
                    Principal::user("alice"),
                    "forward auth",
                    ScopeSet::parse(scopes).unwrap(),
                ))
                .await
                .unwrap()
        }
    };
    let reader = issue(&["read"]).await;
    let admin = issue(&["read", "admin"]).await;
    let proxies = TrustedProxies::new(["127.0.0.1"]).unwrap();
    let limits = RateLimiter::builder()
        .rule(Rule::per_user("default", Quota::per_minute(1000)))
        .rule(Rule::per_user("limited", Quota::per_minute(2)).path("/limited"))
        .headers(HeaderStyle::Draft)
        .trusted_proxies(proxies.clone())
        .build()
        .unwrap();
    let verdicts = Router::new()
        .route(
            "/admin/{*rest}",
            any(forward_auth::allow).layer(RequireScopeLayer::one("admin")),
        )
        .fallback(forward_auth::allow)
        .layer(limits.layer())
        .layer(
            AuthLayer::builder(keys.verifier.clone())
                .client_ip(connect_info_ip)
                .trusted_proxies(proxies.clone())
                .audit(audit.clone())
                .build(),
        );
    let auth = serve(forward_auth::router(
        ForwardAuthLayer::new(proxies)
            .error_body_header(axum::http::HeaderName::from_static("x-auth-error")),
        verdicts,
    ))
    .await;
    let app = serve(Router::new().fallback(upstream)).await;
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx(&nginx_bin, dir.path(), auth, app).await;

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let get = |path: &str, token: Option<&str>| {
        let mut req = client
            .get(format!("{base}{path}"))
            // What a client says about itself is never passed on.
            .header("x-auth-user", "mallory")
            .header("x-auth-workspace", "theirs");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let reader_token = reader.token.expose_secret();
    let reader_id = reader.record.id.to_string();

    // Allowed: the upstream gets the identity nginx copied from the answer.
    let res = get("/hello?x=1", Some(reader_token)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["path"], "/hello");
    let auth_headers = &seen["auth"];
    assert_eq!(auth_headers["x-auth-key-id"], reader_id.as_str());
    assert_eq!(auth_headers["x-auth-user"], "alice");
    assert_eq!(auth_headers["x-auth-effective-user"], "alice");
    assert_eq!(auth_headers["x-auth-scopes"], "read");
    assert!(
        auth_headers.get("x-auth-workspace").is_none(),
        "{auth_headers}"
    );

    // 401 without a key: status, challenge and body reach the client.
    let res = get("/hello", None).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    // 403 by the route's scope rule, on the original path.
    let res = get("/admin/users", Some(reader_token)).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    let res = get("/admin/users", Some(admin.token.expose_secret()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // 429 from the route's limit, with its headers and body.
    for _ in 0..2 {
        let res = get("/limited", Some(reader_token)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = get("/limited", Some(reader_token)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"), "{res:?}");
    assert!(res.headers().contains_key("ratelimit"), "{res:?}");
    assert!(res.headers().contains_key("ratelimit-policy"), "{res:?}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");

    // A revoked key is refused on its next request.
    keys.issuer.revoke(reader.record.id).await.unwrap();
    let res = get("/hello", Some(reader_token)).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // The audit log names the original method and paths, never the
    // sub-request's.
    let events = audit
        .query(&AuditQuery::default().key_id(reader.record.id).limit(100))
        .await
        .unwrap()
        .events;
    let paths: Vec<(&str, &str, Option<u16>)> = events
        .iter()
        .rev()
        .map(|e| (e.method.as_str(), e.path.as_str(), e.status))
        .collect();
    assert_eq!(
        paths,
        [
            ("GET", "/hello", Some(200)),
            ("GET", "/admin/users", Some(403)),
            ("GET", "/limited", Some(200)),
            ("GET", "/limited", Some(200)),
            ("GET", "/limited", Some(429)),
            ("GET", "/hello", Some(401)),
        ],
        "{events:?}"
    );
    drop(nginx);
}
