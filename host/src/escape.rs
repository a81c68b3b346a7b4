//! Text a fix controls, shown on a terminal without letting it steer the
//! terminal.
//!
//! A fix decides the bytes of its messages, its output, the files it writes
//! (shown as diffs), the names and symlink targets it creates and the
//! manifest fields `inspect` and `report` show. Every line for people goes
//! through this module, so none of those bytes can move the cursor, clear a
//! line, rewrite a title or reorder a line on screen. One scheme, everywhere:
//!
//! | what | shown as |
//! |---|---|
//! | tab | kept |
//! | line feed, carriage return | `\n`, `\r` (a line feed is kept where it is the output's own line break) |
//! | other C0 controls and DEL | `\xHH`: `\x1b`, `\x07`, `\x08`, `\x00`, `\x7f` |
//! | C1 controls (U+0080–U+009F) | `\u{HH}`: `\u{9b}`, `\u{85}` |
//! | bidi controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) and the line and paragraph separators (U+2028, U+2029) | `\u{HHHH}`: `\u{202e}` |
//! | a byte that is not UTF-8 | `\xHH` with `HH` ≥ `80`: `\xff` |
//!
//! A backslash is not doubled: `\x1b` can also be those four characters
//! written by the fix. The JSON output (`--json`) and the journal keep the
//! exact text; [`json`] writes it with DEL, C1 and bidi controls as
//! `\uXXXX` escapes, so even a raw JSON line is safe to print.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown escaped (tab never is; line feed is decided by the
/// caller).
fn hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

fn push_escaped(out: &mut String, c: char) {
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\u{0}'..='\u{1f}' | '\u{7f}' => write!(out, "\\x{:02x}", c as u32),
        _ => write!(out, "\\u{{{:x}}}", c as u32),
    };
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let shown = |c: char| !hidden(c) || (keep_newlines && c == '\n');
    if s.chars().all(shown) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match shown(c) {
            true => out.push(c),
            false => push_escaped(&mut out, c),
        }
    }
    Cow::Owned(out)
}

/// One field on one line (a message, a path, a reason): every control
/// but tab escaped, line feeds included, so it cannot start a line of its
/// own.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// Text whose line feeds are the output's own line breaks (a whole line
/// the host wrote, a diff): every control but tab and line feed escaped.
pub fn block(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// Bytes as one field ([`line`]), each byte that is not UTF-8 as `\xHH`.
pub fn line_bytes(b: &[u8]) -> Cow<'_, str> {
    bytes(b, false)
}

/// Bytes as a block ([`block`]), each byte that is not UTF-8 as `\xHH`.
pub fn block_bytes(b: &[u8]) -> Cow<'_, str> {
    bytes(b, true)
}

fn bytes(b: &[u8], keep_newlines: bool) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return escape(s, keep_newlines);
    }
    let mut out = String::with_capacity(b.len() + 16);
    for chunk in b.utf8_chunks() {
        out.push_str(&escape(chunk.valid(), keep_newlines));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// Whether JSON writes `c` as a `\uXXXX` escape beyond what JSON requires:
/// DEL, C1 and bidi controls, the line and paragraph separators.
fn json_escaped(c: char) -> bool {
    c == '\u{7f}' || (c >= '\u{80}' && hidden(c))
}

/// A JSON formatter that escapes, beyond JSON's own rules, every character
/// [`json_escaped`] names. The text a reader decodes is exactly the same.
struct Safe;

impl serde_json::ser::Formatter for Safe {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if json_escaped(c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                // All of them lie in the basic multilingual plane.
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// `v` as one line of JSON that is safe to print on a terminal and decodes
/// to exactly `v`.
pub fn json(v: &impl serde::Serialize) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, Safe);
    if v.serialize(&mut ser).is_err() {
        return "null".into();
    }
    // The serializer writes UTF-8 only.
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_is_shown_and_tab_is_kept() {
        assert_eq!(line("a\tb"), "a\tb");
        assert_eq!(
            line("\x1b[2K\x1b[1A\r\x08\x07\x7f"),
            "\\x1b[2K\\x1b[1A\\r\\x08\\x07\\x7f"
        );
        assert_eq!(line("x\ny"), "x\\ny");
        assert_eq!(block("x\ny\r"), "x\ny\\r");
        assert_eq!(
            line("\u{9b}31m \u{202e}abc\u{2069}"),
            "\\u{9b}31m \\u{202e}abc\\u{2069}"
        );
        assert_eq!(line("plain ünïcode ✓"), "plain ünïcode ✓");
        assert_eq!(line_bytes(b"ok\xff\xfe\x1b"), "ok\\xff\\xfe\\x1b");
        assert_eq!(block_bytes(b"a\nb\xc3"), "a\nb\\xc3");
    }

    #[test]
    fn json_escapes_more_and_decodes_to_the_same_text() {
        let all: String = (0u32..0x300)
            .chain(0x2000..0x2070)
            .filter_map(char::from_u32)
            .collect();
        let v = serde_json::json!({ "text": all });
        let line = json(&v);
        assert!(
            line.chars().all(|c| !hidden(c) && c != '\u{7f}'),
            "{line:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v);
    }
}
