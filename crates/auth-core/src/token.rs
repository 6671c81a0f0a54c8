//! Token format: `<prefix><key id><secret><checksum>`, minting and parsing.
//!
//! [`TokenPrefix`](crate::TokenPrefix), [`KeyId`](crate::KeyId) and
//! [`PlaintextToken`](crate::PlaintextToken) are at the crate root; this
//! module holds the rest of the format: parsing ([`ParsedToken`]), minting
//! ([`mint_token`]), its limits and errors, and the [`SecretCheck`] stored
//! next to a key's hash.

pub use crate::check::SecretCheck;
pub use crate::token_format::{
    mint_token, InvalidKeyId, InvalidPrefix, ParsedToken, TokenError, BODY_LEN, MAX_PREFIX_LEN,
    MAX_TOKEN_LEN,
};
