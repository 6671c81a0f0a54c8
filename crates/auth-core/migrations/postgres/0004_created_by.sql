-- Which key created this one (through the key-management API, or by
-- rotating a key): NULL for keys made from the command line or by a
-- session-backed owner, and for keys created before this column existed.
ALTER TABLE api_keys ADD COLUMN created_by TEXT COLLATE "C";
