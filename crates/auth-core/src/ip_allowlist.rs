//! Per-key IP allowlists: whether a key may be used from a client address.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{client_ip::canonical_net, AuthContext};

impl AuthContext {
    /// Whether the key may be used from `client`, the request's resolved
    /// client address (see [`TrustedProxies`](crate::client_ip::TrustedProxies)).
    ///
    /// Without an allowlist, any address (and an unknown one) is allowed.
    /// With one, only an address in one of its networks: an unknown address
    /// is refused, so a missing peer address fails closed. IPv4-mapped IPv6
    /// addresses (`::ffff:203.0.113.9`) match IPv4 networks.
    ///
    /// ```
    /// use auth_core::{AuthContext, KeyId, policy::KeyPolicy, Principal, ScopeSet};
    ///
    /// let ctx = AuthContext::for_key(KeyId::from_u64(1), "ci", Principal::user("alice"), ScopeSet::empty());
    /// assert!(ctx.allows_ip(None), "no allowlist: any address");
    /// let policy = KeyPolicy::default().ip_allowlist(vec!["203.0.113.0/24".parse().unwrap()]);
    /// let ctx = ctx.with_key_policy(policy);
    /// assert!(ctx.allows_ip(Some("203.0.113.9".parse().unwrap())));
    /// assert!(ctx.allows_ip(Some("::ffff:203.0.113.9".parse().unwrap())));
    /// assert!(!ctx.allows_ip(Some("198.51.100.1".parse().unwrap())));
    /// assert!(!ctx.allows_ip(None), "an unknown address fails closed");
    /// ```
    #[inline]
    pub fn allows_ip(&self, client: Option<IpAddr>) -> bool {
        let nets = self.ip_allowlist();
        nets.is_empty() || client.is_some_and(|ip| allowed(nets, ip))
    }
}

/// Whether `ip` is in one of `nets`, addresses and networks compared in
/// canonical form (IPv4-mapped IPv6 as IPv4, whichever way each is written).
fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| canonical_net(*n).contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_v6_and_mapped_addresses() {
        let list = nets(&["203.0.113.0/24", "2001:db8::/32"]);
        assert!(allowed(&list, ip("203.0.113.200")));
        assert!(!allowed(&list, ip("203.0.114.1")));
        assert!(allowed(&list, ip("2001:db8:1::5")));
        assert!(!allowed(&list, ip("2001:db9::1")));
        assert!(allowed(&list, ip("::ffff:203.0.113.7")), "mapped v4");
        assert!(!allowed(&list, ip("::ffff:198.51.100.7")));
        // A net written as mapped IPv6 still matches the IPv4 address.
        let mapped = nets(&["::ffff:192.0.2.0/120"]);
        assert!(allowed(&mapped, ip("::ffff:192.0.2.9")));
        assert!(allowed(&mapped, ip("192.0.2.9")));
        assert!(!allowed(&mapped, ip("192.0.3.9")));
    }
}
