//! A small HTTP client for the end-to-end tests (waiting and skipping are
//! in `keygate-test-support`).
#![allow(dead_code)]

use std::net::SocketAddr;

use auth_core::SecretHasher;
use keygate_demo::support::{
    commands::{self, KeyRules},
    Backend,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A demo backend in memory, with a fast hasher.
pub(crate) fn memory() -> Backend {
    Backend::memory(SecretHasher::for_tests())
}

/// Drops a test's PostgreSQL schema. The instances under test may still be
/// writing to it (their audit writers), and `DROP SCHEMA … CASCADE` takes
/// its tables' locks one by one, so it can deadlock with them: PostgreSQL
/// then aborts one side (40P01), and the drop is tried again.
pub(crate) async fn drop_schema(pool: &sqlx::PgPool, schema: &str) {
    let sql = format!("DROP SCHEMA \"{schema}\" CASCADE");
    for attempt in 1.. {
        match sqlx::query(&sql).execute(pool).await {
            Ok(_) => return,
            Err(e)
                if attempt < 10
                    && e.as_database_error().and_then(|d| d.code()).as_deref() == Some("40P01") => {
            }
            Err(e) => panic!("DROP SCHEMA {schema}: {e}"),
        }
    }
}

/// A new key's token, issued the way the demos' `issue` command does.
pub(crate) async fn issue(
    backend: &Backend,
    rules: &KeyRules,
    user: &str,
    scopes: &[&str],
) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let key = commands::issue(backend, rules, user, &scopes, "test")
        .await
        .unwrap();
    key.token.expose_secret().to_owned()
}

/// A server under test.
#[derive(Clone)]
pub(crate) struct Api {
    pub addr: SocketAddr,
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn call(&self, method: Method, path: &str) -> Call {
        Call(self.http.request(method, format!("{}{path}", self.base)))
    }

    pub(crate) fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    pub(crate) fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    pub(crate) fn patch(&self, path: &str) -> Call {
        self.call(Method::PATCH, path)
    }

    pub(crate) fn put(&self, path: &str) -> Call {
        self.call(Method::PUT, path)
    }

    pub(crate) fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }
}

/// A request being built.
pub(crate) struct Call(reqwest::RequestBuilder);

impl Call {
    pub(crate) fn token(self, token: &str) -> Self {
        Self(self.0.bearer_auth(token))
    }

    pub(crate) fn header(self, name: &str, value: &str) -> Self {
        Self(self.0.header(name, value))
    }

    pub(crate) fn json(self, body: &str) -> Self {
        Self(
            self.0
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
    }

    pub(crate) async fn send(self) -> Reply {
        Reply::from(self.0.send().await.expect("request sent")).await
    }
}

/// A response, read whole.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON, or `Null`.
    pub json: Value,
}

impl Reply {
    pub(crate) async fn from(res: reqwest::Response) -> Self {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `message` of an error body.
    pub(crate) fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub(crate) fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self
    }

    /// Asserts a flat error body: `{"error": code, "message": ...}`.
    #[track_caller]
    pub(crate) fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.json["error"], code, "body: {}", self.text);
        assert!(!self.message().is_empty(), "no message: {}", self.text);
        self
    }
}
