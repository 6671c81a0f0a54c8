//! Keyed digests of credentials: what the in-memory caches keep and compare
//! instead of the credential.
//!
//! SipHash-1-3 with a 128-bit output under a random per-process key: a keyed
//! hash made for short inputs, the rounds Rust's standard `HashMap` uses.
//! On a 64-byte token it is several times cheaper than a keyed BLAKE3 block,
//! and the digest is the largest fixed cost of a cached check.
//!
//! What the digest must resist, and why 1-3 rounds do:
//! * A client never sees a digest: it only learns whether a token it sends
//!   is accepted. To have a forgery accepted it must hit the 128-bit digest
//!   of a 256-bit secret it does not know, which is 2^128 guesses whatever
//!   the rounds; the rounds guard against an attacker who sees outputs for
//!   inputs of their choice, which nothing here gives out.
//! * Someone who reads the process memory (key and digests) cannot get a
//!   secret back: about 2^128 secrets share each digest. They could craft
//!   another string with the same digest, accepted by that process's cache
//!   until it drops the entry (SipHash is no collision-resistant hash at any
//!   round count); the same memory holds the tokens of recent requests in
//!   the clear, so nothing is lost that was not already lost.

use std::{fmt, hash::Hasher};

use rand::{rngs::OsRng, RngCore};
use siphasher::sip128::{Hasher128, SipHasher13};
use subtle::ConstantTimeEq;

/// A 128-bit keyed digest of a credential, as SipHash leaves it: two words,
/// which stay in registers (as 16 bytes, each digest went through memory and
/// was read back at another width, a store-forwarding stall). `==`, used
/// for map keys, is [`digests_equal`]: constant time.
#[derive(Clone, Copy)]
pub(crate) struct Digest(u64, u64);

impl Digest {
    /// The digest nothing hashes to in practice (2^-128), for empty slots.
    pub(crate) const ZERO: Self = Self(0, 0);
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        digests_equal(self, other)
    }
}

impl Eq for Digest {}

// Equal digests have equal words, so this agrees with `==`.
impl std::hash::Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
        state.write_u64(self.1);
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(..)")
    }
}

/// The secret key of [`Digest`]s: random, never leaves the process.
#[derive(Clone)]
pub(crate) struct DigestKey(SipHasher13);

impl DigestKey {
    /// A fresh random key.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 16];
        OsRng.fill_bytes(&mut key);
        Self(SipHasher13::new_with_key(&key))
    }

    /// The digest of `bytes` (SipHash encodes the length, so no two inputs
    /// of different lengths share a computation).
    #[inline]
    pub(crate) fn digest(&self, bytes: &[u8]) -> Digest {
        let mut hasher = self.0;
        hasher.write(bytes);
        let h = hasher.finish128();
        Digest(h.h1, h.h2)
    }
}

/// Constant time: both words always, behind `subtle`'s optimisation barrier,
/// so the compiler cannot turn it into an early exit.
#[inline]
pub(crate) fn digests_equal(a: &Digest, b: &Digest) -> bool {
    (a.0.ct_eq(&b.0) & a.1.ct_eq(&b.1)).into()
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_and_inputs_differ() {
        let (a, b) = (DigestKey::random(), DigestKey::random());
        assert_ne!(a.digest(b"st_token"), b.digest(b"st_token"));
        assert_ne!(a.digest(b"st_token"), a.digest(b"st_tokeN"));
        assert_eq!(a.digest(b"st_token"), a.digest(b"st_token"));
        assert!(digests_equal(&a.digest(b"x"), &a.digest(b"x")));
        assert!(!digests_equal(&a.digest(b"x"), &a.digest(b"y")));
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", DigestKey::random()), "DigestKey(..)");
    }
}
