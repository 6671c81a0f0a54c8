//! Header work done on every request, sized to the request.
//!
//! A `HeaderMap` lookup hashes the name and probes the map, and a custom
//! name such as the subject header costs more (its bytes are hashed one by
//! one). Most API requests carry
//! a handful of headers, and comparing a handful of names costs a few
//! instructions each, so small requests are scanned and large ones looked up.

use http::{header::Entry, HeaderMap, HeaderName};

/// Up to this many header values, one pass over them is cheaper than a lookup
/// per name.
const SCAN_MAX: usize = 16;

/// Marks every value of the credential headers `names` so that `Debug` and
/// tower-http's trace layers hide them.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap, names: &[HeaderName]) {
    if headers.len() <= SCAN_MAX {
        // Every value, those of a repeated name included.
        for (name, value) in headers.iter_mut() {
            if names.contains(name) {
                value.set_sensitive(true);
            }
        }
        return;
    }
    // Without repeated headers one lookup per name does; otherwise every
    // value of a repeated name must be marked.
    let repeated = headers.len() != headers.keys_len();
    for name in names {
        if !repeated {
            if let Some(value) = headers.get_mut(name) {
                value.set_sensitive(true);
            }
            continue;
        }
        // `entry` may reserve room, so look first: most names are absent.
        if !headers.contains_key(name) {
            continue;
        }
        if let Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// Whether the request has a `name` header.
pub(crate) fn contains(headers: &HeaderMap, name: &HeaderName) -> bool {
    if headers.keys_len() <= SCAN_MAX {
        headers.keys().any(|k| k == name)
    } else {
        headers.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use http::{header, HeaderValue};

    use super::*;

    /// `n` filler headers plus the given ones (the filler decides scan or lookup).
    fn headers(n: usize, extra: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for i in 0..n {
            let name = HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
            h.insert(name, HeaderValue::from_static("v"));
        }
        for (k, v) in extra {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn sensitive(h: &HeaderMap, name: &str) -> Vec<bool> {
        h.get_all(name)
            .iter()
            .map(HeaderValue::is_sensitive)
            .collect()
    }

    #[test]
    fn marks_every_value_of_every_named_header_small_or_large() {
        let names = [header::AUTHORIZATION, HeaderName::from_static("x-api-key")];
        let extra = [
            ("authorization", "Bearer a"),
            ("x-api-key", "b"),
            ("authorization", "Bearer c"),
            ("x-other", "d"),
        ];
        for n in [0, SCAN_MAX - extra.len(), SCAN_MAX, 3 * SCAN_MAX] {
            let mut h = headers(n, &extra);
            mark_sensitive(&mut h, &names);
            assert_eq!(sensitive(&h, "authorization"), [true, true], "{n} filler");
            assert_eq!(sensitive(&h, "x-api-key"), [true], "{n} filler");
            assert_eq!(sensitive(&h, "x-other"), [false], "{n} filler");
            assert!(h
                .iter()
                .filter(|(k, _)| k.as_str().starts_with("x-filler"))
                .all(|(_, v)| !v.is_sensitive()));
        }
    }

    #[test]
    fn marks_a_single_value_without_repeats_in_a_large_request() {
        let mut h = headers(3 * SCAN_MAX, &[("authorization", "Bearer a")]);
        mark_sensitive(
            &mut h,
            &[header::AUTHORIZATION, header::SEC_WEBSOCKET_PROTOCOL],
        );
        assert_eq!(sensitive(&h, "authorization"), [true]);
        assert!(
            !h.contains_key(header::SEC_WEBSOCKET_PROTOCOL),
            "an absent name is not added"
        );
    }

    #[test]
    fn contains_finds_a_custom_name_small_or_large() {
        let subject = HeaderName::from_static("x-subject-user");
        for n in [0, SCAN_MAX - 1, SCAN_MAX, 3 * SCAN_MAX] {
            assert!(
                contains(&headers(n, &[("x-subject-user", "bob")]), &subject),
                "{n}"
            );
            assert!(
                !contains(&headers(n, &[("x-subject-users", "bob")]), &subject),
                "{n}"
            );
        }
    }
}
