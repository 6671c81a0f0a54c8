//! The one-time plaintext of a freshly minted token.

use std::fmt;

use zeroize::Zeroizing;

/// A token's plaintext, handed out once when a key is issued or rotated.
///
/// Its `Debug` and `Display` never show the value, and the memory is zeroed
/// when it is dropped. Call [`PlaintextToken::expose_secret`] exactly where the
/// value must be shown to its owner.
///
/// ```
/// # use auth_core::{TokenPrefix, token::mint_token};
/// let (_, token) = mint_token(&TokenPrefix::new("st_").unwrap());
/// assert!(!format!("{token:?} {token}").contains(token.expose_secret()));
/// ```
pub struct PlaintextToken(Zeroizing<String>);

impl PlaintextToken {
    pub(crate) fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The plaintext. Show it to the key's owner once; never log or store it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlaintextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlaintextToken([redacted])")
    }
}

impl fmt::Display for PlaintextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted token]")
    }
}
