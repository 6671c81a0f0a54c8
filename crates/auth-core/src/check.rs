//! The secret check: 32 bits of a domain-separated BLAKE3 hash of a key's
//! id, prefix and secret, stored next to the argon2id hash.
//!
//! It lets the verifier refuse almost every wrong secret (all but one in
//! 2^32) with one fast hash instead of an argon2 run, so a flood of wrong
//! secrets for a real key id costs no argon2 and needs no per-key backoff
//! that would lock the owner out. Covering the prefix binds the token's
//! prefix to the stored key: a `sk_test_` key presented as `sk_live_` fails
//! the check.
//!
//! Why 32 bits do not help an attacker: the secret has 256 random bits; the
//! check reveals at most 32 of them, which leaves 2^224 candidates consistent
//! with a stolen record. See "Threat model" in `docs/ARCHITECTURE.md`.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::KeyId;

/// The BLAKE3 key-derivation context: a fixed, versioned domain, so the
/// check is unrelated to every other use of BLAKE3 on the same bytes.
const CONTEXT: &str = "keygate 2026-12 api-key secret check v1";

/// A key's 32-bit secret check (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretCheck(u32);

impl SecretCheck {
    /// The check for a token's parts.
    pub fn compute(key_id: KeyId, prefix: &str, secret: &[u8; 32]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(CONTEXT);
        h.update(&key_id.as_u64().to_be_bytes());
        // Length-prefixed, so prefix and secret cannot trade bytes.
        h.update(&[prefix.len() as u8]);
        h.update(prefix.as_bytes());
        h.update(secret);
        let out = h.finalize();
        let b = out.as_bytes();
        Self(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A stored check.
    pub fn from_u32(v: u32) -> Self {
        Self(v)
    }

    /// The value to store.
    pub fn as_u32(self) -> u32 {
        self.0
    }

    /// Constant-time comparison.
    pub fn matches(self, other: SecretCheck) -> bool {
        bool::from(self.0.to_be_bytes().ct_eq(&other.0.to_be_bytes()))
    }
}

impl fmt::Debug for SecretCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCheck(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_binds_id_prefix_and_secret() {
        let id = KeyId::from_u64(42);
        let c = SecretCheck::compute(id, "sk_test_", &[7; 32]);
        assert!(c.matches(SecretCheck::compute(id, "sk_test_", &[7; 32])));
        assert!(!c.matches(SecretCheck::compute(id, "sk_live_", &[7; 32])));
        assert!(!c.matches(SecretCheck::compute(
            KeyId::from_u64(43),
            "sk_test_",
            &[7; 32]
        )));
        let mut other = [7; 32];
        other[31] = 8;
        assert!(!c.matches(SecretCheck::compute(id, "sk_test_", &other)));
        assert_eq!(SecretCheck::from_u32(c.as_u32()), c);
        assert_eq!(format!("{c:?}"), "SecretCheck(..)");
    }
}
