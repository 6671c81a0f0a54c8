//! The token parser on arbitrary input: never panics; whatever it accepts
//! has the documented shape and keeps its key id through a round trip.
#![no_main]

use auth_core::{KeyId, token::ParsedToken, TokenPrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = ParsedToken::parse(input) {
        assert!(input.starts_with(parsed.prefix()));
        let id = parsed.key_id();
        assert_eq!(id.to_string().parse::<KeyId>().ok(), Some(id));
        assert_eq!(parsed.secret().len(), 32);
    }
    let prefixes = [TokenPrefix::new("st_").unwrap(), TokenPrefix::new("p:").unwrap()];
    if let Ok(parsed) = ParsedToken::parse_with_prefix(input, &prefixes) {
        assert!(prefixes.iter().any(|p| p.as_str() == parsed.prefix()));
    }
    let _ = input.parse::<KeyId>();
    let _ = TokenPrefix::new(input);
});
