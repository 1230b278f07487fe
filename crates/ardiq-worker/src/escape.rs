//! Text from Redis (task ids and names, worker ids, lane and queue names, errors) goes to
//! terminals and log collectors: control characters in it are escaped, so a forged task
//! name cannot add a fake log line (`\n`), overwrite one (`\r`) or drive the terminal
//! (`ESC [2J`). The same escapes as the Python package's (`python/ardiq/_logsafe.py`):
//! `\n`, `\r`, `\t` and `\xNN` for the other C0 controls, DEL and the C1 controls.
//! JSON has its own escaping, done by its writer (`serde_json` for the commands' `--json`
//! documents, `logging::json_str` for JSON log lines).

use std::borrow::Cow;
use std::fmt::Write as _;

fn is_control(c: char) -> bool {
    matches!(c as u32, 0..=0x1f | 0x7f..=0x9f)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
    }
}

/// `s` with every control character escaped (borrowed when there is none).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A log message, which may span lines (a Python traceback): control characters are
/// escaped except line breaks, and every line after the first is indented, so nothing in
/// a message can start a line that reads as a log line of its own.
pub fn message(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            c if is_control(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls() {
        assert!(matches!(printable("plain-id ü"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\nb\rc\td\x1b[2J\x7f\u{9b}"),
            "a\\nb\\rc\\td\\x1b[2J\\x7f\\x9b"
        );
    }

    #[test]
    fn messages_keep_lines_but_indent_them() {
        assert_eq!(
            message("boom\nTraceback\r\n\x1b[2J"),
            "boom\n    Traceback\\r\n    \\x1b[2J"
        );
    }
}
