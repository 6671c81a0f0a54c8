//! [`AllowedOrigins`]: where a browser may send key changes from.

use http::{header, HeaderMap};

/// The origins a key router accepts state-changing browser requests from:
/// always the service's own host (the `Host` header, or the URI's
/// authority under HTTP/2), plus the listed origins (e.g.
/// `https://app.example.com`). See
/// [`KeyManager::check_origin`](crate::KeyManager::check_origin).
///
/// A request is from an allowed origin when its `Origin` is one of them, or,
/// when the browser sent no origin (or the opaque `null`), when its
/// `Sec-Fetch-Site` says `same-origin`. A request with neither header names
/// no origin at all and is not from an allowed one.
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins {
    origins: Vec<String>,
}

impl AllowedOrigins {
    /// Only the service's own host.
    pub fn same_host() -> Self {
        Self::default()
    }

    /// The service's own host and `origins` (`scheme://host[:port]`,
    /// compared case-insensitively, a trailing `/` ignored).
    pub fn with<I, T>(origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            origins: origins.into_iter().map(|o| normalise(&o.into())).collect(),
        }
    }

    /// Whether the request with `headers` comes from an allowed origin;
    /// `authority` is the URI's (HTTP/2 sends `:authority` and no `Host`).
    /// For handlers of an application's own forms, e.g. sign-in and
    /// sign-out.
    pub fn allows_request(&self, headers: &HeaderMap, authority: Option<&str>) -> bool {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(authority);
        let same_origin_fetch = || {
            headers
                .get("sec-fetch-site")
                .is_some_and(|s| s.as_bytes() == b"same-origin")
        };
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            // An opaque origin (a page sent with `Referrer-Policy:
            // no-referrer`, a sandboxed frame, a data: URL) says nothing by
            // itself: only the fetch metadata can vouch for it.
            Some(Ok(origin)) if origin.trim() == "null" => same_origin_fetch(),
            Some(Ok(origin)) => self.allows(origin, host),
            Some(Err(_)) => false,
            None => same_origin_fetch(),
        }
    }

    /// Whether `origin` (an `Origin` header value) is allowed for a request
    /// whose `Host` is `host`.
    pub(crate) fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = normalise(origin);
        if self.origins.contains(&origin) {
            return true;
        }
        let Some((_, authority)) = origin.split_once("://") else {
            return false;
        };
        host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}
