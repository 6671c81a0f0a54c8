//! `X-Forwarded-For` / `Forwarded` resolution on arbitrary header bytes:
//! never panics, an untrusted peer is always the client, and a trusted
//! peer's answer is the peer or an address the headers name.
#![no_main]

use std::net::IpAddr;

use auth_ratelimit::{ForwardedHeader, TrustedProxies};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // `ForwardedHeader` is non-exhaustive: no `match` on it out here.
    let (header, name) = if selector & 1 == 0 {
        (ForwardedHeader::XForwardedFor, "x-forwarded-for")
    } else {
        (ForwardedHeader::Forwarded, "forwarded")
    };
    let mut headers = HeaderMap::new();
    // Up to three header lines, split at 0xff bytes.
    for line in rest.split(|b| *b == 0xff).take(3) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(name, v);
        }
    }
    let proxies = TrustedProxies::new(["10.0.0.0/8", "fd00::/8", "127.0.0.1"])
        .unwrap()
        .header(header);
    let trusted: IpAddr = "10.1.2.3".parse().unwrap();
    let untrusted: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(proxies.client_ip(untrusted, &headers), untrusted);
    let got = proxies.client_ip(trusted, &headers);
    if got != trusted {
        let text: String = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(",")
            .to_ascii_lowercase();
        let canonical = got.to_string();
        let mapped = match got {
            IpAddr::V4(v4) => Some(v4.to_ipv6_mapped().to_string()),
            IpAddr::V6(_) => None,
        };
        // Canonical forms may differ from the written one (leading zeros in
        // IPv6, v4-mapped v6): then at least the address parses back.
        let named = text.contains(&canonical)
            || mapped.is_some_and(|m| text.contains(&m))
            || text.contains(':');
        assert!(named, "{got} not named in {text:?}");
    }
});
