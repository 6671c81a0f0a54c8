//! Audit events: one per authentication attempt, and where they go.

use std::{fmt, net::IpAddr, sync::Arc};

use async_trait::async_trait;
use compact_str::CompactString;
use http::Method;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{store::StoreError, KeyId, RejectReason};

/// Whether the attempt was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Authenticated.
    Success,
    /// Refused.
    Failure,
}

impl AuditOutcome {
    /// `success` or `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

impl Serialize for RejectReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RejectReason::from_name(&s).ok_or_else(|| serde::de::Error::custom("unknown reason"))
    }
}

/// One authentication attempt. Never holds a credential.
///
/// Built on every audited request, so its parts are cheap to make: the
/// method is an [`http::Method`] (no allocation for the standard ones), the
/// actor and subject share the key record's user id ([`Arc<str>`]), and the
/// path and `User-Agent` are [`CompactString`]s, held inline up to 24 bytes
/// (longer ones are allocated). Serialized, every field is a plain JSON
/// value (the method and names as strings, `at` in RFC 3339).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct AuditEvent {
    /// Sequence number given by the log that stored it (the pagination cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// The key used, if the token was well formed.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<KeyId>))]
    pub key_id: Option<KeyId>,
    /// The key's owner, if known.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub actor: Option<Arc<str>>,
    /// The subject user, when acting on someone's behalf.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub subject: Option<Arc<str>>,
    /// Let through or refused.
    #[cfg_attr(feature = "utoipa", schema(value_type = AuditOutcome))]
    pub outcome: AuditOutcome,
    /// Why it was refused.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<RejectReason>))]
    pub reason: Option<RejectReason>,
    /// HTTP method (or another label, such as the command line's `CLI`).
    #[serde(with = "method_serde")]
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub method: Method,
    /// Request path, without the query string (which may hold a credential).
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub path: CompactString,
    /// Response status, when known.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<u16>))]
    pub status: Option<u16>,
    /// Client address.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub client_ip: Option<IpAddr>,
    /// `User-Agent`, truncated.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub user_agent: Option<CompactString>,
    /// The key this request created (the key API's create or rotate), so
    /// that the log says which key made which: the request's own `key_id`
    /// is the creator. See [`KeyCreated`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<KeyId>))]
    pub created_key: Option<KeyId>,
    /// The request managed keys (created, rotated, edited or revoked one,
    /// or tried to): the durable logs never shed such an event when their
    /// store falls behind. Set by the auth layer from [`KeyManaged`] (or
    /// [`KeyCreated`]); it decides where the event is queued and is not
    /// stored nor serialized.
    #[serde(skip)]
    pub key_management: bool,
}

impl AuditEvent {
    /// An attempt at `at` on `method` `path`, with everything else unknown:
    /// set the other fields on the result.
    ///
    /// ```
    /// use auth_core::{audit::AuditOutcome, AuditEvent, RejectReason};
    /// use http::Method;
    /// let mut event = AuditEvent::new(time::OffsetDateTime::now_utc(), AuditOutcome::Failure, Method::POST, "/login");
    /// event.reason = Some(RejectReason::WrongSecret);
    /// event.status = Some(401);
    /// assert!(event.key_id.is_none());
    /// assert_eq!(serde_json::to_value(&event).unwrap()["method"], "POST");
    /// ```
    pub fn new(
        at: OffsetDateTime,
        outcome: AuditOutcome,
        method: Method,
        path: impl Into<CompactString>,
    ) -> Self {
        Self {
            id: None,
            at,
            key_id: None,
            actor: None,
            subject: None,
            outcome,
            reason: None,
            method,
            path: path.into(),
            status: None,
            client_ip: None,
            user_agent: None,
            created_key: None,
            key_management: false,
        }
    }
}

/// An event's method as a JSON string, as it is stored.
mod method_serde {
    use http::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let s = String::deserialize(d)?;
        Method::from_bytes(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// The current time (UTC), as audit events take it: the calendar date is
/// worked out once a day per thread, not for every event, which is most of
/// what [`OffsetDateTime::now_utc`] costs.
///
/// ```
/// let t = auth_core::audit::audit_now();
/// let reference = time::OffsetDateTime::now_utc();
/// assert!((reference - t).abs() < time::Duration::seconds(5));
/// ```
pub fn audit_now() -> OffsetDateTime {
    use std::cell::Cell;
    thread_local! {
        static TODAY: Cell<Option<(u64, time::Date)>> = const { Cell::new(None) };
    }
    let Some((secs, nanos)) = realtime() else {
        return OffsetDateTime::now_utc();
    };
    let (day, of_day) = (secs / 86_400, secs % 86_400);
    let date = TODAY.with(|today| match today.get() {
        Some((d, date)) if d == day => Some(date),
        _ => {
            let date = OffsetDateTime::from_unix_timestamp((day * 86_400) as i64)
                .ok()?
                .date();
            today.set(Some((day, date)));
            Some(date)
        }
    });
    let time = time::Time::from_hms_nano(
        (of_day / 3_600) as u8,
        (of_day / 60 % 60) as u8,
        (of_day % 60) as u8,
        nanos,
    );
    match (date, time) {
        (Some(date), Ok(time)) => time::PrimitiveDateTime::new(date, time).assume_utc(),
        _ => OffsetDateTime::now_utc(),
    }
}

/// Seconds and nanoseconds since the Unix epoch, read straight from
/// `CLOCK_REALTIME` (no `Duration` arithmetic); `None` before 1970.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn realtime() -> Option<(u64, u32)> {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_REALTIME).ok()?;
    Some((
        u64::try_from(t.tv_sec()).ok()?,
        u32::try_from(t.tv_nsec()).ok()?,
    ))
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn realtime() -> Option<(u64, u32)> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .ok()?;
    Some((d.as_secs(), d.subsec_nanos()))
}

/// Left in a response's extensions by a handler that created a key: the
/// auth layer copies it into the request's [`AuditEvent::created_key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCreated(pub KeyId);

/// Left in a response's extensions by a handler that manages keys (edits
/// or revokes one): the auth layer marks the request's event as
/// [`AuditEvent::key_management`], so that a durable log never sheds it.
/// [`KeyCreated`] marks creations and rotations the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyManaged;

/// Left in a response's extensions by a layer inside the auth layer that
/// refused an authenticated request (a rate limit, exhausted credits): the
/// auth layer records the request's event as a failure with this reason.
///
/// ```
/// use auth_core::{audit::RefusedFor, RejectReason};
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(RefusedFor(RejectReason::UsageExceeded));
/// assert_eq!(res.extensions().get::<RefusedFor>().unwrap().0.as_str(), "usage_exceeded");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedFor(pub RejectReason);

/// Longest `User-Agent` kept in an event.
pub const MAX_USER_AGENT: usize = 256;

/// Receives audit events. `record` must never block on I/O or wait for a
/// lock held across I/O: it runs on the request path.
pub trait AuditSink: std::fmt::Debug + Send + Sync + 'static {
    /// Takes one event.
    fn record(&self, event: AuditEvent);

    /// Takes one event already on the heap, as the auth layer holds it
    /// while the response is on its way: a sink that keeps or queues
    /// events boxed takes the box as it is, without copying the event out.
    #[allow(clippy::boxed_local, reason = "the box is the sink's to keep")]
    fn record_boxed(&self, event: Box<AuditEvent>) {
        self.record(*event);
    }
}

/// A page of a query, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// Pass as [`AuditQuery::before`] for the next page; `None` at the end.
    pub next_cursor: Option<i64>,
}

/// Which events to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only this key's events.
    pub key_id: Option<KeyId>,
    /// Only events whose actor (key owner) is this user.
    pub actor: Option<String>,
    /// Only events older than this cursor.
    pub before: Option<i64>,
    /// Page size (clamped to 1..=1000).
    pub limit: usize,
}

impl AuditQuery {
    /// Only this key's events.
    pub fn key_id(mut self, key: KeyId) -> Self {
        self.key_id = Some(key);
        self
    }

    /// Only events whose actor is this user.
    pub fn actor(mut self, user_id: impl Into<String>) -> Self {
        self.actor = Some(user_id.into());
        self
    }

    /// Only events older than this cursor ([`AuditPage::next_cursor`]).
    pub fn before(mut self, cursor: Option<i64>) -> Self {
        self.before = cursor;
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub(crate) fn matches(&self, e: &AuditEvent) -> bool {
        self.key_id.is_none_or(|k| e.key_id == Some(k))
            && self
                .actor
                .as_deref()
                .is_none_or(|a| e.actor.as_deref() == Some(a))
            && self.before.is_none_or(|b| e.id.is_some_and(|id| id < b))
    }

    /// The page size actually used.
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, 1000)
    }
}

/// The width of a [`UsageQuery`]'s time buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageBucket {
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl UsageBucket {
    /// The bucket's length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    /// The start of the bucket holding `t` (buckets are aligned on the unix
    /// epoch, so days start at 00:00 UTC).
    pub fn start_of(self, t: OffsetDateTime) -> OffsetDateTime {
        let s = t.unix_timestamp();
        let start = s - s.rem_euclid(self.seconds());
        OffsetDateTime::from_unix_timestamp(start).unwrap_or(t)
    }
}

/// Which key's requests to count per time bucket: the chart of the
/// "Activity" view.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageQuery {
    /// The key.
    pub key_id: KeyId,
    /// Events at or after this time (the start of its bucket, in fact).
    pub since: OffsetDateTime,
    /// Bucket width.
    pub bucket: UsageBucket,
}

impl UsageQuery {
    /// `key_id`'s requests since `since`, per `bucket`.
    pub fn new(key_id: KeyId, since: OffsetDateTime, bucket: UsageBucket) -> Self {
        Self {
            key_id,
            since,
            bucket,
        }
    }
}

/// Requests in one time bucket, by outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct UsageCount {
    /// Start of the bucket.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Let through.
    pub success: u64,
    /// Refused for any reason but a rate limit.
    pub refused: u64,
    /// Refused by a rate limit.
    pub rate_limited: u64,
}

impl UsageCount {
    /// An empty bucket starting at `start`.
    pub fn empty(start: OffsetDateTime) -> Self {
        Self {
            start,
            success: 0,
            refused: 0,
            rate_limited: 0,
        }
    }

    /// Counts `e` in this bucket.
    pub fn add(&mut self, e: &AuditEvent) {
        match (e.outcome, e.reason) {
            (AuditOutcome::Success, _) => self.success += 1,
            (AuditOutcome::Failure, Some(RejectReason::RateLimited)) => self.rate_limited += 1,
            (AuditOutcome::Failure, _) => self.refused += 1,
        }
    }
}

/// Counts `events` into buckets, oldest first, skipping events before
/// `query.since`'s bucket and other keys' events. Only non-empty buckets.
pub fn count_usage<'a>(
    query: &UsageQuery,
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Vec<UsageCount> {
    let from = query.bucket.start_of(query.since);
    let mut buckets = std::collections::BTreeMap::<i64, UsageCount>::new();
    for e in events {
        if e.key_id != Some(query.key_id) || e.at < from {
            continue;
        }
        let start = query.bucket.start_of(e.at);
        buckets
            .entry(start.unix_timestamp())
            .or_insert_with(|| UsageCount::empty(start))
            .add(e);
    }
    buckets.into_values().collect()
}

/// Refusals that named no real key (and limiter refusals), counted per
/// minute, reason and client network instead of one row each: what a
/// durable log keeps of a flood of garbage tokens. See
/// [`AuditLog::refusals`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RefusalCount {
    /// Start of the minute.
    #[serde(with = "time::serde::rfc3339")]
    pub minute: OffsetDateTime,
    /// Why they were refused.
    pub reason: RejectReason,
    /// The clients' network: `a.b.c.0/24`, an IPv6 `/64`, `unknown` (no
    /// address), or `other` once a minute has its fill of networks.
    pub network: String,
    /// How many, exactly.
    pub count: u64,
    /// The first refusal of the window, as it would have been recorded.
    pub sample: AuditEvent,
}

/// Whether an audit log is keeping up (see [`AuditLog::health`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditHealth {
    /// Events waiting to be written.
    pub queued: u64,
    /// Events shed since start because the store could not keep up:
    /// counted in the usage roll-up and `keygate_audit_events_dropped_total`,
    /// but without their own row.
    pub shed_total: u64,
    /// Events shed in the last minute.
    pub shed_recently: bool,
    /// The last write to the store failed and is being retried.
    pub store_failing: bool,
}

impl AuditHealth {
    /// Shedding lately, or the store is failing: the log is degraded.
    pub fn is_degraded(&self) -> bool {
        self.shed_recently || self.store_failing
    }
}

/// An audit sink that can be queried: the "Activity" view.
#[async_trait]
pub trait AuditLog: AuditSink {
    /// Events matching `query`, newest first.
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;

    /// The key's requests per time bucket and outcome since `query.since`,
    /// oldest bucket first, empty buckets left out.
    ///
    /// The SQL logs answer from an index on `(key_id, at)`. This default
    /// pages through [`AuditLog::query`] (newest first, stopping at `since`),
    /// which is right for any log but reads every event in the range.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageCount>, StoreError> {
        let from = query.bucket.start_of(query.since);
        let mut events = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .query(&AuditQuery {
                    key_id: Some(query.key_id),
                    actor: None,
                    before,
                    limit: 1000,
                })
                .await?;
            let done = page.next_cursor.is_none() || page.events.iter().any(|e| e.at < from);
            events.extend(page.events);
            if done {
                return Ok(count_usage(query, &events));
            }
            before = page.next_cursor;
        }
    }

    /// Aggregated refusals (see [`RefusalCount`]) of minutes starting at or
    /// after `since`, oldest first. Logs that keep every refusal as an
    /// event (the in-memory one) have none.
    async fn refusals(&self, since: OffsetDateTime) -> Result<Vec<RefusalCount>, StoreError> {
        let _ = since;
        Ok(Vec::new())
    }

    /// Whether the log keeps up; the in-memory log always does.
    fn health(&self) -> AuditHealth {
        AuditHealth::default()
    }

    /// Deletes events older than `before`; returns how many.
    async fn purge_before(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
    /// Writes out everything accepted so far (call on graceful shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
}

/// The default sink: the newest `capacity` events in memory.
///
/// `record` takes a short lock (no I/O under it) and never waits on anything
/// else; the oldest events are dropped once `capacity` is reached.
pub struct MemoryAuditLog {
    inner: Mutex<Ring>,
    capacity: usize,
}

/// The newest events, oldest first from `head` once full: a full ring
/// overwrites its oldest slot in place (no event is moved out to be dropped).
/// Boxed as the auth layer hands them over.
struct Ring {
    #[allow(clippy::vec_box, reason = "the layer's boxes are kept, not copied out")]
    events: Vec<Box<AuditEvent>>,
    head: usize,
    next_id: i64,
}

impl Ring {
    /// Oldest first.
    fn iter(&self) -> impl DoubleEndedIterator<Item = &AuditEvent> {
        let (newer, older) = self.events.split_at(self.head);
        older.iter().chain(newer).map(|e| &**e)
    }
}

impl fmt::Debug for MemoryAuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAuditLog")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for MemoryAuditLog {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl MemoryAuditLog {
    /// Keeps the newest `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Ring {
                events: Vec::new(),
                head: 0,
                next_id: 1,
            }),
            capacity: capacity.max(1),
        }
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AuditSink for MemoryAuditLog {
    fn record(&self, event: AuditEvent) {
        self.record_boxed(Box::new(event));
    }

    fn record_boxed(&self, mut event: Box<AuditEvent>) {
        let mut ring = self.inner.lock();
        event.id = Some(ring.next_id);
        ring.next_id += 1;
        if ring.events.len() < self.capacity {
            ring.events.push(event);
        } else {
            let head = ring.head;
            ring.events[head] = event;
            ring.head = (head + 1) % self.capacity;
        }
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let limit = query.effective_limit();
        let ring = self.inner.lock();
        let events: Vec<AuditEvent> = ring
            .iter()
            .rev()
            .filter(|e| query.matches(e))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(page(events, limit))
    }

    async fn purge_before(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut ring = self.inner.lock();
        let n = ring.events.len();
        let mut events = std::mem::take(&mut ring.events);
        // Oldest first again, then the old ones out.
        events.rotate_left(ring.head);
        events.retain(|e| e.at >= before);
        ring.events = events;
        ring.head = 0;
        Ok((n - ring.events.len()) as u64)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageCount>, StoreError> {
        let ring = self.inner.lock();
        Ok(count_usage(query, ring.iter()))
    }
}

/// Cuts `limit + 1` newest-first events into a page and its cursor.
pub fn page(mut events: Vec<AuditEvent>, limit: usize) -> AuditPage {
    let more = events.len() > limit;
    events.truncate(limit);
    let next_cursor = if more {
        events.last().and_then(|e| e.id)
    } else {
        None
    };
    AuditPage {
        events,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: KeyId, actor: &str) -> AuditEvent {
        AuditEvent {
            id: None,
            at: OffsetDateTime::now_utc(),
            key_id: Some(key),
            actor: Some(actor.into()),
            subject: None,
            outcome: AuditOutcome::Success,
            reason: None,
            method: Method::GET,
            path: "/".into(),
            status: Some(200),
            client_ip: None,
            user_agent: None,
            created_key: None,
            key_management: false,
        }
    }

    #[tokio::test]
    async fn paginates_newest_first_by_key() {
        let log = MemoryAuditLog::new(100);
        let (a, b) = (KeyId::random(), KeyId::random());
        for i in 0..5 {
            log.record(event(a, "alice"));
            if i % 2 == 0 {
                log.record(event(b, "bob"));
            }
        }
        let q = AuditQuery {
            key_id: Some(a),
            limit: 2,
            ..Default::default()
        };
        let p1 = log.query(&q).await.unwrap();
        assert_eq!(p1.events.len(), 2);
        assert!(p1.events[0].id > p1.events[1].id);
        let mut seen = p1.events.len();
        let mut cursor = p1.next_cursor;
        while let Some(c) = cursor {
            let p = log
                .query(&AuditQuery {
                    before: Some(c),
                    ..q.clone()
                })
                .await
                .unwrap();
            assert!(p
                .events
                .iter()
                .all(|e| e.key_id == Some(a) && e.id < Some(c)));
            seen += p.events.len();
            cursor = p.next_cursor;
        }
        assert_eq!(seen, 5);
    }

    #[tokio::test]
    async fn usage_counts_per_bucket_and_outcome() {
        let log = MemoryAuditLog::new(100);
        let (a, b) = (KeyId::random(), KeyId::random());
        let t0 = time::macros::datetime!(2030-01-02 10:15 UTC);
        let at = |minutes: i64, outcome, reason| AuditEvent {
            at: t0 + time::Duration::minutes(minutes),
            outcome,
            reason,
            ..event(a, "alice")
        };
        log.record(at(-120, AuditOutcome::Success, None)); // 08:15, before `since`
        log.record(at(0, AuditOutcome::Success, None)); // 10:15
        log.record(at(10, AuditOutcome::Success, None));
        log.record(at(
            20,
            AuditOutcome::Failure,
            Some(RejectReason::WrongSecret),
        ));
        log.record(at(
            50,
            AuditOutcome::Failure,
            Some(RejectReason::RateLimited),
        )); // 11:05
        log.record(event(b, "bob"));
        let q = UsageQuery {
            key_id: a,
            since: t0 - time::Duration::minutes(10), // bucket 10:00
            bucket: UsageBucket::Hour,
        };
        let usage = log.usage(&q).await.unwrap();
        let ten = time::macros::datetime!(2030-01-02 10:00 UTC);
        assert_eq!(
            usage,
            [
                UsageCount {
                    start: ten,
                    success: 2,
                    refused: 1,
                    rate_limited: 0
                },
                UsageCount {
                    start: ten + time::Duration::HOUR,
                    success: 0,
                    refused: 0,
                    rate_limited: 1
                },
            ]
        );
        let days = log
            .usage(&UsageQuery {
                bucket: UsageBucket::Day,
                since: t0 - time::Duration::days(1),
                ..q
            })
            .await
            .unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].start, time::macros::datetime!(2030-01-02 0:00 UTC));
        assert_eq!(
            (days[0].success, days[0].refused, days[0].rate_limited),
            (3, 1, 1)
        );
    }

    #[test]
    fn audit_now_agrees_with_the_calendar() {
        for _ in 0..3 {
            let before = OffsetDateTime::now_utc();
            let t = audit_now();
            let after = OffsetDateTime::now_utc();
            assert!(before <= t && t <= after, "{before} {t} {after}");
            assert_eq!(t.offset(), time::UtcOffset::UTC);
        }
    }

    #[tokio::test]
    async fn keeps_only_capacity() {
        let log = MemoryAuditLog::new(3);
        for _ in 0..10 {
            log.record(event(KeyId::random(), "x"));
        }
        assert_eq!(log.len(), 3);
        let p = log
            .query(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(p.events[0].id, Some(10));
        let ids: Vec<_> = p.events.iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            [Some(10), Some(9), Some(8)],
            "newest first across the wrap"
        );
    }
}
