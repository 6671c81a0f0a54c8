-- The activity chart counts one key's events per time bucket and outcome
-- (AuditLog::usage). This index answers it by a range read alone: the rows
-- of `key_id` from `at` on, with the columns the counts need.

CREATE INDEX audit_events_by_key_time ON audit_events (key_id, at, outcome, reason);
