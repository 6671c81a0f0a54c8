//! IPv6 clients are counted twice: per network of the client prefix (a /64,
//! one subscriber) and in an aggregate per site prefix (a /48, what one
//! organisation is usually assigned), whose quota is a multiple of the
//! rule's. Without the aggregate, the holder of a /48 would have 65,536
//! buckets of its own.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use ipnet::Ipv6Net;

use crate::Quota;

/// The site aggregate of IPv6 clients: its prefix length and how many times
/// a rule's quota it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ipv6Site {
    pub(crate) bits: u8,
    pub(crate) multiplier: u32,
}

impl Default for Ipv6Site {
    /// A /48 gets 16 times the quota of one /64.
    fn default() -> Self {
        Self {
            bits: 48,
            multiplier: 16,
        }
    }
}

impl Ipv6Site {
    /// The site network of `ip`, when it is an IPv6 client (the bucket value
    /// of its client network, or the address itself).
    #[inline]
    pub(crate) fn network(&self, ip: IpAddr) -> Option<Ipv6Addr> {
        match ip.to_canonical() {
            IpAddr::V6(v6) if self.multiplier > 0 => {
                Some(Ipv6Net::new(v6, self.bits).map_or(v6, |n| n.network()))
            }
            _ => None,
        }
    }

    /// `quota` for the whole site: `multiplier` times the burst, refilled
    /// `multiplier` times as fast (the same window).
    pub(crate) fn quota(&self, quota: Quota) -> Quota {
        let m = self.multiplier.max(1);
        let interval = quota.interval().as_nanos() / u128::from(m);
        let interval = u64::try_from(interval).unwrap_or(u64::MAX).max(1);
        Quota::every(Duration::from_nanos(interval)).with_burst(quota.burst().saturating_mul(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_is_a_48_with_16_times_the_quota() {
        let site = Ipv6Site::default();
        let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(site.network(ip), Some("2001:db8:1::".parse().unwrap()));
        let other_64: IpAddr = "2001:db8:1:ffff::1".parse().unwrap();
        assert_eq!(site.network(other_64), site.network(ip));
        assert_eq!(site.network("192.0.2.1".parse().unwrap()), None);
        // IPv4 mapped in IPv6 is IPv4.
        assert_eq!(site.network("::ffff:192.0.2.1".parse().unwrap()), None);
        let q = site.quota(Quota::per_minute(30));
        assert_eq!(q.burst(), 480);
        assert_eq!(q.window(), Duration::from_secs(60));
        let off = Ipv6Site {
            bits: 48,
            multiplier: 0,
        };
        assert_eq!(off.network(ip), None);
    }
}
