//! Tables for people, JSON for scripts; notes on stderr so stdout stays clean.

use std::io::Write;

use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::error::CliError;

/// Writes `text` to stdout. A closed pipe (`| head`) is not an error worth
/// a panic: it ends the output quietly.
pub(crate) fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::io(format!("cannot write to stdout: {e}"))),
    }
}

/// One JSON document (pretty) on stdout.
pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::io(format!("cannot encode JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// One JSON object on one line (for streams).
pub(crate) fn print_json_line<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::io(format!("cannot encode JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// A line for the human on stderr.
pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// A time to the second, RFC 3339; `-` for none.
pub(crate) fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub(crate) fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// A plain text table with a header row and columns padded to fit.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub(crate) fn row<const N: usize>(&mut self, cells: [String; N]) {
        // Control characters (a key name is user input) would garble the terminal.
        self.rows.push(
            cells
                .into_iter()
                .map(|c| {
                    c.chars()
                        .map(|ch| if ch.is_control() { '?' } else { ch })
                        .collect()
                })
                .collect(),
        );
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_neutralise_control_characters() {
        let mut t = Table::new(["id", "name"]);
        t.row(["abc".into(), "x\u{1b}[31m".into()]);
        assert_eq!(t.render(), "id   name\nabc  x?[31m\n");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            hide_password("postgres://app:hunter2@db:5432/keys"),
            "postgres://app:***@db:5432/keys"
        );
        assert_eq!(
            hide_password("postgres://app@db/keys"),
            "postgres://app@db/keys"
        );
    }
}
