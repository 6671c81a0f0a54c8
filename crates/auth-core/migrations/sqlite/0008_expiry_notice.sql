-- The expiry an "expiring soon" notice was delivered for (unix µs; NULL:
-- none yet). Compared with expires_at, so a key whose expiry is moved
-- earlier is noticed again, and a restart does not notice it twice.
ALTER TABLE api_keys ADD COLUMN expiry_notified_for INTEGER;
-- Keys expiring in a time window, for the notifier's periodic pass.
CREATE INDEX api_keys_by_expiry ON api_keys (expires_at) WHERE expires_at IS NOT NULL;
