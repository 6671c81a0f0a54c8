-- Keys that carry their own policy: the application's metadata and id, a
-- disabled flag, a client address allowlist, the last-used address, a
-- quota of the key's own and usage credits. Existing rows get the
-- defaults: no metadata, enabled, any address, no quota, unlimited.
ALTER TABLE api_keys
    ADD COLUMN meta TEXT NOT NULL DEFAULT '{}',          -- JSON object, at most 4 KiB
    ADD COLUMN external_id TEXT,                         -- at most 256 bytes
    ADD COLUMN disabled_at TIMESTAMPTZ,                  -- NULL: enabled
    ADD COLUMN ip_allowlist TEXT[] NOT NULL DEFAULT '{}', -- CIDR strings; empty: any
    ADD COLUMN last_used_ip TEXT,
    ADD COLUMN rate_limit BIGINT CHECK (rate_limit > 0),
    ADD COLUMN rate_limit_period_seconds BIGINT CHECK (rate_limit_period_seconds > 0),
    ADD COLUMN credits_remaining BIGINT CHECK (credits_remaining >= 0), -- NULL: unlimited
    ADD COLUMN credits_refill_amount BIGINT CHECK (credits_refill_amount >= 0),
    ADD COLUMN credits_refill_every TEXT
        CHECK (credits_refill_every IN ('hour', 'day', 'week', 'month')),
    ADD COLUMN credits_refilled_at TIMESTAMPTZ;
