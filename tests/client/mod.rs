//! A small HTTP client for the integration tests (waiting and skipping are
//! in `keygate-test-support`).
#![allow(dead_code)]

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A server under test.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub fn call(&self, method: Method, path: &str) -> Call {
        Call(self.http.request(method, format!("{}{path}", self.base)))
    }

    pub fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    pub fn patch(&self, path: &str) -> Call {
        self.call(Method::PATCH, path)
    }

    pub fn put(&self, path: &str) -> Call {
        self.call(Method::PUT, path)
    }

    pub fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }
}

/// A request being built.
pub struct Call(reqwest::RequestBuilder);

impl Call {
    pub fn token(self, token: &str) -> Self {
        Self(self.0.bearer_auth(token))
    }

    pub fn header(self, name: &str, value: &str) -> Self {
        Self(self.0.header(name, value))
    }

    pub fn json(self, body: &str) -> Self {
        Self(
            self.0
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
    }

    pub async fn send(self) -> Reply {
        Reply::from(self.0.send().await.expect("request sent")).await
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON, or `Null`.
    pub json: Value,
}

impl Reply {
    pub async fn from(res: reqwest::Response) -> Self {
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `message` of an error body.
    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self
    }

    /// Asserts a flat error body: `{"error": code, "message": ...}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.json["error"], code, "body: {}", self.text);
        assert!(!self.message().is_empty(), "no message: {}", self.text);
        self
    }
}
