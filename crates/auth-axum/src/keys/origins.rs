//! [`AllowedOrigins`]: where a session-backed key router accepts changes from.

/// The origins a session-backed key router accepts state-changing requests
/// from: always the service's own host (the `Host` header), plus the listed
/// origins (e.g. `https://app.example.com`). See
/// [`KeyManager::check_origin`](crate::KeyManager::check_origin).
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
