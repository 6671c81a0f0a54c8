//! What a rule's key sees of a request ([`RequestInfo`], given to
//! [`KeyBy::custom`](crate::KeyBy::custom) functions), and the keys buckets are
//! stored under ([`LimitKey`]).

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hash, Hasher},
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
};

use auth_core::{AuthContext, KeyId};
#[cfg(feature = "axum")]
use axum::extract::{connect_info::MockConnectInfo, ConnectInfo, OriginalUri};
use http::{Extensions, HeaderMap, Method, Uri};

use auth_core::{client_ip::ClientIp, client_ip::TrustedProxies};
use ipnet::Ipv6Net;

/// An application function that names the bucket of a request; `None` means
/// the rule does not apply to it.
pub type KeyFn = dyn Fn(&RequestInfo<'_>) -> Option<String> + Send + Sync;

/// What a key function can see of a request.
pub struct RequestInfo<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
    proxies: &'a TrustedProxies,
}

impl<'a> RequestInfo<'a> {
    #[inline]
    pub(crate) fn new<B>(req: &'a http::Request<B>, proxies: &'a TrustedProxies) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
            proxies,
        }
    }

    /// The request method.
    #[inline]
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request path, as the client sent it: with the `axum` feature,
    /// from axum's `OriginalUri` (before any `nest` stripped a prefix), else
    /// the URI's.
    pub fn path(&self) -> &'a str {
        #[cfg(feature = "axum")]
        if let Some(orig) = self.extensions.get::<OriginalUri>() {
            return orig.0.path();
        }
        self.uri.path()
    }

    /// The request headers.
    #[inline]
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The authenticated identity, when the auth layer ran first.
    #[inline]
    pub fn auth(&self) -> Option<&'a AuthContext> {
        self.extensions.get::<AuthContext>()
    }

    /// The socket peer, from the request extensions: with the `axum`
    /// feature, axum's `ConnectInfo<SocketAddr>` (or, as axum's own
    /// extractor does, `MockConnectInfo<SocketAddr>` in tests); else, and
    /// failing those, a plain [`SocketAddr`], which a server built on hyper
    /// or tower puts there itself.
    ///
    /// Only the server writes extensions, never the client, so any of them
    /// is the real peer. The plain `SocketAddr` is read with or without the
    /// feature: turning `axum` on (which any crate in the build can do)
    /// never hides an address the limiter saw without it.
    #[inline]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        #[cfg(feature = "axum")]
        if let Some(addr) = self
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .or_else(|| {
                self.extensions
                    .get::<MockConnectInfo<SocketAddr>>()
                    .map(|c| c.0)
            })
        {
            return Some(addr);
        }
        self.extensions.get::<SocketAddr>().copied()
    }

    /// The client address: the [`ClientIp`] an earlier component (the auth
    /// layer, the failed-authentication limiter) resolved, else the peer or
    /// what trusted proxies forwarded.
    #[inline]
    pub fn client_ip(&self) -> Option<IpAddr> {
        if let Some(ip) = ClientIp::of(self.extensions) {
            return Some(ip);
        }
        self.peer_addr()
            .map(|peer| self.proxies.client_ip(peer.ip(), self.headers))
    }
}

impl fmt::Debug for RequestInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestInfo")
            .field("method", self.method)
            .field("uri", self.uri)
            .finish_non_exhaustive()
    }
}

/// The bucket's identity within a rule, borrowed from the request.
#[derive(Clone, Debug)]
pub(crate) enum KeyValue<'a> {
    Global,
    /// The context's effective principal (its digest is kept with the context).
    User(&'a AuthContext),
    ApiKey(KeyId),
    Ip(IpAddr),
    /// The site aggregate of IPv6 clients (see `ipv6_site`).
    Site(std::net::Ipv6Addr),
    Custom(String),
}

impl PartialEq for KeyValue<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Global, Self::Global) => true,
            (Self::User(a), Self::User(b)) => a.effective_principal() == b.effective_principal(),
            (Self::ApiKey(a), Self::ApiKey(b)) => a == b,
            (Self::Ip(a), Self::Ip(b)) => a == b,
            (Self::Site(a), Self::Site(b)) => a == b,
            (Self::Custom(a), Self::Custom(b)) => a == b,
            _ => false,
        }
    }
}

impl KeyValue<'_> {
    #[inline]
    pub(crate) fn ip(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip.to_canonical() {
            // Grouped by network: one subscriber usually holds a whole prefix.
            IpAddr::V6(v6) => Self::Ip(IpAddr::V6(
                Ipv6Net::new(v6, ipv6_prefix).map_or(v6, |n| n.network()),
            )),
            v4 => Self::Ip(v4),
        }
    }

    /// The key as a string, for Redis: a type tag, then the value (a user id
    /// is length-prefixed so `user@org` cannot collide with another user).
    pub(crate) fn write_to(&self, out: &mut String) {
        use fmt::Write;
        let _ = match self {
            Self::Global => write!(out, "g"),
            Self::User(ctx) => {
                let p = ctx.effective_principal();
                match p.org_id() {
                    Some(org) => write!(out, "u:{}:{}@{}", p.user_id().len(), p.user_id(), org),
                    None => write!(out, "u:{}:{}", p.user_id().len(), p.user_id()),
                }
            }
            Self::ApiKey(k) => write!(out, "k:{k}"),
            Self::Ip(ip) => write!(out, "ip:{ip}"),
            Self::Site(net) => write!(out, "site:{net}"),
            Self::Custom(s) => write!(out, "c:{s}"),
        };
    }
}

impl KeyValue<'_> {
    /// The key as [`KeyValue::write_to`] writes it, except that an
    /// identifier a user chose (a user id, a custom key) is not written but
    /// returned, after its type tag, for the caller to write a keyed digest
    /// of it instead (Redis key names must not reveal login names).
    #[cfg(feature = "redis")]
    pub(crate) fn write_hiding_names(&self, out: &mut String) -> Option<String> {
        match self {
            Self::User(ctx) => {
                out.push_str("u:");
                let p = ctx.effective_principal();
                Some(match p.org_id() {
                    Some(org) => format!("{}:{}@{}", p.user_id().len(), p.user_id(), org),
                    None => format!("{}:{}", p.user_id().len(), p.user_id()),
                })
            }
            Self::Custom(s) => {
                out.push_str("c:");
                Some(s.clone())
            }
            _ => {
                self.write_to(out);
                None
            }
        }
    }
}

/// Per-process random keys: two SipHash instances, together a 128-bit keyed
/// digest of strings.
struct Keys {
    a: RandomState,
    b: RandomState,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        a: RandomState::new(),
        b: RandomState::new(),
    })
}

/// The 128-bit keyed digest of `v`.
fn digest(v: impl Hash) -> [u64; 2] {
    let k = keys();
    [k.a.hash_one(&v), k.b.hash_one(&v)]
}

/// The key of one bucket in the layer's in-memory store: the rule, and
/// whose bucket it is.
///
/// A fixed 24 bytes whatever the key, with no allocation and no reference
/// count: an IP address or API key id is stored as is; a user or custom key
/// as a 128-bit digest by two randomly keyed SipHash instances (per process),
/// so clients cannot aim for a collision, and two keys share a bucket only by
/// a 2^-128 chance.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub struct LimitKey {
    rule: u32,
    kind: u8,
    value: [u64; 2],
}

impl LimitKey {
    #[inline]
    pub(crate) fn new(rule: usize, value: &KeyValue<'_>) -> Self {
        let (kind, value) = match value {
            KeyValue::Global => (0, [0, 0]),
            KeyValue::ApiKey(id) => (1, [id.as_u64(), 0]),
            KeyValue::Ip(IpAddr::V4(ip)) => (2, [u64::from(u32::from(*ip)), 0]),
            KeyValue::Ip(IpAddr::V6(ip)) => {
                let bits = u128::from(*ip);
                (3, [(bits >> 64) as u64, bits as u64])
            }
            KeyValue::User(ctx) => (4, ctx.principal_digest()),
            KeyValue::Custom(s) => (5, digest(s)),
            KeyValue::Site(ip) => {
                let bits = u128::from(*ip);
                (7, [(bits >> 64) as u64, bits as u64])
            }
        };
        Self {
            rule: u32::try_from(rule).unwrap_or(u32::MAX),
            kind,
            value,
        }
    }

    /// The key of the application's own bucket `value` of the limit `name`
    /// (outside any limiter's rules).
    pub(crate) fn named(name: &str, value: &KeyValue<'_>) -> Self {
        let mut text = String::new();
        value.write_to(&mut text);
        Self {
            rule: u32::MAX,
            kind: 6,
            value: digest((name, text)),
        }
    }
}

impl Hash for LimitKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.value[0]);
        state.write_u64(self.value[1] ^ (u64::from(self.rule) << 8 | u64::from(self.kind)));
    }
}

/// The map hash of the limiter's in-memory store: `foldhash`'s fast hash
/// with a random seed per store, a few times faster than SipHash on the
/// 24 bytes of a [`LimitKey`]. Client-chosen parts of a key (IPv6 networks)
/// cannot be aimed at collisions without the seed.
pub type LimitKeyHasher = foldhash::fast::RandomState;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyBy;
    use auth_core::{Principal, ScopeSet};

    /// A context whose effective principal is `id`.
    fn user(id: &str) -> AuthContext {
        AuthContext::for_key(
            KeyId::from_u64(7),
            "k",
            Principal::user(id),
            ScopeSet::empty(),
        )
    }

    fn req() -> http::Request<()> {
        http::Request::builder().uri("/x").body(()).unwrap()
    }

    #[test]
    fn user_key_needs_auth_and_ip_needs_peer() {
        let proxies = TrustedProxies::none();
        let mut r = req();
        let info = RequestInfo::new(&r, &proxies);
        assert_eq!(KeyBy::User.extract(&info, 64), None);
        assert_eq!(KeyBy::Ip.extract(&info, 64), None);
        assert_eq!(KeyBy::UserOrIp.extract(&info, 64), None);
        assert_eq!(KeyBy::Global.extract(&info, 64), Some(KeyValue::Global));

        r.extensions_mut()
            .insert("[2001:db8:1:2:3:4:5:6]:9".parse::<SocketAddr>().unwrap());
        let info = RequestInfo::new(&r, &proxies);
        assert_eq!(
            KeyBy::UserOrIp.extract(&info, 64),
            Some(KeyValue::Ip("2001:db8:1:2::".parse().unwrap()))
        );
        assert_eq!(
            KeyBy::Ip.extract(&info, 128),
            Some(KeyValue::Ip("2001:db8:1:2:3:4:5:6".parse().unwrap()))
        );

        let key = KeyId::from_u64(42);
        let ctx = AuthContext::for_key(key, "ci", Principal::user("alice"), ScopeSet::empty());
        r.extensions_mut().insert(ctx);
        let info = RequestInfo::new(&r, &proxies);
        let alice = user("alice");
        assert_eq!(KeyBy::User.extract(&info, 64), Some(KeyValue::User(&alice)));
        assert_eq!(
            KeyBy::UserOrIp.extract(&info, 64),
            Some(KeyValue::User(&alice))
        );
        assert_eq!(
            KeyBy::ApiKey.extract(&info, 64),
            Some(KeyValue::ApiKey(key))
        );
        let custom = KeyBy::custom(|r| {
            r.headers()
                .get("x-tenant")?
                .to_str()
                .ok()
                .map(str::to_owned)
        });
        assert_eq!(custom.extract(&info, 64), None);
    }

    #[test]
    fn the_peer_is_a_socket_addr_extension_without_axum() {
        let proxies = TrustedProxies::none();
        let mut r = req();
        let peer: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        r.extensions_mut().insert(peer);
        let info = RequestInfo::new(&r, &proxies);
        assert_eq!(info.peer_addr(), Some(peer));
        assert_eq!(info.client_ip(), Some(peer.ip()));
        // A client address an earlier component resolved wins over the peer.
        let resolved: IpAddr = "203.0.113.9".parse().unwrap();
        r.extensions_mut().insert(ClientIp(resolved));
        let info = RequestInfo::new(&r, &proxies);
        assert_eq!(info.client_ip(), Some(resolved));
        assert_eq!(info.peer_addr(), Some(peer));
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_comes_first() {
        let proxies = TrustedProxies::none();
        let mut r = req();
        let mock: SocketAddr = "192.0.2.2:2".parse().unwrap();
        r.extensions_mut().insert(MockConnectInfo(mock));
        assert_eq!(RequestInfo::new(&r, &proxies).peer_addr(), Some(mock));
        let plain: SocketAddr = "192.0.2.3:3".parse().unwrap();
        r.extensions_mut().insert(plain);
        assert_eq!(RequestInfo::new(&r, &proxies).peer_addr(), Some(mock));
        let real: SocketAddr = "192.0.2.1:1".parse().unwrap();
        r.extensions_mut().insert(ConnectInfo(real));
        assert_eq!(RequestInfo::new(&r, &proxies).peer_addr(), Some(real));
        // The path before `nest` stripped its prefix.
        r.extensions_mut()
            .insert(OriginalUri("/api/x".parse().unwrap()));
        assert_eq!(RequestInfo::new(&r, &proxies).path(), "/api/x");
    }

    #[test]
    fn impersonation_counts_against_the_subject() {
        let ctx = AuthContext::for_key(
            KeyId::from_u64(1),
            "ci",
            Principal::user("admin"),
            ScopeSet::empty(),
        )
        .with_subject(Principal::in_org("stu1", "school"), &ScopeSet::empty());
        let mut r = req();
        r.extensions_mut().insert(ctx);
        let proxies = TrustedProxies::none();
        let info = RequestInfo::new(&r, &proxies);
        let v = KeyBy::User.extract(&info, 64).unwrap();
        let mut s = String::new();
        v.write_to(&mut s);
        assert_eq!(s, "u:4:stu1@school");
    }

    #[test]
    fn digests_separate_rules_and_kinds() {
        let alice = user("alice");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let k = |rule, v: &KeyValue<'_>| LimitKey::new(rule, v);
        assert_eq!(
            k(0, &KeyValue::User(&alice)),
            k(0, &KeyValue::User(&user("alice")))
        );
        assert_ne!(
            k(0, &KeyValue::User(&alice)),
            k(0, &KeyValue::User(&user("bob")))
        );
        assert_ne!(k(0, &KeyValue::User(&alice)), k(1, &KeyValue::User(&alice)));
        assert_ne!(
            k(0, &KeyValue::User(&alice)),
            k(0, &KeyValue::Custom("alice".into()))
        );
        assert_ne!(k(0, &KeyValue::Ip(ip)), k(0, &KeyValue::Global));
        assert_ne!(
            k(0, &KeyValue::ApiKey(KeyId::from_u64(1))),
            k(0, &KeyValue::ApiKey(KeyId::from_u64(2)))
        );
    }
}
