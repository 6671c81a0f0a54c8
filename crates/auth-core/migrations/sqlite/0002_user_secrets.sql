-- Per-user JWT signing secrets (feature `jwt`), SQLite.
-- `sealed` is XChaCha20-Poly1305 output (nonce, ciphertext, tag) under the
-- server master key, bound to the user id: never the secret itself.
-- A regeneration also appends `user-secret:<user id>` to `key_changes`, so
-- other processes on the file drop that user's cached tokens.

CREATE TABLE user_secrets (
    user_id    TEXT    NOT NULL PRIMARY KEY,
    sealed     BLOB    NOT NULL,
    generation INTEGER NOT NULL,            -- bumped by every regeneration
    updated_at INTEGER NOT NULL             -- unix microseconds (UTC)
) STRICT;
