//! Which address a request comes from: the socket peer, or what trusted
//! proxies say about it.
//!
//! The peer address comes from axum's `ConnectInfo<SocketAddr>` (serve the
//! router with `into_make_service_with_connect_info::<SocketAddr>()`). Only
//! when the peer is one of the configured trusted proxies is the forwarding
//! header read, and then from the right: each proxy appends the address it
//! received the request from, so the rightmost hop that is *not* a trusted
//! proxy is the client. Hops further left were written by the client and
//! could say anything. (Taking the leftmost `X-Forwarded-For` hop, as
//! `tower_governor` does, lets any client pick its own rate-limit key.)

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use http::{header::FORWARDED, HeaderMap, HeaderName};

/// At most this many hops are examined, so a huge header costs bounded work.
const MAX_HOPS: usize = 32;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The forwarding header the trusted proxies set.
///
/// Configure the one your proxies actually write: a client can send either,
/// and the one your proxies do not touch is entirely client-written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// A network in CIDR notation, e.g. `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not an address or a CIDR network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR network: {0:?}")]
pub struct InvalidNet(pub String);

impl IpNet {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix) == net,
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = InvalidNet;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InvalidNet(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (s.trim(), None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| err())?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(a, prefix)),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(a, prefix)),
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The reverse proxies whose forwarding headers are believed.
///
/// ```
/// use std::net::IpAddr;
/// use auth_ratelimit::TrustedProxies;
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
    nets: Vec<IpNet>,
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
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(Self {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    /// Reads `header` instead of `X-Forwarded-For`.
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request from socket peer `peer`.
    ///
    /// Walks the forwarding header from the right while hops are trusted
    /// proxies, and returns the first untrusted hop. If every hop is trusted,
    /// the leftmost is returned. If a hop cannot be parsed (`unknown`, an
    /// obfuscated name, garbage), the walk stops there and the proxy that
    /// wrote it is returned. Never panics, whatever the headers hold.
    #[inline]
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
        };
        let mut client = peer;
        let mut seen = 0;
        for value in headers.get_all(name).iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for element in value.rsplit(',') {
                seen += 1;
                if seen > MAX_HOPS {
                    return client;
                }
                let hop = match self.header {
                    ForwardedHeader::XForwardedFor => parse_node(element),
                    ForwardedHeader::Forwarded => forwarded_for(element).and_then(parse_node),
                };
                match hop {
                    Some(ip) if self.contains(ip) => client = ip,
                    Some(ip) => return ip,
                    None => return client,
                }
            }
        }
        client
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

fn mask_v4(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let bits = u32::from(ip);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits & mask)
}

pub(crate) fn mask_v6(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(ip);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    };
    Ipv6Addr::from(bits & mask)
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
        let n: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.255.0.1")));
        assert!(
            n.contains(ip("::ffff:10.0.0.1")),
            "v4-mapped v6 is canonicalised"
        );
        assert!(!n.contains(ip("11.0.0.1")));
        let n: IpNet = "fd00::/8".parse().unwrap();
        assert!(n.contains(ip("fd12::1")));
        assert!(!n.contains(ip("fe80::1")));
        assert!("127.0.0.1"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("127.0.0.1")));
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
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
        // Garbage stops the walk at the proxy that wrote it.
        assert_eq!(
            p.client_ip(peer, &xff(&["1.1.1.1, unknown, 10.0.0.5"])),
            ip("10.0.0.5")
        );
        // Ports, brackets and quotes are tolerated.
        assert_eq!(
            p.client_ip(peer, &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(p.client_ip(peer, &xff(&["3.3.3.3:1234"])), ip("3.3.3.3"));
    }

    #[test]
    fn untrusted_peer_ignores_headers() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        assert_eq!(
            p.client_ip(ip("5.5.5.5"), &xff(&["1.1.1.1"])),
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
        assert_eq!(p.client_ip(ip("192.0.2.1"), &h), ip("192.0.2.43"));
    }

    #[test]
    fn bounded_work_on_huge_headers() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let long = vec!["10.0.0.9"; 10_000].join(",");
        let got = p.client_ip(ip("10.0.0.1"), &xff(&[&long]));
        assert_eq!(got, ip("10.0.0.9"));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn masks() {
        assert_eq!(
            mask_v6(ip6("2001:db8:1:2:3:4:5:6"), 64),
            ip6("2001:db8:1:2::")
        );
        assert_eq!(mask_v6(ip6("2001:db8::1"), 0), Ipv6Addr::UNSPECIFIED);
        assert_eq!(mask_v6(ip6("2001:db8::1"), 200), ip6("2001:db8::1"));
        assert_eq!(
            mask_v4("1.2.3.4".parse().unwrap(), 24),
            Ipv4Addr::new(1, 2, 3, 0)
        );
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
}
