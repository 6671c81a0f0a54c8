-- Keys that carry their own policy: the application's metadata and id, a
-- disabled flag, a client address allowlist, the last-used address, a
-- quota of the key's own and usage credits. Existing rows get the
-- defaults: no metadata, enabled, any address, no quota, unlimited.
ALTER TABLE api_keys ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';        -- JSON object, at most 4 KiB
ALTER TABLE api_keys ADD COLUMN external_id TEXT;                       -- at most 256 bytes
ALTER TABLE api_keys ADD COLUMN disabled_at INTEGER;                    -- NULL: enabled
ALTER TABLE api_keys ADD COLUMN ip_allowlist TEXT NOT NULL DEFAULT '[]'; -- JSON array of CIDR strings; []: any
ALTER TABLE api_keys ADD COLUMN last_used_ip TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit INTEGER CHECK (rate_limit > 0);
ALTER TABLE api_keys ADD COLUMN rate_limit_period_seconds INTEGER CHECK (rate_limit_period_seconds > 0);
ALTER TABLE api_keys ADD COLUMN credits_remaining INTEGER CHECK (credits_remaining >= 0); -- NULL: unlimited
ALTER TABLE api_keys ADD COLUMN credits_refill_amount INTEGER CHECK (credits_refill_amount >= 0);
ALTER TABLE api_keys ADD COLUMN credits_refill_every TEXT
    CHECK (credits_refill_every IN ('hour', 'day', 'week', 'month'));
ALTER TABLE api_keys ADD COLUMN credits_refilled_at INTEGER;
