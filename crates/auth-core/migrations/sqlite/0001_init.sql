-- auth-core key store and audit log, SQLite.
-- Times are unix microseconds (UTC). Key ids are 11-character base62 text.
-- No column ever holds a token or its secret: only an argon2id PHC hash.

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    owner_id     TEXT    NOT NULL,
    org_id       TEXT,
    name         TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,            -- JSON array of scope strings
    hint         TEXT    NOT NULL,            -- token prefix + last 4 characters (checksum)
    hash         TEXT    NOT NULL,            -- argon2id PHC string of the secret
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,                     -- may lie in the future (rotation grace)
    last_used_at INTEGER,
    replaced_by  TEXT                         -- set once, by rotation
) STRICT;

-- "My keys", newest first.
CREATE INDEX api_keys_by_owner ON api_keys (owner_id, created_at DESC, id DESC);

-- Revocations and rotations, in commit order: other processes on the same
-- file poll this to drop their cached verifications. Pruned after a day.
CREATE TABLE key_changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT    NOT NULL,
    at     INTEGER NOT NULL
) STRICT;

-- One row per authentication attempt; id is the pagination cursor.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    key_id     TEXT,
    actor      TEXT,
    subject    TEXT,
    outcome    TEXT    NOT NULL CHECK (outcome IN ('success', 'failure')),
    reason     TEXT,
    method     TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    status     INTEGER,
    client_ip  TEXT,
    user_agent TEXT
) STRICT;

CREATE INDEX audit_events_by_key ON audit_events (key_id, id);
CREATE INDEX audit_events_by_actor ON audit_events (actor, id);
CREATE INDEX audit_events_by_time ON audit_events (at);
