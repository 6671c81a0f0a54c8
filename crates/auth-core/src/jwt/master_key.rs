//! The server master key that encrypts per-user signing secrets at rest.

use std::fmt;

use base64::Engine;
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    XChaCha20Poly1305, XNonce,
};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;

/// The master key is not 32 bytes of base64, or a sealed secret does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// The configured key is not 32 bytes encoded as base64.
    #[error("master key must be 32 bytes, base64-encoded")]
    BadKey,
    /// A stored secret failed authentication: wrong master key or tampering.
    #[error("sealed secret does not open with this master key")]
    Unseal,
}

/// XChaCha20-Poly1305 key for per-user secrets at rest. Comes from
/// configuration (an environment variable, a secrets manager), never the code.
///
/// ```
/// use auth_core::jwt::MasterKey;
/// let key = MasterKey::generate();
/// let sealed = key.seal("alice", &[7; 32]);
/// assert_eq!(*key.open("alice", &sealed).unwrap(), [7; 32]);
/// assert!(key.open("bob", &sealed).is_err()); // bound to its user
/// ```
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// The key from its base64 text (standard alphabet, 32 bytes).
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| MasterKeyError::BadKey)?,
        );
        let bytes: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::BadKey)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key from raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// A fresh random key (print it once with [`MasterKey::generate_base64`] to configure it).
    pub fn generate() -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng)),
        }
    }

    /// A fresh random key as base64, for configuration.
    pub fn generate_base64() -> String {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut OsRng, &mut key[..]);
        base64::engine::general_purpose::STANDARD.encode(&key[..])
    }

    /// Encrypts `secret` for `user_id`: nonce followed by ciphertext and tag.
    pub fn seal(&self, user_id: &str, secret: &[u8; 32]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret,
            aad: user_id.as_bytes(),
        };
        // Encryption of a 32-byte message cannot fail.
        let ct = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts what [`MasterKey::seal`] made for `user_id`.
    pub fn open(
        &self,
        user_id: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, MasterKeyError> {
        if sealed.len() <= NONCE_LEN {
            return Err(MasterKeyError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: user_id.as_bytes(),
                    },
                )
                .map_err(|_| MasterKeyError::Unseal)?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(MasterKeyError::Unseal);
        }
        out.copy_from_slice(&plain);
        Ok(out)
    }
}
