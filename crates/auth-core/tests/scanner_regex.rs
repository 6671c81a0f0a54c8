//! The secret-scanner regex documented in the README matches every minted
//! token, whole, and none of the near misses.

use auth_core::{token::mint_token, TokenPrefix};
use regex::Regex;

/// The regex in the README's fenced block after `<!-- scanner-regex -->`.
fn readme_regex() -> Regex {
    let readme = include_str!("../../../README.md");
    let (_, after) = readme
        .split_once("<!-- scanner-regex -->")
        .expect("README marks the scanner regex");
    let block = after
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker");
    let pattern = block.strip_prefix("regex").expect("a regex block").trim();
    Regex::new(pattern).expect("the README regex compiles")
}

#[test]
fn matches_every_minted_token_whole() {
    let re = readme_regex();
    let prefix = TokenPrefix::new("st_").unwrap();
    for _ in 0..5_000 {
        let (_, token) = mint_token(&prefix);
        let t = token.expose_secret();
        let text = format!("export TOKEN={t}\n");
        let m = re
            .find(&text)
            .unwrap_or_else(|| panic!("no match in {text:?}"));
        assert_eq!(m.as_str(), t);
        // Quoted, in JSON, at the start or end of a line.
        assert!(re.is_match(&format!("\"{t}\"")));
        assert!(re.is_match(t));
    }
}

#[test]
fn near_misses_do_not_match() {
    let re = readme_regex();
    let (_, token) = mint_token(&TokenPrefix::new("st_").unwrap());
    let t = token.expose_secret();
    let body = &t[3..];
    let mut misses = vec![
        t[..t.len() - 1].to_owned(),                   // one character short
        format!("{t}0"),                               // one character long
        format!("x{t}"),                               // glued to a word
        format!("sk_{body}"),                          // another prefix
        format!("ST_{body}"),                          // prefix case
        format!("st-{body}"),                          // separator
        format!("st_{}-{}", &body[..20], &body[21..]), // not base62
    ];
    // Out of the fixed-width ranges: key id above 2^64, a secret half above
    // 2^128, a checksum above 2^32.
    for (pos, c) in [(0, 'M'), (11, '8'), (33, '8'), (55, '5')] {
        let mut b = body.as_bytes().to_vec();
        b[pos] = c as u8;
        misses.push(format!("st_{}", String::from_utf8(b).unwrap()));
    }
    for miss in &misses {
        assert!(!re.is_match(miss), "{miss:?} should not match");
    }
}
