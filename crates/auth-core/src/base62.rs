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
pub(crate) fn encode_into(value: u128, width: usize, out: &mut String) {
    let digits = digits(value, width);
    // The alphabet is ASCII, so this cannot fail.
    out.push_str(std::str::from_utf8(&digits[..width]).unwrap_or_default());
}

/// `value` as the exactly `U64_WIDTH` digits a token's key id field holds.
pub(crate) fn encode_u64(value: u64) -> [u8; U64_WIDTH] {
    let mut field = [0; U64_WIDTH];
    field.copy_from_slice(&digits(u128::from(value), U64_WIDTH)[..U64_WIDTH]);
    field
}

/// `value` as `width` digits at the start of the array.
fn digits(mut value: u128, width: usize) -> [u8; U128_WIDTH] {
    let mut digits = [b'0'; U128_WIDTH];
    for slot in digits[..width].iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    debug_assert_eq!(value, 0, "value wider than the field");
    digits
}

/// Digit value of each byte; `INVALID` for bytes outside the alphabet.
const INVALID: u8 = 0xFF;
const DIGITS: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 62 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// 62^0 ..= 62^10; ten digits fit a `u64`, so most of the work avoids `u128`.
const POW62: [u128; 11] = {
    let mut t = [1u128; 11];
    let mut i = 1;
    while i < 11 {
        t[i] = t[i - 1] * 62;
        i += 1;
    }
    t
};

/// Decodes a fixed-width field; `None` on a non-base62 byte or overflow of `max`.
pub(crate) fn decode(field: &[u8], max: u128) -> Option<u128> {
    let mut value: u128 = 0;
    for chunk in field.chunks(10) {
        let mut part: u64 = 0;
        for &b in chunk {
            let d = DIGITS[b as usize];
            if d == INVALID {
                return None;
            }
            part = part * 62 + d as u64;
        }
        value = value
            .checked_mul(POW62[chunk.len()])?
            .checked_add(part as u128)?;
    }
    (value <= max).then_some(value)
}

/// Decodes a `u64` field, the key id, read on every request. Fixed width,
/// so it unrolls; and as a tree, pairs of digits then pairs of pairs, not
/// digit after digit, so that the multiplications do not wait on each
/// other (a chain of eleven multiply-adds was the slowest part of a cached
/// check after the digest).
pub(crate) fn decode_u64(field: &[u8; U64_WIDTH]) -> Option<u64> {
    let d = field.map(|b| DIGITS[b as usize]);
    // One branch: `INVALID` is the only digit with its top bit set.
    if d.iter().fold(0, |seen, d| seen | d) & 0x80 != 0 {
        return None;
    }
    let d = d.map(u64::from);
    const P2: u64 = 62 * 62;
    const P4: u64 = P2 * P2;
    let pair = |i: usize| d[i] * 62 + d[i + 1];
    // Digits 0-3, 4-7 (below 62^4 each), then 8-10.
    let (a, b) = (pair(0) * P2 + pair(2), pair(4) * P2 + pair(6));
    let c = pair(8) * 62 + d[10];
    // a < 62^4, so a * 62^4 + b < 62^8 fits; the last step can overflow.
    let high = a * P4 + b;
    high.checked_mul(P2 * 62)?.checked_add(c)
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
    fn decode_u64_agrees_with_decode() {
        let mut fields: Vec<[u8; U64_WIDTH]> =
            vec![*b"LygHa16AHYF", *b"LygHa16AHYG", *b"zzzzzzzzzzz"];
        for v in [0, 1, 61, 62, u64::MAX / 3, u64::MAX - 1, u64::MAX] {
            let mut s = String::new();
            encode_into(v as u128, U64_WIDTH, &mut s);
            fields.push(s.as_bytes().try_into().unwrap());
        }
        for i in 0..U64_WIDTH {
            let mut bad = *b"00000000000";
            bad[i] = b'-';
            fields.push(bad);
        }
        for f in fields {
            let want = decode(&f, u64::MAX as u128).map(|v| v as u64);
            assert_eq!(decode_u64(&f), want, "{}", String::from_utf8_lossy(&f));
        }
        assert_eq!(decode_u64(b"LygHa16AHYF"), Some(u64::MAX));
        assert_eq!(decode_u64(b"LygHa16AHYG"), None);
    }

    #[test]
    fn rejects_overflow_and_bad_bytes() {
        assert_eq!(decode(b"zzzzzzzzzzz", u64::MAX as u128), None);
        assert_eq!(decode(b"00000-00000", u64::MAX as u128), None);
        assert_eq!(decode(b"zzzzzzzzzzzzzzzzzzzzzzzzz", u128::MAX), None);
    }
}
