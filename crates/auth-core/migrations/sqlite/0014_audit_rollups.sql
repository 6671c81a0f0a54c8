-- The audit log at full speed: the activity chart reads a roll-up of
-- counts per key and hour instead of a fourth index on the hot table, and
-- refusals that name no real key (and limiter refusals) are counted per
-- minute, reason and client network instead of one row each.

DROP INDEX IF EXISTS audit_events_by_key_time;

CREATE TABLE audit_usage (
    key_id       TEXT    NOT NULL,
    hour         INTEGER NOT NULL,            -- unix microseconds of the hour's start (UTC)
    success      INTEGER NOT NULL DEFAULT 0,
    refused      INTEGER NOT NULL DEFAULT 0,  -- refused for any reason but a rate limit
    rate_limited INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, hour)
) STRICT, WITHOUT ROWID;

-- The counts of the rows already written.
INSERT INTO audit_usage (key_id, hour, success, refused, rate_limited)
SELECT key_id, (at / 3600000000) * 3600000000,
       SUM(outcome = 'success'),
       SUM(outcome = 'failure' AND reason IS NOT 'rate_limited'),
       SUM(outcome = 'failure' AND reason IS 'rate_limited')
FROM audit_events WHERE key_id IS NOT NULL GROUP BY 1, 2;

CREATE TABLE audit_refusals (
    minute     INTEGER NOT NULL,  -- unix microseconds of the minute's start (UTC)
    reason     TEXT    NOT NULL,
    network    TEXT    NOT NULL,  -- '198.51.100.0/24', '2001:db8::/64', 'unknown' or 'other'
    count      INTEGER NOT NULL,
    -- The window's first refusal, as its row would have been.
    first_at   INTEGER NOT NULL,
    key_id     TEXT,
    actor      TEXT,
    method     TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    status     INTEGER,
    client_ip  TEXT,
    user_agent TEXT,
    PRIMARY KEY (minute, reason, network)
) STRICT, WITHOUT ROWID;
