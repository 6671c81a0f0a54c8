//! Audit retention by age: a background task around [`AuditLog::purge_before`].

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use time::OffsetDateTime;

use crate::audit::AuditLog;

/// Deletes audit events older than `max_age` now and then every `every`,
/// until the log is dropped or the returned handle is aborted.
///
/// Must be called from within a Tokio runtime.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use auth_core::{store::spawn_audit_retention, audit::AuditLog, audit::MemoryAuditLog};
/// let log: Arc<dyn AuditLog> = Arc::new(MemoryAuditLog::default());
/// let task = spawn_audit_retention(&log, Duration::from_secs(90 * 86_400), Duration::from_secs(3600));
/// task.abort();
/// # });
/// ```
pub fn spawn_audit_retention(
    log: &Arc<dyn AuditLog>,
    max_age: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let log: Weak<dyn AuditLog> = Arc::downgrade(log);
    let max_age = time::Duration::try_from(max_age).unwrap_or(time::Duration::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(log) = log.upgrade() else { return };
            let cutoff = OffsetDateTime::now_utc()
                .checked_sub(max_age)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            match log.purge_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "purged old audit events"),
                Err(e) => tracing::warn!(error = %e, "audit retention purge failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit::AuditOutcome, audit::AuditQuery, audit::MemoryAuditLog, AuditEvent, AuditSink,
    };

    fn event_at(at: OffsetDateTime) -> AuditEvent {
        AuditEvent {
            id: None,
            at,
            key_id: None,
            actor: None,
            subject: None,
            outcome: AuditOutcome::Success,
            reason: None,
            method: http::Method::GET,
            path: "/".into(),
            status: None,
            client_ip: None,
            user_agent: None,
            created_key: None,
            key_management: false,
        }
    }

    #[tokio::test]
    async fn purges_old_events_and_stops_with_the_log() {
        let mem = Arc::new(MemoryAuditLog::default());
        let now = OffsetDateTime::now_utc();
        mem.record(event_at(now - time::Duration::days(40)));
        mem.record(event_at(now));
        let log: Arc<dyn AuditLog> = mem.clone();
        let task = spawn_audit_retention(
            &log,
            Duration::from_secs(30 * 86_400),
            Duration::from_millis(5),
        );
        // Wait (bounded) until the old event is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while mem.len() != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "old event not purged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let page = log
            .query(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.events[0].at, now);
        drop((log, mem));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
