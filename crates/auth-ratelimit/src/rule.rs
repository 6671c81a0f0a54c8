//! One limit ([`Rule`]): a name, a quota, what it counts by ([`KeyBy`]),
//! and which requests it covers.

use std::{fmt, sync::Arc};

use auth_core::AuthContext;
use http::{header, HeaderMap, Method};

use crate::{
    key::{KeyFn, KeyValue, RequestInfo},
    Quota,
};

/// An application function choosing a request's quota from its identity
/// (tier, key); `None` keeps the rule's own quota.
pub(crate) type QuotaFn = dyn Fn(&AuthContext) -> Option<Quota> + Send + Sync;

/// What a rule counts requests by.
///
/// When a request has no such key (no [`AuthContext`] for [`KeyBy::User`],
/// no API key for [`KeyBy::ApiKey`], no peer address for [`KeyBy::Ip`], or
/// the custom function returns `None`), the rule does not apply to it.
#[derive(Clone, Default)]
pub enum KeyBy {
    /// The effective user of the [`AuthContext`] (the subject when a key
    /// acts on someone's behalf), within its organisation.
    User,
    /// The API key's id ([`AuthContext::key_id`]).
    ApiKey,
    /// The client IP: the socket peer, or what trusted proxies forwarded (see
    /// [`TrustedProxies`](auth_core::client_ip::TrustedProxies)). IPv6 clients are grouped by network prefix (/64
    /// by default, see `RateLimiterBuilder::ipv6_prefix`), since one
    /// subscriber usually holds a whole /64.
    Ip,
    /// The effective user when the request is authenticated, else the client IP.
    #[default]
    UserOrIp,
    /// One bucket for all requests the rule matches.
    Global,
    /// The application's own function.
    Custom(Arc<KeyFn>),
}

impl KeyBy {
    /// A key computed by `f`; return `None` to exempt a request from the rule.
    ///
    /// `f` must give the same answer for the same request: when another rule
    /// refuses the request, it is called again to give back this rule's
    /// tokens.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&RequestInfo<'_>) -> Option<String> + Send + Sync + 'static,
    {
        Self::Custom(Arc::new(f))
    }

    #[inline]
    pub(crate) fn extract<'a>(
        &self,
        req: &RequestInfo<'a>,
        ipv6_prefix: u8,
    ) -> Option<KeyValue<'a>> {
        let ip = || req.client_ip().map(|ip| KeyValue::ip(ip, ipv6_prefix));
        match self {
            Self::User => req.auth().map(KeyValue::User),
            Self::ApiKey => req
                .auth()
                .and_then(AuthContext::key_id)
                .map(KeyValue::ApiKey),
            Self::Ip => ip(),
            Self::UserOrIp => match req.auth() {
                Some(a) => Some(KeyValue::User(a)),
                None => ip(),
            },
            Self::Global => Some(KeyValue::Global),
            Self::Custom(f) => f(req).map(KeyValue::Custom),
        }
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "User",
            Self::ApiKey => "ApiKey",
            Self::Ip => "Ip",
            Self::UserOrIp => "UserOrIp",
            Self::Global => "Global",
            Self::Custom(_) => "Custom(..)",
        })
    }
}

/// One limit of a [`RateLimiter`](crate::RateLimiter).
///
/// Every rule that matches a request is checked, in the order they were
/// added, and the request passes only if all of them allow it; tokens taken
/// by the others are then given back. So a stricter route rule is *layered*
/// on top of the default one; use [`Rule::except_path`] on the default to make
/// a route rule an *override* instead.
///
/// ```
/// use auth_ratelimit::{KeyBy, Quota, Rule};
/// use http::Method;
///
/// // 200 requests per hour per user on REST.
/// let default = Rule::per_user("default", Quota::per_hour(200));
/// // Login attempts: 5 per minute per client IP.
/// let login = Rule::per_ip("login", Quota::per_minute(5)).method(Method::POST).path("/login");
/// // The graph endpoint is expensive: it costs 5 tokens of the user's own budget.
/// let graph = Rule::per_user("graph", Quota::per_minute(60)).path_prefix("/graph").cost(5);
/// // Quota by the key's tier.
/// let tier = Rule::per_key("tier", Quota::per_hour(1000))
///     .quota_by(|ctx| ctx.scopes().has("tier:gold").then(|| Quota::per_hour(50_000)));
/// // WebSocket connects: 10 per minute per IP.
/// let ws = Rule::websocket_connects("ws-connect", Quota::per_minute(10));
/// # let _ = (default, login, graph, tier, ws);
/// ```
#[derive(Clone)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) quota: Quota,
    pub(crate) key: KeyBy,
    pub(crate) quota_fn: Option<Arc<QuotaFn>>,
    /// The quota comes from the key first (see [`Rule::key_quota`]).
    pub(crate) key_quota: bool,
    pub(crate) cost: u32,
    methods: Vec<Method>,
    paths: Vec<PathMatch>,
    except: Vec<PathMatch>,
    websocket_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PathMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl PathMatch {
    fn prefix(p: &str) -> Self {
        Self::Prefix(p.trim_end_matches('/').into())
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == &**p,
            // `/graph` covers `/graph` and `/graph/...`, not `/graphql`.
            Self::Prefix(p) => match path.strip_prefix(&**p) {
                Some(rest) => rest.is_empty() || rest.starts_with('/') || p.is_empty(),
                None => false,
            },
        }
    }
}

impl Rule {
    /// A rule named `name` (shown in the `RateLimit-Policy` header and part
    /// of the bucket keys) applying `quota` to every request, counted by
    /// [`KeyBy::UserOrIp`].
    ///
    /// The name must be unique within a limiter and is best kept to
    /// letters, digits, `-`, `_` and `.`; others are checked when the
    /// limiter is built.
    pub fn new(name: impl Into<Arc<str>>, quota: Quota) -> Self {
        Self {
            name: name.into(),
            quota,
            key: KeyBy::default(),
            quota_fn: None,
            key_quota: false,
            cost: 1,
            methods: Vec::new(),
            paths: Vec::new(),
            except: Vec::new(),
            websocket_only: false,
        }
    }

    /// A rule counting by the effective user ([`KeyBy::User`]).
    pub fn per_user(name: impl Into<Arc<str>>, quota: Quota) -> Self {
        Self::new(name, quota).by(KeyBy::User)
    }

    /// A rule counting by API key id ([`KeyBy::ApiKey`]).
    pub fn per_key(name: impl Into<Arc<str>>, quota: Quota) -> Self {
        Self::new(name, quota).by(KeyBy::ApiKey)
    }

    /// A rule counting by client IP ([`KeyBy::Ip`]).
    pub fn per_ip(name: impl Into<Arc<str>>, quota: Quota) -> Self {
        Self::new(name, quota).by(KeyBy::Ip)
    }

    /// One bucket for every request the rule matches ([`KeyBy::Global`]).
    pub fn global(name: impl Into<Arc<str>>, quota: Quota) -> Self {
        Self::new(name, quota).by(KeyBy::Global)
    }

    /// WebSocket handshakes per client IP: a per-IP rule that only counts
    /// requests asking for a WebSocket upgrade (e.g. 10 per minute).
    pub fn websocket_connects(name: impl Into<Arc<str>>, quota: Quota) -> Self {
        Self::per_ip(name, quota).websocket_upgrades()
    }

    /// Counts by `key` instead.
    pub fn by(mut self, key: KeyBy) -> Self {
        self.key = key;
        self
    }

    /// Chooses the quota of authenticated requests with `f` (for example by
    /// the key's tier); when `f` returns `None`, or the request is not
    /// authenticated, the rule's own quota applies.
    pub fn quota_by<F>(mut self, f: F) -> Self
    where
        F: Fn(&AuthContext) -> Option<Quota> + Send + Sync + 'static,
    {
        self.quota_fn = Some(Arc::new(f));
        self
    }

    /// Takes the quota of requests made with an API key from the key: its
    /// owner's tier from the limiter's [`QuotaResolver`](crate::tiers::QuotaResolver)
    /// (cached per key and effective principal), else this rule's quota.
    /// The key's own rate limit can then only tighten that quota, never
    /// loosen it, in each dimension: the smaller burst and the lower
    /// sustained rate apply. See the [`tiers`](crate::tiers) module.
    ///
    /// ```
    /// use auth_ratelimit::{Quota, Rule};
    /// // 1000 per hour unless the owner's tier says otherwise; a key's own
    /// // limit may lower it.
    /// let rule = Rule::per_key("key", Quota::per_hour(1000)).key_quota();
    /// # let _ = rule;
    /// ```
    pub fn key_quota(mut self) -> Self {
        self.key_quota = true;
        self
    }

    /// Each matching request takes `tokens` tokens (a weighted route). A cost
    /// above the bucket's capacity is treated as the capacity.
    pub fn cost(mut self, tokens: u32) -> Self {
        self.cost = tokens;
        self
    }

    /// Only requests with this method (call again to add more methods).
    pub fn method(mut self, method: Method) -> Self {
        self.methods.push(method);
        self
    }

    /// Only requests to exactly this path (call again to add more paths;
    /// path rules combine with prefix rules as "any of").
    pub fn path(mut self, path: &str) -> Self {
        self.paths.push(PathMatch::Exact(path.into()));
        self
    }

    /// Only requests to this path or below it (`/graph` covers `/graph` and
    /// `/graph/x`, not `/graphql`).
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.paths.push(PathMatch::prefix(prefix));
        self
    }

    /// Not requests to exactly this path.
    pub fn except_path(mut self, path: &str) -> Self {
        self.except.push(PathMatch::Exact(path.into()));
        self
    }

    /// Not requests to this path or below it.
    pub fn except_prefix(mut self, prefix: &str) -> Self {
        self.except.push(PathMatch::prefix(prefix));
        self
    }

    /// Only requests asking for a WebSocket upgrade.
    pub fn websocket_upgrades(mut self) -> Self {
        self.websocket_only = true;
        self
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the rule covers this request.
    #[inline]
    pub(crate) fn matches(&self, req: &RequestInfo<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(req.method()) {
            return false;
        }
        if self.websocket_only && !is_websocket_upgrade(req.headers()) {
            return false;
        }
        if self.paths.is_empty() && self.except.is_empty() {
            return true;
        }
        let path = req.path();
        (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
            && !self.except.iter().any(|p| p.matches(path))
    }

    /// The quota for this request.
    #[inline]
    pub(crate) fn quota_for(&self, req: &RequestInfo<'_>) -> Quota {
        match &self.quota_fn {
            Some(f) => req.auth().and_then(|ctx| f(ctx)).unwrap_or(self.quota),
            None => self.quota,
        }
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("key", &self.key)
            .field("cost", &self.cost)
            .field("key_quota", &self.key_quota)
            .field("methods", &self.methods)
            .field("paths", &self.paths)
            .field("except", &self.except)
            .field("websocket_only", &self.websocket_only)
            .finish_non_exhaustive()
    }
}

/// `Upgrade: websocket` (case-insensitive, possibly in a list).
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrustedProxies;

    fn matches(rule: &Rule, method: Method, path: &str, ws: bool) -> bool {
        let mut b = http::Request::builder().method(method).uri(path);
        if ws {
            b = b.header("upgrade", "WebSocket");
        }
        let req = b.body(()).unwrap();
        let proxies = TrustedProxies::none();
        rule.matches(&RequestInfo::new(&req, &proxies))
    }

    #[test]
    fn method_and_path_filters() {
        let q = Quota::per_minute(1);
        let login = Rule::per_ip("login", q).method(Method::POST).path("/login");
        assert!(matches(&login, Method::POST, "/login", false));
        assert!(!matches(&login, Method::GET, "/login", false));
        assert!(!matches(&login, Method::POST, "/login/x", false));

        let graph = Rule::per_user("graph", q).path_prefix("/graph/");
        assert!(matches(&graph, Method::GET, "/graph", false));
        assert!(matches(&graph, Method::GET, "/graph/q?x=1", false));
        assert!(!matches(&graph, Method::GET, "/graphql", false));

        let default = Rule::per_user("default", q)
            .except_path("/login")
            .except_prefix("/health");
        assert!(matches(&default, Method::GET, "/items", false));
        assert!(!matches(&default, Method::POST, "/login", false));
        assert!(!matches(&default, Method::GET, "/health/live", false));

        let all = Rule::global("all", q).path_prefix("/");
        assert!(matches(&all, Method::GET, "/anything", false));
    }

    #[test]
    fn websocket_filter() {
        let ws = Rule::websocket_connects("ws", Quota::per_minute(10));
        assert!(matches(&ws, Method::GET, "/ws", true));
        assert!(!matches(&ws, Method::GET, "/ws", false));
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "h2c, websocket".parse().unwrap());
        assert!(is_websocket_upgrade(&h));
    }
}
