//! Which address a request comes from: the socket peer, or what trusted
//! proxies say about it. One resolver for the audit log, the rate limiters
//! and the per-key IP allowlists, so that they all name the same client.
//!
//! Only when the socket peer is one of the configured trusted proxies is the
//! forwarding header read, and then from the right: each proxy appends the
//! address it received the request from, so the rightmost hop that is *not*
//! a trusted proxy is the client. Hops further left were written by the
//! client and could say anything. (Taking the leftmost `X-Forwarded-For`
//! hop lets any client pick its own address.)
//!
//! The first component that resolves a request's address leaves it in the
//! request extensions as [`ClientIp`]; the others read it from there rather
//! than resolving again.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use http::{header::FORWARDED, Extensions, HeaderMap, HeaderName};
/// IP networks (`203.0.113.0/24`), as trusted proxies and allowlists take them.
pub use ipnet::IpNet;
use ipnet::Ipv4Net;

/// At most this many hops are examined, so a huge header costs bounded work.
const MAX_HOPS: usize = 32;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client address of a request, as resolved through [`TrustedProxies`]
/// by the first component that needed it (the failed-authentication
/// limiter, the auth layer or the rate limiter). Later components read it
/// from the request extensions, so every one of them names the same client.
///
/// ```
/// use std::net::IpAddr;
/// use auth_core::client_ip::ClientIp;
///
/// let mut req = http::Request::new(());
/// let ip: IpAddr = "203.0.113.9".parse().unwrap();
/// req.extensions_mut().insert(ClientIp(ip));
/// assert_eq!(ClientIp::of(req.extensions()), Some(ip));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address a previous component left in `extensions`, if any.
    #[inline]
    pub fn of(extensions: &Extensions) -> Option<IpAddr> {
        extensions.get::<Self>().map(|c| c.0)
    }
}

/// The forwarding header the trusted proxies set.
///
/// Configure the one your proxies actually write: a client can send either,
/// and the one your proxies do not touch is entirely client-written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// A string that is not an address or a CIDR network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR network: {0:?}")]
pub struct InvalidNet(pub String);

/// The reverse proxies whose forwarding headers are believed.
///
/// Build it once from configuration and give the same value to the auth
/// layer, the rate limiter and the failed-authentication limiter. Cloning is
/// cheap (the networks are shared).
///
/// ```
/// use std::net::IpAddr;
/// use auth_core::client_ip::TrustedProxies;
/// use http::HeaderMap;
///
/// let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
/// let mut headers = HeaderMap::new();
/// // The client wrote "6.6.6.6"; the trusted proxy 10.0.0.2 appended the
/// // address it saw, 203.0.113.9, and the last proxy 10.0.0.1 connected to us.
/// headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap());
/// let peer: IpAddr = "10.0.0.1".parse().unwrap();
/// assert_eq!(proxies.client_ip(peer, &headers), "203.0.113.9".parse::<IpAddr>().unwrap());
/// // A peer that is not a trusted proxy is the client, whatever it claims.
/// let peer: IpAddr = "198.51.100.7".parse().unwrap();
/// assert_eq!(proxies.client_ip(peer, &headers), peer);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// No trusted proxy: the socket peer is always the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Proxies in these networks (`"10.0.0.0/8"`, `"127.0.0.1"`, `"fd00::/8"`),
    /// which write `X-Forwarded-For`.
    pub fn new<I, S>(nets: I) -> Result<Self, InvalidNet>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = nets
            .into_iter()
            .map(|s| Self::parse_net(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_nets(nets))
    }

    /// Proxies in these networks, which write `X-Forwarded-For`.
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().map(canonical_net).collect(),
            header: ForwardedHeader::default(),
        }
    }

    /// A network in CIDR notation, or a single address (`/32`, `/128`).
    /// Host bits are cleared: `10.1.2.3/8` is `10.0.0.0/8`.
    pub fn parse_net(s: &str) -> Result<IpNet, InvalidNet> {
        let s = s.trim();
        IpNet::from_str(s)
            .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
            .map(|n| canonical_net(n.trunc()))
            .map_err(|_| InvalidNet(s.to_owned()))
    }

    /// Reads `header` instead of `X-Forwarded-For`.
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The trusted networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from socket peer `peer`.
    ///
    /// Walks the forwarding header from the right while hops are trusted
    /// proxies, and returns the first untrusted hop. If every hop is trusted,
    /// the leftmost is returned. Each comma-separated hop is parsed on its
    /// own, from the raw header bytes, so client-written garbage to the left
    /// of the hop a proxy appended does not hide that hop. If the hop that
    /// must be used cannot be parsed (`unknown`, an obfuscated name, bytes
    /// that are not text) or lies beyond the first 32 hops, the client is
    /// unknown and the unspecified address (`0.0.0.0`, or `::` for an IPv6
    /// peer) is returned: never the proxy's own address, which an allowlist
    /// of internal networks would accept. The unspecified address matches
    /// no allowlist network narrower than `/0`. Never panics, whatever the
    /// headers hold. IPv4-mapped IPv6 addresses come back as IPv4.
    #[inline]
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let unknown = match peer {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let name = match self.header {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
        };
        let mut client = peer;
        let mut seen = 0;
        for value in headers.get_all(name).iter().rev() {
            // Raw bytes: `to_str()` fails on any non-ASCII byte anywhere in
            // the line, and the client controls everything left of the last
            // comma.
            for element in value.as_bytes().rsplit(|&b| b == b',') {
                seen += 1;
                if seen > MAX_HOPS {
                    return unknown;
                }
                let hop = std::str::from_utf8(element)
                    .ok()
                    .and_then(|element| match self.header {
                        ForwardedHeader::XForwardedFor => parse_node(element),
                        ForwardedHeader::Forwarded => forwarded_for(element).and_then(parse_node),
                    });
                match hop {
                    Some(ip) if self.contains(ip) => client = ip,
                    Some(ip) => return ip,
                    None => return unknown,
                }
            }
        }
        client
    }

    /// The request's client address: the [`ClientIp`] a previous component
    /// left in `extensions`, or else the one resolved from socket peer
    /// `peer` (`None` without one), which is then left there for the next.
    #[inline]
    pub fn resolve(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        extensions: &mut Extensions,
    ) -> Option<IpAddr> {
        if let Some(ip) = ClientIp::of(extensions) {
            return Some(ip);
        }
        let ip = self.client_ip(peer?, headers);
        extensions.insert(ClientIp(ip));
        Some(ip)
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network
/// it stands for, since addresses are compared in canonical form.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// The `for=` parameter of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v)
    })
}

/// An address as a proxy writes it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`, possibly quoted.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    Ipv6Addr::from_str(inner)
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn nets_parse_and_match() {
        let p = TrustedProxies::new(["10.1.2.3/8", "fd00::/8", "127.0.0.1"]).unwrap();
        assert_eq!(p.nets()[0].to_string(), "10.0.0.0/8");
        assert!(p.contains(ip("10.255.0.1")));
        assert!(p.contains(ip("::ffff:10.0.0.1")), "v4-mapped v6 matches v4");
        assert!(!p.contains(ip("11.0.0.1")));
        assert!(p.contains(ip("fd12::1")));
        assert!(!p.contains(ip("fe80::1")));
        assert!(p.contains(ip("127.0.0.1")));
        assert!(!p.contains(ip("127.0.0.2")));
        let mapped = TrustedProxies::new(["::ffff:192.0.2.0/120"]).unwrap();
        assert_eq!(mapped.nets()[0].to_string(), "192.0.2.0/24");
        assert!(mapped.contains(ip("192.0.2.7")));
        assert!(TrustedProxies::new(["0.0.0.0/0"])
            .unwrap()
            .contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(TrustedProxies::new([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_chain_of_trusted_proxies_resolves_to_the_first_untrusted_hop() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let peer = ip("10.0.0.1");
        assert_eq!(
            p.client_ip(peer, &xff(&["1.1.1.1, 2.2.2.2, 10.0.0.5"])),
            ip("2.2.2.2")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            p.client_ip(peer, &xff(&["1.1.1.1", "2.2.2.2", "10.0.0.5"])),
            ip("2.2.2.2")
        );
        // All trusted: the leftmost.
        assert_eq!(
            p.client_ip(peer, &xff(&["10.9.9.9, 10.0.0.5"])),
            ip("10.9.9.9")
        );
        // No header: the proxy itself.
        assert_eq!(p.client_ip(peer, &HeaderMap::new()), peer);
        // Garbage where the client should be: unknown, never the proxy.
        assert_eq!(
            p.client_ip(peer, &xff(&["1.1.1.1, unknown, 10.0.0.5"])),
            ip("0.0.0.0")
        );
        let v6 = TrustedProxies::new(["fd00::/8"]).unwrap();
        assert_eq!(v6.client_ip(ip("fd00::1"), &xff(&["unknown"])), ip("::"));
        // Ports, brackets and quotes are tolerated; mapped v4 comes back as v4.
        assert_eq!(
            p.client_ip(peer, &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(p.client_ip(peer, &xff(&["3.3.3.3:1234"])), ip("3.3.3.3"));
        assert_eq!(p.client_ip(peer, &xff(&["::ffff:3.3.3.3"])), ip("3.3.3.3"));
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        assert_eq!(
            p.client_ip(ip("5.5.5.5"), &xff(&["1.1.1.1"])),
            ip("5.5.5.5")
        );
        // Claiming to be a trusted proxy does not make the peer one.
        assert_eq!(
            p.client_ip(ip("5.5.5.5"), &xff(&["1.1.1.1, 10.0.0.1"])),
            ip("5.5.5.5")
        );
        assert_eq!(
            TrustedProxies::none().client_ip(ip("10.0.0.1"), &xff(&["1.1.1.1"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_header() {
        let p = TrustedProxies::new(["192.0.2.0/24"])
            .unwrap()
            .header(ForwardedHeader::Forwarded);
        let mut h = HeaderMap::new();
        h.insert(
            FORWARDED,
            r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, For=192.0.2.43;by=192.0.2.1"#
                .parse()
                .unwrap(),
        );
        h.insert("x-forwarded-for", "7.7.7.7".parse().unwrap());
        assert_eq!(p.client_ip(ip("192.0.2.1"), &h), ip("2001:db8:cafe::17"));
        h.insert(FORWARDED, "for=_hidden, for=192.0.2.43".parse().unwrap());
        assert_eq!(p.client_ip(ip("192.0.2.1"), &h), ip("0.0.0.0"));
        // Non-ASCII bytes in a client-written element do not hide the hop
        // the proxy appended, nor make the proxy the client.
        h.insert(
            FORWARDED,
            http::HeaderValue::from_bytes(b"for=\x80\xff, for=198.51.100.7").unwrap(),
        );
        assert_eq!(p.client_ip(ip("192.0.2.1"), &h), ip("198.51.100.7"));
        h.insert(
            FORWARDED,
            http::HeaderValue::from_bytes(b"for=\x80, for=192.0.2.43").unwrap(),
        );
        assert_eq!(p.client_ip(ip("192.0.2.1"), &h), ip("0.0.0.0"));
    }

    #[test]
    fn bounded_work_on_huge_headers() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        // The client is beyond the hops examined: unknown.
        let long = vec!["10.0.0.9"; 10_000].join(",");
        let got = p.client_ip(ip("10.0.0.1"), &xff(&[&long]));
        assert_eq!(got, ip("0.0.0.0"));
        let within = vec!["10.0.0.9"; MAX_HOPS].join(",");
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &xff(&[&within])),
            ip("10.0.0.9")
        );
    }

    fn raw_xff(bytes: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(bytes).unwrap(),
        );
        h
    }

    #[test]
    fn non_ascii_garbage_left_of_the_proxy_hop_resolves_to_the_real_client() {
        // nginx's `$proxy_add_x_forwarded_for` appends the real address to
        // whatever the client sent, on the same line.
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let peer = ip("10.0.0.1");
        assert_eq!(
            p.client_ip(peer, &raw_xff(b"\x80, 203.0.113.9")),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client_ip(
                peer,
                &raw_xff(b"1.1.1.1, \xff\xfe\x80,203.0.113.9, 10.0.0.7")
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn an_unparsable_hop_never_resolves_to_the_proxy() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let peer = ip("10.0.0.1");
        for bad in [
            &b"\x80"[..],
            b"\xff\xfe",
            b"\x80, 10.0.0.7",
            b"",
            b"  ",
            b",",
            b"unknown, 10.0.0.7",
            b"1.1.1.1, \xc3\xa9, 10.0.0.7",
        ] {
            let got = p.client_ip(peer, &raw_xff(bad));
            assert!(got.is_unspecified(), "{bad:?} -> {got}");
            assert!(!p.contains(got), "{bad:?} -> {got}");
        }
    }

    #[test]
    fn the_first_resolution_is_kept_for_the_next_component() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let headers = xff(&["203.0.113.9"]);
        let mut ext = Extensions::new();
        assert_eq!(p.resolve(None, &headers, &mut ext), None);
        assert_eq!(
            p.resolve(Some(ip("10.0.0.1")), &headers, &mut ext),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(ClientIp::of(&ext), Some(ip("203.0.113.9")));
        // A later component with no proxies configured still sees the client.
        assert_eq!(
            TrustedProxies::none().resolve(Some(ip("10.0.0.1")), &headers, &mut ext),
            Some(ip("203.0.113.9"))
        );
    }
}
