-- auth-core key store and audit log, PostgreSQL.
-- Key ids are 11-character base62 text, compared bytewise (COLLATE "C").
-- No column ever holds a token or its secret: only an argon2id PHC hash.

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" PRIMARY KEY,
    owner_id     TEXT        NOT NULL,
    org_id       TEXT,
    name         TEXT        NOT NULL,
    scopes       TEXT[]      NOT NULL,
    hint         TEXT        NOT NULL,      -- token prefix + last 4 characters (checksum)
    hash         TEXT        NOT NULL,      -- argon2id PHC string of the secret
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,               -- may lie in the future (rotation grace)
    last_used_at TIMESTAMPTZ,
    replaced_by  TEXT COLLATE "C"           -- set once, by rotation
);

-- "My keys", newest first.
CREATE INDEX api_keys_by_owner ON api_keys (owner_id, created_at DESC, id DESC);

-- One row per authentication attempt; id is the pagination cursor.
CREATE TABLE audit_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    key_id     TEXT COLLATE "C",
    actor      TEXT,
    subject    TEXT,
    outcome    TEXT        NOT NULL CHECK (outcome IN ('success', 'failure')),
    reason     TEXT,
    method     TEXT        NOT NULL,
    path       TEXT        NOT NULL,
    status     INTEGER,
    client_ip  TEXT,
    user_agent TEXT
);

CREATE INDEX audit_events_by_key ON audit_events (key_id, id);
CREATE INDEX audit_events_by_actor ON audit_events (actor, id);
CREATE INDEX audit_events_by_time ON audit_events (at);
