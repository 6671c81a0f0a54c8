//! The `RateLimit-*` response headers.

use std::{fmt::Write, sync::OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue};

use smallvec::SmallVec;

use crate::{quota::ceil_secs, store::RULES_INLINE, Decision};

/// `RateLimit-Limit`.
pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`.
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// `RateLimit-Policy` (IETF draft structured field).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF draft structured field).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Which rate-limit headers go on responses (429s included). `Retry-After`
/// is sent on 429s whatever this says.
///
/// * **Legacy** (default): `RateLimit-Limit: 200`, `RateLimit-Remaining: 57`,
///   `RateLimit-Reset: 1800`, as GitLab and Kong send them. The reset is in
///   seconds from now (Kong and the early IETF drafts; GitLab sends a Unix
///   time) until the bucket is full again, rounded up. When several rules
///   apply, the numbers are the most restrictive rule's: the refusing one with
///   the longest wait on a 429, else the one with the fewest tokens left.
/// * **Draft**: the structured fields of the IETF httpapi draft, one item per
///   rule that applied: `RateLimit-Policy: "default";q=200;w=3600` and
///   `RateLimit: "default";r=57;t=1800`, where `w` is the time an empty
///   bucket takes to fill and `t` the time until this one is full.
/// * **Both**: both sets.
/// * **Hidden**: none, for services that don't disclose their limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.
    #[default]
    Legacy,
    /// `RateLimit-Policy` and `RateLimit` (IETF draft).
    Draft,
    /// Legacy and draft headers.
    Both,
    /// No rate-limit headers.
    Hidden,
}

impl HeaderStyle {
    #[inline]
    pub(crate) fn legacy(self) -> bool {
        matches!(self, Self::Legacy | Self::Both)
    }

    #[inline]
    pub(crate) fn draft(self) -> bool {
        matches!(self, Self::Draft | Self::Both)
    }
}

/// The decisions of every rule that applied to a request, by rule index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Checked {
    pub(crate) items: SmallVec<[(usize, Decision); RULES_INLINE]>,
}

impl Checked {
    /// Adds rule `rule`'s decision; a rule with two buckets (an IPv6 site
    /// aggregate, an acting key) reports the more restrictive.
    pub(crate) fn push(&mut self, rule: usize, d: Decision) {
        match self.items.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, kept)) => {
                if more_restrictive(&d, kept) {
                    *kept = d;
                }
            }
            None => self.items.push((rule, d)),
        }
    }

    pub(crate) fn allowed(&self) -> bool {
        self.items.iter().all(|(_, d)| d.is_allowed())
    }

    /// The decision the legacy headers and `Retry-After` report.
    pub(crate) fn most_restrictive(&self) -> Option<&Decision> {
        self.items
            .iter()
            .map(|(_, d)| d)
            .reduce(|m, d| if more_restrictive(d, m) { d } else { m })
    }

    /// The header values `style` asks for; `name` gives a rule's name.
    pub(crate) fn render<'a>(
        &self,
        style: HeaderStyle,
        name: impl Fn(usize) -> &'a str,
    ) -> RateHeaders {
        let most = if style.legacy() {
            self.most_restrictive()
        } else {
            None
        };
        let all = if style.draft() { Some(self) } else { None };
        RateHeaders::new(most, all, name)
    }

    /// `RateLimit-Policy` and `RateLimit` for these decisions.
    fn draft_fields<'a>(&self, name: impl Fn(usize) -> &'a str) -> Option<[HeaderValue; 2]> {
        if self.items.is_empty() {
            return None;
        }
        let mut policy = String::new();
        let mut state = String::new();
        for (i, (rule, d)) in self.items.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let name = name(*rule);
            let _ = write!(
                policy,
                "{sep}\"{name}\";q={};w={}",
                d.limit(),
                d.quota().window_secs()
            );
            let _ = write!(
                state,
                "{sep}\"{name}\";r={};t={}",
                d.remaining(),
                ceil_secs(d.reset_nanos())
            );
        }
        // Names are checked to be plain ASCII when the limiter is built.
        Some([
            HeaderValue::try_from(policy).ok()?,
            HeaderValue::try_from(state).ok()?,
        ])
    }
}

/// Whether `a` should be reported rather than `b`: a refusal over a pass,
/// the longer wait among refusals, the fewest tokens left among passes (then
/// the longer time until full).
pub(crate) fn more_restrictive(a: &Decision, b: &Decision) -> bool {
    match (a.is_allowed(), b.is_allowed()) {
        (false, true) => true,
        (true, false) => false,
        (false, false) => a.retry_after_nanos() > b.retry_after_nanos(),
        (true, true) => {
            (a.remaining(), std::cmp::Reverse(a.reset_nanos()))
                < (b.remaining(), std::cmp::Reverse(b.reset_nanos()))
        }
    }
}

/// Header values for 0..SMALL are shared static strings: no allocation.
const SMALL: u64 = 4096;

/// `n` as a header value.
fn number(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        // One leaked string holding every number, sliced per value, so
        // cloning a value is a pointer copy (no reference count).
        let mut all = String::new();
        let mut ends = Vec::with_capacity(SMALL as usize);
        for i in 0..SMALL {
            let _ = write!(all, "{i}");
            ends.push(all.len());
        }
        let all: &'static str = Box::leak(all.into_boxed_str());
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let v = HeaderValue::from_static(&all[start..end]);
                start = end;
                v
            })
            .collect()
    });
    match usize::try_from(n).ok().and_then(|i| table.get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

/// Rate-limit headers ready to go on a response: the legacy numbers, and the
/// rendered draft fields. Small, since it travels in the response future.
#[derive(Clone, Debug, Default)]
pub(crate) struct RateHeaders {
    /// Limit, remaining, reset.
    legacy: Option<[u64; 3]>,
    /// `RateLimit-Policy`, `RateLimit`.
    draft: Option<Box<[HeaderValue; 2]>>,
}

impl RateHeaders {
    /// The legacy trio from `most` and the draft fields from `all`, when given.
    #[inline]
    pub(crate) fn new<'a>(
        most: Option<&Decision>,
        all: Option<&Checked>,
        name: impl Fn(usize) -> &'a str,
    ) -> Self {
        Self {
            legacy: most.map(|d| {
                [
                    u64::from(d.limit()),
                    u64::from(d.remaining()),
                    ceil_secs(d.reset_nanos()),
                ]
            }),
            draft: all.and_then(|c| c.draft_fields(name)).map(Box::new),
        }
    }

    /// Puts the values on `headers`, replacing any the handler set.
    #[inline]
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        if let Some([limit, remaining, reset]) = self.legacy {
            headers.insert(RATELIMIT_LIMIT.clone(), number(limit));
            headers.insert(RATELIMIT_REMAINING.clone(), number(remaining));
            headers.insert(RATELIMIT_RESET.clone(), number(reset));
        }
        if let Some(draft) = self.draft {
            let [policy, state] = *draft;
            headers.insert(RATELIMIT_POLICY.clone(), policy);
            headers.insert(RATELIMIT.clone(), state);
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.legacy.is_none() && self.draft.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    const S: u64 = 1_000_000_000;

    const NAMES: [&str; 4] = ["default", "login", "a", "b"];

    fn checked() -> Checked {
        let mut c = Checked::default();
        // default: 200/h, 143 used => r=57, full in 143*18 s.
        c.push(0, Decision::allowed(Quota::per_hour(200), 143 * 18 * S));
        // login: 5/min, 2 used => r=3.
        c.push(1, Decision::allowed(Quota::per_minute(5), 24 * S - 1));
        c
    }

    fn headers(c: &Checked, style: HeaderStyle) -> HeaderMap {
        let mut h = HeaderMap::new();
        c.render(style, |i| NAMES[i]).apply(&mut h);
        h
    }

    #[test]
    fn legacy_reports_the_fewest_remaining() {
        let h = headers(&checked(), HeaderStyle::Legacy);
        assert_eq!(h[&RATELIMIT_LIMIT], "5");
        assert_eq!(h[&RATELIMIT_REMAINING], "3");
        assert_eq!(h[&RATELIMIT_RESET], "24");
        assert!(!h.contains_key(&RATELIMIT_POLICY));
    }

    #[test]
    fn draft_lists_every_rule() {
        let h = headers(&checked(), HeaderStyle::Draft);
        assert_eq!(
            h[&RATELIMIT_POLICY],
            r#""default";q=200;w=3600, "login";q=5;w=60"#
        );
        assert_eq!(h[&RATELIMIT], r#""default";r=57;t=2574, "login";r=3;t=24"#);
        assert!(!h.contains_key(&RATELIMIT_LIMIT));
        assert_eq!(headers(&checked(), HeaderStyle::Both).len(), 5);
        assert!(headers(&checked(), HeaderStyle::Hidden).is_empty());
        assert!(checked()
            .render(HeaderStyle::Hidden, |i| NAMES[i])
            .is_empty());
    }

    #[test]
    fn numbers() {
        for n in [0, 1, 9, 10, 4095, 4096, 123_456, u64::MAX] {
            assert_eq!(number(n), n.to_string().as_str());
        }
    }

    #[test]
    fn denial_reports_the_longest_wait() {
        let mut c = checked();
        c.push(2, Decision::denied(Quota::per_minute(1), 60 * S, 10 * S));
        c.push(3, Decision::denied(Quota::per_hour(1), 3600 * S, 1800 * S));
        assert!(!c.allowed());
        let d = c.most_restrictive().unwrap();
        assert_eq!(d.retry_after(), Some(std::time::Duration::from_secs(1800)));
        let h = headers(&c, HeaderStyle::Legacy);
        assert_eq!(h[&RATELIMIT_LIMIT], "1");
        assert_eq!(h[&RATELIMIT_REMAINING], "0");
        assert_eq!(h[&RATELIMIT_RESET], "3600");
    }
}
