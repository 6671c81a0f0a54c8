-- The administrators' view (KeyStore::list_keys): every key newest first,
-- a page at a time, optionally of one organisation or made by one key.
-- (By owner, api_keys_by_owner already serves.)
CREATE INDEX api_keys_by_created ON api_keys (created_at DESC, id DESC);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at DESC, id DESC);
CREATE INDEX api_keys_by_creator ON api_keys (created_by) WHERE created_by IS NOT NULL;
