//! Token format: `<prefix><key id><secret><checksum>`, minting and parsing.
//!
//! The body is fixed-width base62: an 11-character public key id (64 random
//! bits), a 44-character secret (256 random bits from the OS CSPRNG) and a
//! 6-character CRC32 of everything before it, prefix included. The checksum
//! rejects typos and random strings before any store lookup, and lets secret
//! scanners recognise our tokens.

use std::{fmt, str::FromStr};

use rand::{rngs::OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    base62::{self, U128_WIDTH, U32_WIDTH, U64_WIDTH},
    PlaintextToken,
};

const SECRET_WIDTH: usize = 2 * U128_WIDTH;
/// Length of the body that follows the prefix.
pub const BODY_LEN: usize = U64_WIDTH + SECRET_WIDTH + U32_WIDTH;
/// Longest prefix accepted.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest input the parser looks at; anything longer is rejected unread.
pub const MAX_TOKEN_LEN: usize = MAX_PREFIX_LEN + BODY_LEN;

/// Why a string is not a well-formed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// Wrong length, non-ASCII, bad prefix or non-base62 body.
    #[error("malformed token")]
    Malformed,
    /// The prefix is well formed but not one this service issues.
    #[error("unexpected token prefix")]
    WrongPrefix,
    /// The checksum does not match: a typo or a made-up string.
    #[error("token checksum mismatch")]
    BadChecksum,
}

/// A validated token prefix such as `st_`, `sk_live_`, `sk_test_` or `p:`.
///
/// Two to 16 ASCII characters: a letter or digit, then letters, digits and
/// `_`, ending in `_` or `:`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenPrefix(Box<str>);

/// The prefix given to [`TokenPrefix::new`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token prefix {0:?}: 2-16 ASCII letters, digits or '_', starting with a letter or digit, ending in '_' or ':'")]
pub struct InvalidPrefix(pub String);

impl TokenPrefix {
    /// Validates a prefix.
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        if is_valid_prefix(prefix.as_bytes()) {
            Ok(Self(prefix.into()))
        } else {
            Err(InvalidPrefix(prefix.chars().take(32).collect()))
        }
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TokenPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn is_valid_prefix(p: &[u8]) -> bool {
    match p.split_last() {
        Some((last, rest)) if p.len() <= MAX_PREFIX_LEN && p.len() >= 2 => {
            matches!(last, b'_' | b':')
                && p[0].is_ascii_alphanumeric()
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        _ => false,
    }
}

/// The public identifier of a key: 64 random bits, shown as 11 base62 characters.
///
/// It is not secret: it names the key in URLs, lists and audit logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "utoipa",
    derive(utoipa::ToSchema),
    schema(value_type = String)
)]
pub struct KeyId(u64);

impl KeyId {
    /// A fresh random id from the OS CSPRNG.
    pub fn random() -> Self {
        Self(OsRng.next_u64())
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from its number.
    pub fn from_u64(v: u64) -> Self {
        Self(v)
    }

    /// The id as a token spells it: its base62 field.
    pub(crate) fn field(self) -> [u8; U64_WIDTH] {
        base62::encode_u64(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(U64_WIDTH);
        base62::encode_into(self.0 as u128, U64_WIDTH, &mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The string is not an 11-character base62 key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid key id")]
pub struct InvalidKeyId;

impl FromStr for KeyId {
    type Err = InvalidKeyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let field = s.as_bytes().try_into().map_err(|_| InvalidKeyId)?;
        base62::decode_u64(field).map(Self).ok_or(InvalidKeyId)
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The parts of a well-formed token. The secret is zeroed on drop.
pub struct ParsedToken<'a> {
    prefix: &'a str,
    key_id: KeyId,
    secret: Zeroizing<[u8; 32]>,
}

impl<'a> ParsedToken<'a> {
    /// Splits and checks a token: length, prefix shape, base62 body, checksum.
    ///
    /// Total: any input gives the parts or a [`TokenError`], never a panic.
    pub fn parse(input: &'a str) -> Result<Self, TokenError> {
        let bytes = input.as_bytes();
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if bytes.len() <= BODY_LEN || !bytes.is_ascii() {
            return Err(TokenError::Malformed);
        }
        let (prefix, body) = bytes.split_at(bytes.len() - BODY_LEN);
        if !is_valid_prefix(prefix) {
            return Err(TokenError::Malformed);
        }
        let (id, rest) = body.split_at(U64_WIDTH);
        let (secret, crc) = rest.split_at(SECRET_WIDTH);
        let id = id
            .try_into()
            .ok()
            .and_then(base62::decode_u64)
            .ok_or(TokenError::Malformed)?;
        let hi = base62::decode(&secret[..U128_WIDTH], u128::MAX).ok_or(TokenError::Malformed)?;
        let lo = base62::decode(&secret[U128_WIDTH..], u128::MAX).ok_or(TokenError::Malformed)?;
        let crc = base62::decode(crc, u32::MAX as u128).ok_or(TokenError::Malformed)? as u32;
        if crc != crc32fast::hash(&bytes[..bytes.len() - U32_WIDTH]) {
            return Err(TokenError::BadChecksum);
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        secret[..16].copy_from_slice(&hi.to_be_bytes());
        secret[16..].copy_from_slice(&lo.to_be_bytes());
        // `input` is ASCII, so every byte index is a char boundary.
        let prefix = &input[..prefix.len()];
        Ok(Self {
            prefix,
            key_id: KeyId(id),
            secret,
        })
    }

    /// Like [`ParsedToken::parse`], and also requires one of `prefixes`.
    pub fn parse_with_prefix(input: &'a str, prefixes: &[TokenPrefix]) -> Result<Self, TokenError> {
        let parsed = Self::parse(input)?;
        if prefixes.iter().any(|p| p.as_str() == parsed.prefix) {
            Ok(parsed)
        } else {
            Err(TokenError::WrongPrefix)
        }
    }

    /// The prefix, e.g. `st_`.
    pub fn prefix(&self) -> &'a str {
        self.prefix
    }

    /// The public key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 32 secret bytes.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("prefix", &self.prefix)
            .field("key_id", &self.key_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A token's prefix and its key id field as it arrived, not decoded: enough
/// to look up the verified cache (see `verifier::cache::SlotKey`), where a
/// digest of the whole token decides. Misses go through [`ParsedToken::parse`].
pub(crate) fn raw_shape(input: &[u8]) -> Option<(&[u8], &[u8; U64_WIDTH])> {
    if input.len() > MAX_TOKEN_LEN || input.len() <= BODY_LEN {
        return None;
    }
    let (prefix, body) = input.split_at(input.len() - BODY_LEN);
    Some((prefix, body[..U64_WIDTH].try_into().ok()?))
}

/// Mints a new token with `prefix`: a random key id and a 256-bit secret.
///
/// ```
/// use auth_core::{token::mint_token, token::ParsedToken, TokenPrefix};
/// let (id, token) = mint_token(&TokenPrefix::new("sk_live_").unwrap());
/// let parsed = ParsedToken::parse(token.expose_secret()).unwrap();
/// assert_eq!(parsed.key_id(), id);
/// ```
pub fn mint_token(prefix: &TokenPrefix) -> (KeyId, PlaintextToken) {
    let id = KeyId::random();
    let mut secret = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut secret[..]);
    (id, encode_token(prefix, id, &secret))
}

pub(crate) fn encode_token(prefix: &TokenPrefix, id: KeyId, secret: &[u8; 32]) -> PlaintextToken {
    let mut out = String::with_capacity(prefix.as_str().len() + BODY_LEN);
    out.push_str(prefix.as_str());
    base62::encode_into(id.0 as u128, U64_WIDTH, &mut out);
    let mut half = [0u8; 16];
    half.copy_from_slice(&secret[..16]);
    base62::encode_into(u128::from_be_bytes(half), U128_WIDTH, &mut out);
    half.copy_from_slice(&secret[16..]);
    base62::encode_into(u128::from_be_bytes(half), U128_WIDTH, &mut out);
    zeroize::Zeroize::zeroize(&mut half);
    let crc = crc32fast::hash(out.as_bytes());
    base62::encode_into(crc as u128, U32_WIDTH, &mut out);
    PlaintextToken::new(out)
}

/// The display hint of a token: its prefix and the last four characters.
pub(crate) fn display_hint(token: &str) -> String {
    let parsed_prefix_len = token.len().saturating_sub(BODY_LEN);
    let tail = &token[token.len().saturating_sub(4)..];
    format!("{}…{}", &token[..parsed_prefix_len], tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_prefixes_are_valid() {
        for p in ["st_", "sk_live_", "sk_test_", "p:"] {
            let prefix = TokenPrefix::new(p).unwrap();
            let (id, token) = mint_token(&prefix);
            let parsed = ParsedToken::parse_with_prefix(token.expose_secret(), &[prefix]).unwrap();
            assert_eq!(parsed.key_id(), id);
            assert_eq!(parsed.prefix(), p);
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in [
            "",
            "st",
            "s t_",
            "é_",
            "abcdefghijklmnopq_",
            ":",
            "_",
            "__",
            "a:b:",
        ] {
            assert!(TokenPrefix::new(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn wrong_prefix_is_typed() {
        let (_, token) = mint_token(&TokenPrefix::new("sk_test_").unwrap());
        let live = TokenPrefix::new("sk_live_").unwrap();
        assert_eq!(
            ParsedToken::parse_with_prefix(token.expose_secret(), &[live]).unwrap_err(),
            TokenError::WrongPrefix
        );
    }

    #[test]
    fn hint_shows_prefix_and_last_four() {
        let (_, token) = mint_token(&TokenPrefix::new("st_").unwrap());
        let hint = display_hint(token.expose_secret());
        assert!(hint.starts_with("st_…"));
        assert!(token.expose_secret().ends_with(&hint[hint.len() - 4..]));
    }

    #[test]
    fn key_id_round_trips_as_text() {
        let id = KeyId::random();
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
        assert!("short".parse::<KeyId>().is_err());
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn prefix() -> impl Strategy<Value = TokenPrefix> {
        ("[a-z0-9][a-z0-9_]{0,13}", prop_oneof![Just('_'), Just(':')])
            .prop_map(|(s, end)| TokenPrefix::new(&format!("{s}{end}")).unwrap())
    }

    proptest! {
        #[test]
        fn round_trip(prefix in prefix(), id in any::<u64>(), secret in any::<[u8; 32]>()) {
            let token = encode_token(&prefix, KeyId(id), &secret);
            let parsed = ParsedToken::parse_with_prefix(token.expose_secret(), std::slice::from_ref(&prefix)).unwrap();
            prop_assert_eq!(parsed.key_id(), KeyId(id));
            prop_assert_eq!(parsed.secret(), &secret);
            prop_assert_eq!(parsed.prefix(), prefix.as_str());
        }

        #[test]
        fn every_single_character_change_is_rejected(
            prefix in prefix(),
            id in any::<u64>(),
            secret in any::<[u8; 32]>(),
            pos in any::<prop::sample::Index>(),
            replacement in "[0-9A-Za-z_:]",
        ) {
            let token = encode_token(&prefix, KeyId(id), &secret);
            let original = token.expose_secret();
            let i = pos.index(original.len());
            let mut changed = original.as_bytes().to_vec();
            prop_assume!(changed[i] != replacement.as_bytes()[0]);
            changed[i] = replacement.as_bytes()[0];
            let changed = String::from_utf8(changed).unwrap();
            prop_assert!(ParsedToken::parse(&changed).is_err());
        }

        #[test]
        fn parsing_never_panics_on_arbitrary_input(s in any::<String>()) {
            let _ = ParsedToken::parse(&s);
        }

        #[test]
        fn parsing_never_panics_near_the_token_length(
            s in proptest::collection::vec(any::<u8>(), BODY_LEN - 2..MAX_TOKEN_LEN + 2)
        ) {
            let s = String::from_utf8_lossy(&s);
            let _ = ParsedToken::parse(&s);
        }
    }

    #[test]
    fn overlong_input_is_rejected_unread() {
        let s = "a".repeat(10_000);
        assert_eq!(ParsedToken::parse(&s).unwrap_err(), TokenError::TooLong);
    }
}
