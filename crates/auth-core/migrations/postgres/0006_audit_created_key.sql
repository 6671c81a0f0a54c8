-- The key a request created (key API create or rotate): with the request's
-- own key_id, the audit log says which key made which.
ALTER TABLE audit_events ADD COLUMN created_key TEXT;
