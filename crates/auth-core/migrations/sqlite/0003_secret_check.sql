-- The secret check (issues 12 and 18): 32 bits of a domain-separated BLAKE3
-- hash of key id, prefix and secret, as an integer in 0..2^32. The verifier
-- refuses almost every wrong secret with it, without argon2. NULL for keys
-- issued before it existed: filled, with a re-hash, on their next successful
-- verification.
ALTER TABLE api_keys ADD COLUMN secret_check INTEGER;
