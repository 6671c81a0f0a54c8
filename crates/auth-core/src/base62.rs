//! Fixed-width base62 encoding of integers.
//!
//! Every field of a token body has a fixed width, so a token can be split
//! without separators and its length alone rejects most garbage.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Width of a base62 `u32` (62^6 > 2^32).
pub(crate) const U32_WIDTH: usize = 6;
/// Width of a base62 `u64` (62^11 > 2^64).
pub(crate) const U64_WIDTH: usize = 11;
/// Width of a base62 `u128` (62^22 > 2^128).
pub(crate) const U128_WIDTH: usize = 22;

/// Appends `value` to `out` as exactly `width` base62 digits (most significant first).
pub(crate) fn encode_into(mut value: u128, width: usize, out: &mut String) {
    let mut digits = [b'0'; U128_WIDTH];
    for slot in digits[..width].iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    debug_assert_eq!(value, 0, "value wider than the field");
    // The alphabet is ASCII, so this cannot fail.
    out.push_str(std::str::from_utf8(&digits[..width]).unwrap_or_default());
}

fn digit(b: u8) -> Option<u128> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u128),
        b'A'..=b'Z' => Some((b - b'A' + 10) as u128),
        b'a'..=b'z' => Some((b - b'a' + 36) as u128),
        _ => None,
    }
}

/// Decodes a fixed-width field; `None` on a non-base62 byte or overflow of `max`.
pub(crate) fn decode(field: &[u8], max: u128) -> Option<u128> {
    let mut value: u128 = 0;
    for &b in field {
        value = value.checked_mul(62)?.checked_add(digit(b)?)?;
    }
    (value <= max).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        for (v, w, max) in [
            (0u128, U64_WIDTH, u64::MAX as u128),
            (u64::MAX as u128, U64_WIDTH, u64::MAX as u128),
            (u128::MAX, U128_WIDTH, u128::MAX),
            (u32::MAX as u128, U32_WIDTH, u32::MAX as u128),
        ] {
            let mut s = String::new();
            encode_into(v, w, &mut s);
            assert_eq!(s.len(), w);
            assert_eq!(decode(s.as_bytes(), max), Some(v));
        }
    }

    #[test]
    fn rejects_overflow_and_bad_bytes() {
        assert_eq!(decode(b"zzzzzzzzzzz", u64::MAX as u128), None);
        assert_eq!(decode(b"00000-00000", u64::MAX as u128), None);
        assert_eq!(decode(b"zzzzzzzzzzzzzzzzzzzzzzzzz", u128::MAX), None);
    }
}
