-- Per-user JWT signing secrets (feature `jwt`), PostgreSQL.
-- `sealed` is XChaCha20-Poly1305 output (nonce, ciphertext, tag) under the
-- server master key, bound to the user id: never the secret itself.
-- A regeneration also sends `user-secret:<user id>` on the key-change
-- channel, so other instances drop that user's cached tokens.

CREATE TABLE user_secrets (
    user_id    TEXT COLLATE "C" PRIMARY KEY,
    sealed     BYTEA       NOT NULL,
    generation BIGINT      NOT NULL,        -- bumped by every regeneration
    updated_at TIMESTAMPTZ NOT NULL
);
