//! The recording policy of the durable audit logs: which events get a row
//! of their own, which are counted, and what an event costs the store.
//!
//! - Key management and impersonation ([`Lane::Priority`]): a row each,
//!   never shed.
//! - Every use of a real key, let through or refused ([`Lane::Row`]): a row
//!   each. Refusals beyond a ceiling per key and minute are counted instead.
//! - Refusals that name no real key (malformed, bad checksum, unknown id,
//!   throttled guesses, a limiter's refusal of an unauthenticated request)
//!   ([`Lane::Counted`]): exact
//!   counts per minute, reason and client network (`/24`, `/64`), with the
//!   first event of each window as a sample. A minute holds at most a
//!   configured number of networks; later ones are counted under `other`.
//!
//! A real key's requests are also counted per hour in the usage roll-up,
//! whichever lane they took, so the activity chart stays exact.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
};

use crate::{audit::AuditOutcome, AuditEvent, KeyId, RejectReason};

/// Where an event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Key management or impersonation: a row, never shed.
    Priority,
    /// A real key's use, or any let-through request: a row, shed (and
    /// counted) only when the store cannot keep up.
    Row,
    /// No real key, or a limiter's refusal: counted, no row.
    Counted,
}

/// The lane of `e`.
pub(crate) fn lane(e: &AuditEvent) -> Lane {
    if e.created_key.is_some()
        || e.key_management
        || e.subject.is_some()
        || matches!(
            e.reason,
            Some(RejectReason::ImpersonationDenied | RejectReason::UnknownSubject)
        )
    {
        return Lane::Priority;
    }
    match e.outcome {
        AuditOutcome::Success => Lane::Row,
        // A limiter's refusal of a real key's request is that key's use
        // (under the key's ceiling); of anything else, counted.
        AuditOutcome::Failure if names_real_key(e) => Lane::Row,
        AuditOutcome::Failure => Lane::Counted,
    }
}

/// The event is about a key (or account) that exists: its owner is known,
/// or the refusal could only be given after finding the key.
fn names_real_key(e: &AuditEvent) -> bool {
    e.actor.is_some()
        || (e.key_id.is_some()
            && matches!(
                e.reason,
                Some(
                    RejectReason::WrongSecret
                        | RejectReason::Revoked
                        | RejectReason::Expired
                        | RejectReason::Disabled
                )
            ))
}

/// The real key whose usage `e` counts towards, if any.
pub(crate) fn usage_key(e: &AuditEvent) -> Option<KeyId> {
    e.key_id.filter(|_| names_real_key(e))
}

/// A client network: the `/24` of an IPv4 address, the `/64` of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Network {
    V4([u8; 3]),
    V6([u16; 4]),
    /// No client address.
    Unknown,
    /// The minute already had its fill of networks.
    Other,
}

impl Network {
    pub(crate) fn of(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => {
                let [a, b, c, _] = v4.octets();
                Self::V4([a, b, c])
            }
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                Self::V6([s[0], s[1], s[2], s[3]])
            }
            None => Self::Unknown,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Self::V6(s) => {
                let ip = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                write!(f, "{ip}/64")
            }
            Self::Unknown => f.write_str("unknown"),
            Self::Other => f.write_str("other"),
        }
    }
}

/// Counts added to one key's hour of the usage roll-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UsageDelta {
    pub(crate) key_id: String,
    /// Unix seconds of the hour's start.
    pub(crate) hour: i64,
    pub(crate) success: u64,
    pub(crate) refused: u64,
    pub(crate) rate_limited: u64,
}

/// Refusals counted in one minute, reason and network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefusalRow {
    /// Unix seconds of the minute's start.
    pub(crate) minute: i64,
    pub(crate) reason: RejectReason,
    pub(crate) network: String,
    pub(crate) count: u64,
    /// The window's first event.
    pub(crate) sample: AuditEvent,
}

/// Usage counts per key and hour, merged before they are written.
#[derive(Default)]
pub(crate) struct UsageTally(HashMap<(KeyId, i64), [u64; 3]>);

impl UsageTally {
    /// Counts `e` if it names a real key.
    pub(crate) fn add(&mut self, e: &AuditEvent) {
        let Some(key) = usage_key(e) else { return };
        let s = e.at.unix_timestamp();
        let hour = s - s.rem_euclid(3_600);
        let slot = match (e.outcome, e.reason) {
            (AuditOutcome::Success, _) => 0,
            (AuditOutcome::Failure, Some(RejectReason::RateLimited)) => 2,
            (AuditOutcome::Failure, _) => 1,
        };
        self.0.entry((key, hour)).or_default()[slot] += 1;
    }

    /// Sorted by key and hour, so that concurrent writers lock rows in one order.
    pub(crate) fn into_deltas(self) -> Vec<UsageDelta> {
        let mut rows: Vec<_> = self.0.into_iter().collect();
        rows.sort_unstable_by_key(|(k, _)| *k);
        rows.into_iter()
            .map(
                |((key, hour), [success, refused, rate_limited])| UsageDelta {
                    key_id: key.to_string(),
                    hour,
                    success,
                    refused,
                    rate_limited,
                },
            )
            .collect()
    }

    fn merge(&mut self, other: UsageTally) {
        for (k, v) in other.0 {
            let slot = self.0.entry(k).or_default();
            for (sum, n) in slot.iter_mut().zip(v) {
                *sum += n;
            }
        }
    }
}

/// Limits of the policy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Refusal rows per real key (or account) and minute.
    pub(crate) refusal_rows_per_key: u32,
    /// Networks with a row of their own per minute.
    pub(crate) networks_per_minute: usize,
}

/// Whose refusals a ceiling applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Key(KeyId),
    Account(std::sync::Arc<str>),
}

/// What is counted rather than written row by row, until the writer takes it.
pub(crate) struct Tally {
    limits: Limits,
    /// The minute (unix seconds / 60) the ceilings below are for.
    minute: i64,
    /// Refusal rows given to each key this minute.
    rows_given: HashMap<Owner, u32>,
    /// Windows with a network of their own this minute.
    networks: HashSet<(RejectReason, Network)>,
    refusals: HashMap<(i64, RejectReason, Network), (u64, AuditEvent)>,
    usage: UsageTally,
}

impl Tally {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            minute: i64::MIN,
            rows_given: HashMap::new(),
            networks: HashSet::new(),
            refusals: HashMap::new(),
            usage: UsageTally::default(),
        }
    }

    fn roll(&mut self, minute: i64) {
        if minute > self.minute {
            self.minute = minute;
            self.rows_given.clear();
            self.networks.clear();
        }
    }

    /// Whether refused `e` (of [`Lane::Row`]) may have its own row: at most
    /// the ceiling per key and minute.
    pub(crate) fn grant_refusal_row(&mut self, e: &AuditEvent) -> bool {
        let owner = match (e.key_id, &e.actor) {
            (Some(k), _) => Owner::Key(k),
            (None, Some(a)) => Owner::Account(a.clone()),
            (None, None) => return true,
        };
        self.roll(e.at.unix_timestamp().div_euclid(60));
        let given = self.rows_given.entry(owner).or_insert(0);
        if *given >= self.limits.refusal_rows_per_key {
            return false;
        }
        *given += 1;
        true
    }

    /// Counts `e` without a row: in its window, and in its key's usage.
    pub(crate) fn count(&mut self, e: AuditEvent) {
        self.usage.add(&e);
        let minute = e.at.unix_timestamp().div_euclid(60);
        self.roll(minute);
        let reason = e.reason.unwrap_or(RejectReason::Internal);
        let mut network = Network::of(e.client_ip);
        if !self.networks.contains(&(reason, network)) {
            if self.networks.len() >= self.limits.networks_per_minute {
                network = Network::Other;
            } else {
                self.networks.insert((reason, network));
            }
        }
        self.refusals
            .entry((minute, reason, network))
            .and_modify(|(n, _)| *n += 1)
            .or_insert((1, e));
    }

    /// Counts a shed event in its key's usage (it has no row).
    pub(crate) fn count_shed(&mut self, e: &AuditEvent) {
        self.usage.add(e);
    }

    /// Everything counted so far, with `usage` merged in; leaves the
    /// ceilings of the current minute as they are.
    pub(crate) fn take(&mut self, usage: UsageTally) -> (Vec<UsageDelta>, Vec<RefusalRow>) {
        let mut all = std::mem::take(&mut self.usage);
        all.merge(usage);
        let mut refusals: Vec<_> = self.refusals.drain().collect();
        refusals.sort_unstable_by_key(|((minute, reason, network), _)| {
            (*minute, *reason as u8, *network)
        });
        let refusals = refusals
            .into_iter()
            .map(|((minute, reason, network), (count, sample))| RefusalRow {
                minute: minute * 60,
                reason,
                network: network.to_string(),
                count,
                sample,
            })
            .collect();
        (all.into_deltas(), refusals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn refused(reason: RejectReason, ip: &str, second: i64) -> AuditEvent {
        let mut e = AuditEvent::new(
            datetime!(2030-01-01 10:00 UTC) + time::Duration::seconds(second),
            AuditOutcome::Failure,
            http::Method::GET,
            "/api/me",
        );
        e.reason = Some(reason);
        e.client_ip = Some(ip.parse().unwrap());
        e
    }

    #[test]
    fn lanes_follow_the_policy() {
        let mut e = refused(RejectReason::Malformed, "192.0.2.1", 0);
        assert_eq!(lane(&e), Lane::Counted);
        e.key_id = Some(KeyId::random());
        e.reason = Some(RejectReason::UnknownKey);
        assert_eq!(lane(&e), Lane::Counted);
        for real in [
            RejectReason::WrongSecret,
            RejectReason::Revoked,
            RejectReason::Expired,
            RejectReason::Disabled,
        ] {
            e.reason = Some(real);
            assert_eq!(lane(&e), Lane::Row, "{real}");
        }
        for limiter in [RejectReason::Throttled, RejectReason::RateLimited] {
            e.reason = Some(limiter);
            assert_eq!(lane(&e), Lane::Counted, "{limiter} without a real key");
        }
        e.actor = Some("alice".into());
        for (reason, expected) in [
            (RejectReason::InsufficientScope, Lane::Row),
            (RejectReason::IpNotAllowed, Lane::Row),
            (RejectReason::UsageExceeded, Lane::Row),
            (RejectReason::RateLimited, Lane::Row),
            (RejectReason::ImpersonationDenied, Lane::Priority),
        ] {
            e.reason = Some(reason);
            assert_eq!(lane(&e), expected, "{reason}");
        }
        let mut ok = AuditEvent::new(e.at, AuditOutcome::Success, http::Method::POST, "/keys");
        assert_eq!(lane(&ok), Lane::Row);
        ok.created_key = Some(KeyId::random());
        assert_eq!(lane(&ok), Lane::Priority);
        ok.created_key = None;
        // An edit or a revocation (no key created), and one refused.
        ok.key_management = true;
        assert_eq!(lane(&ok), Lane::Priority);
        ok.outcome = AuditOutcome::Failure;
        ok.reason = Some(RejectReason::InsufficientScope);
        assert_eq!(lane(&ok), Lane::Priority);
        ok.key_management = false;
        ok.outcome = AuditOutcome::Success;
        ok.reason = None;
        ok.subject = Some("bob".into());
        assert_eq!(lane(&ok), Lane::Priority);
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        let n = |ip: &str| Network::of(Some(ip.parse().unwrap())).to_string();
        assert_eq!(n("198.51.100.77"), "198.51.100.0/24");
        assert_eq!(n("::ffff:198.51.100.77"), "198.51.100.0/24");
        assert_eq!(n("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(Network::of(None).to_string(), "unknown");
    }

    #[test]
    fn counts_are_exact_and_networks_bounded_per_minute() {
        let mut t = Tally::new(Limits {
            refusal_rows_per_key: 2,
            networks_per_minute: 3,
        });
        for i in 0..10u8 {
            // Ten networks, two refusals each, in one minute.
            for s in 0..2 {
                t.count(refused(RejectReason::Malformed, &format!("10.0.{i}.1"), s));
            }
        }
        t.count(refused(RejectReason::Malformed, "10.0.0.9", 61)); // the next minute
        let (usage, rows) = t.take(UsageTally::default());
        assert!(usage.is_empty(), "no real key, no usage");
        let first: Vec<_> = rows.iter().filter(|r| r.minute % 3600 == 0).collect();
        assert_eq!(first.iter().map(|r| r.count).sum::<u64>(), 20);
        assert_eq!(first.len(), 4, "three networks and `other`: {first:?}");
        let other = first.iter().find(|r| r.network == "other").unwrap();
        assert_eq!(other.count, 14);
        let next: Vec<_> = rows.iter().filter(|r| r.minute % 3600 == 60).collect();
        assert_eq!((next.len(), next[0].count), (1, 1));
        assert_eq!(next[0].network, "10.0.0.0/24");
        // The sample is the window's first event.
        let own = first.iter().find(|r| r.network == "10.0.0.0/24").unwrap();
        assert_eq!(own.sample.at, datetime!(2030-01-01 10:00 UTC));
    }

    #[test]
    fn a_key_gets_a_ceiling_of_refusal_rows_per_minute() {
        let mut t = Tally::new(Limits {
            refusal_rows_per_key: 2,
            networks_per_minute: 10,
        });
        let key = KeyId::random();
        let mut e = refused(RejectReason::WrongSecret, "192.0.2.1", 0);
        e.key_id = Some(key);
        let granted: Vec<bool> = (0..4).map(|_| t.grant_refusal_row(&e)).collect();
        assert_eq!(granted, [true, true, false, false]);
        let mut later = e.clone();
        later.at += time::Duration::minutes(1);
        assert!(t.grant_refusal_row(&later), "a new minute, a new ceiling");
        // What is over the ceiling is counted, in its window and its key's usage.
        t.count(e.clone());
        t.count(e);
        let (usage, rows) = t.take(UsageTally::default());
        assert_eq!(usage.len(), 1);
        assert_eq!((usage[0].refused, usage[0].success), (2, 0));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 2);
        assert_eq!(rows[0].sample.key_id, Some(key));
    }
}
