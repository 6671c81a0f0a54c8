//! `scan PATH...`: finds tokens in files, telling well-formed tokens (their
//! checksum holds: almost surely real) from look-alikes. Never prints a
//! secret: a finding shows the prefix, the last four characters and the key id.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use auth_core::{token::ParsedToken, token::BODY_LEN, token::MAX_PREFIX_LEN, TokenPrefix};
use serde::Serialize;

use crate::{
    cli::ScanArgs,
    error::{CliError, Exit},
    output::{self, Table},
};

/// Files larger than this are skipped (tokens live in source and config).
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// One thing that looks like a token.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Finding {
    pub path: String,
    pub line: usize,
    pub column: usize,
    /// `token`: the checksum holds; `look_alike`: the shape only.
    pub kind: &'static str,
    /// Prefix, `…` and the last four characters.
    pub hint: String,
    /// The key id, for a well-formed token (to look it up and revoke it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_prefix_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The findings in `text`. With `prefixes`, only tokens of those; without,
/// any well-formed prefix (2-16 characters ending in `_` or `:`).
pub(crate) fn scan_text(text: &[u8], prefixes: &[TokenPrefix]) -> Vec<(usize, Finding)> {
    let mut found = Vec::new();
    // A prefix ends with `_` or `:`; the body after it is exactly BODY_LEN
    // base62 characters, not followed by another one.
    for sep in 0..text.len() {
        if !matches!(text[sep], b'_' | b':') {
            continue;
        }
        let start = sep + 1;
        let end = start + BODY_LEN;
        if end > text.len()
            || !text[start..end].iter().copied().all(is_base62)
            || text.get(end).copied().is_some_and(is_base62)
        {
            continue;
        }
        // Candidate prefix starts: back over prefix characters, at most 16.
        let lowest = sep + 1 - (sep + 1).min(MAX_PREFIX_LEN);
        let mut run_start = sep;
        while run_start > lowest && is_prefix_char(text[run_start - 1]) {
            run_start -= 1;
        }
        let candidates = run_start..sep;
        let parse = |from: usize| -> Option<(usize, String)> {
            let token = std::str::from_utf8(&text[from..end]).ok()?;
            let parsed = ParsedToken::parse(token).ok()?;
            if !prefixes.is_empty() && !prefixes.iter().any(|p| p.as_str() == parsed.prefix()) {
                return None;
            }
            Some((from, parsed.key_id().to_string()))
        };
        let well_formed = candidates.clone().find_map(parse);
        let tail = String::from_utf8_lossy(&text[end - 4..end]).into_owned();
        match well_formed {
            Some((from, key_id)) => {
                let prefix = String::from_utf8_lossy(&text[from..start]).into_owned();
                found.push((
                    from,
                    Finding {
                        path: String::new(),
                        line: 0,
                        column: 0,
                        kind: "token",
                        hint: format!("{prefix}…{tail}"),
                        key_id: Some(key_id),
                    },
                ));
            }
            None => {
                // A look-alike: the shape of one of the prefixes asked for
                // (or of any prefix), with a checksum that does not hold.
                let from = if prefixes.is_empty() {
                    candidates.clone().find(|&f| {
                        TokenPrefix::new(&String::from_utf8_lossy(&text[f..start])).is_ok()
                    })
                } else {
                    candidates.clone().find(|&f| {
                        prefixes
                            .iter()
                            .any(|p| p.as_str().as_bytes() == &text[f..start])
                    })
                };
                if let Some(from) = from {
                    let prefix = String::from_utf8_lossy(&text[from..start]).into_owned();
                    found.push((
                        from,
                        Finding {
                            path: String::new(),
                            line: 0,
                            column: 0,
                            kind: "look_alike",
                            hint: format!("{prefix}…{tail}"),
                            key_id: None,
                        },
                    ));
                }
            }
        }
    }
    found
}

fn files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::io(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| CliError::io(format!("cannot read {}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(name, ".git" | "target" | "node_modules") {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&entry) else {
            continue;
        };
        if meta.is_dir() {
            files(&entry, out)?;
        } else if meta.is_file() {
            out.push(entry);
        }
    }
    Ok(())
}

/// `scan`.
pub(crate) fn run(a: &ScanArgs, json: bool) -> Result<ExitCode, CliError> {
    let prefixes = a
        .prefixes
        .iter()
        .map(|p| TokenPrefix::new(p).map_err(|e| CliError::usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut paths = Vec::new();
    for p in &a.paths {
        files(p, &mut paths)?;
    }
    let mut findings = Vec::new();
    for path in paths {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len > MAX_FILE {
            continue;
        }
        let text = std::fs::read(&path)
            .map_err(|e| CliError::io(format!("cannot read {}: {e}", path.display())))?;
        for (offset, mut f) in scan_text(&text, &prefixes) {
            let before = &text[..offset];
            f.line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            f.column = offset
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            f.path = path.display().to_string();
            findings.push(f);
        }
    }
    let tokens = findings.iter().filter(|f| f.kind == "token").count();
    if json {
        output::print_json(&serde_json::json!({ "findings": findings }))?;
    } else if !findings.is_empty() {
        let mut t = Table::new(["location", "kind", "hint", "key id"]);
        for f in &findings {
            t.row([
                format!("{}:{}:{}", f.path, f.line, f.column),
                if f.kind == "token" {
                    "token"
                } else {
                    "look-alike"
                }
                .to_owned(),
                f.hint.clone(),
                f.key_id.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        output::print(&t.render())?;
    }
    if tokens > 0 {
        output::note(&format!(
            "found {tokens} well-formed token(s): revoke them (`keygate keys revoke ID`) and remove them"
        ));
        return Ok(ExitCode::from(Exit::Found as u8));
    }
    if findings.is_empty() && !json {
        output::note("no tokens found");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use auth_core::token::mint_token;

    #[test]
    fn tells_tokens_from_look_alikes() {
        let prefix = TokenPrefix::new("sk_live_").unwrap();
        let (id, token) = mint_token(&prefix);
        let real = token.expose_secret().to_owned();
        // Same shape, last character changed: the checksum no longer holds.
        let mut fake = real.clone();
        let last = fake.pop().unwrap();
        fake.push(if last == 'a' { 'b' } else { 'a' });
        let text = format!("API_KEY={real}\nother = \"{fake}\"\nsk_live_short\n");
        let found = scan_text(text.as_bytes(), &[]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, 8);
        assert_eq!(found[0].1.kind, "token");
        assert_eq!(found[0].1.key_id, Some(id.to_string()));
        assert!(!format!("{:?}", found[0].1).contains(&real[8..40]));
        assert_eq!(found[1].1.kind, "look_alike");
        // Asked for another prefix only: nothing.
        let other = TokenPrefix::new("st_").unwrap();
        assert!(scan_text(text.as_bytes(), &[other]).is_empty());
    }

    #[test]
    fn a_token_glued_to_more_characters_is_not_one() {
        let (_, token) = mint_token(&TokenPrefix::new("st_").unwrap());
        let text = format!("{}x", token.expose_secret());
        assert!(scan_text(text.as_bytes(), &[]).is_empty());
    }
}
