//! Audit events beyond [`AuditEvent`](crate::AuditEvent) and
//! [`AuditSink`](crate::AuditSink): the outcome of an attempt, the
//! queryable [`AuditLog`] (in memory here; SQLite and PostgreSQL in
//! [`store`](crate::store)), its pages, and the usage and refusal counts
//! built from it.

pub use crate::audit_log::{
    audit_now, count_usage, page, AuditHealth, AuditLog, AuditOutcome, AuditPage, AuditQuery,
    KeyCreated, KeyManaged, MemoryAuditLog, RefusalCount, RefusedFor, UsageBucket, UsageCount,
    UsageQuery, MAX_USER_AGENT,
};
/// The string type of [`AuditEvent::path`](crate::AuditEvent::path) and
/// `user_agent`: a `String` that holds up to 24 bytes inline, so most
/// events need no allocation of their own.
pub use compact_str::CompactString;
