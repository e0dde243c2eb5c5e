//! JSON strings at the byte level, shared by what reads them and what writes them: where a
//! string's plain run ends ([`special`], a word at a time), and a string written escaped
//! exactly as serde_json escapes it ([`write_escaped`]).
//!
//! The body's index ([`super::index`]) reads strings with the first; the response review
//! (`admission::response`) and the JSON log lines (`telemetry`) write them with the second.
//! Pure: no I/O.

use std::fmt;

/// The first byte of `bytes` that ends a string's plain run: `"`, `\` or a control character
/// (below 0x20). Eight bytes at a time in a word; `None` when there is none.
#[inline]
pub fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);
    const SPACES: u64 = u64::from_le_bytes([0x20; 8]);
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        // The lowest flagged byte of each term is the first byte that is a quote, a backslash,
        // or below 0x20 (a borrow only ever flags bytes above a true one; bytes of 0x80 and
        // above are never flagged).
        let (q, b) = (word ^ QUOTES, word ^ BACKSLASHES);
        let found = ((q.wrapping_sub(ONES) & !q)
            | (b.wrapping_sub(ONES) & !b)
            | (word.wrapping_sub(SPACES) & !word))
            & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|found| at + found)
}

/// `text` for the inside of a JSON string, as serde_json writes it: `"` and `\\` escaped with a
/// backslash, `\b \f \n \r \t` in short form, other control characters as `\u00XX`
/// (lowercase hex); everything else as it is. Plain runs are found a word at a time and
/// written whole.
pub fn write_escaped<W: fmt::Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = special(rest.as_bytes()) {
        out.write_str(&rest[..at])?;
        let byte = rest.as_bytes()[at];
        match byte {
            b'"' => out.write_str("\\\"")?,
            b'\\' => out.write_str("\\\\")?,
            b'\n' => out.write_str("\\n")?,
            b'\r' => out.write_str("\\r")?,
            b'\t' => out.write_str("\\t")?,
            0x08 => out.write_str("\\b")?,
            0x0c => out.write_str("\\f")?,
            _ => write!(out, "\\u{byte:04x}")?,
        }
        // The special byte is ASCII: the rest starts on a character boundary.
        rest = &rest[at + 1..];
    }
    out.write_str(rest)
}

/// `text` as a JSON string: quoted, escaped by [`write_escaped`].
pub fn write_string<W: fmt::Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    out.write_char('"')?;
    write_escaped(out, text)?;
    out.write_char('"')
}

/// A [`fmt::Write`] that escapes what passes through it with [`write_escaped`]: a `Display`
/// value written into a JSON string without building its text first.
#[derive(Debug)]
pub struct Escaping<'w, W: fmt::Write + ?Sized>(pub &'w mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for needle in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = needle;
                    if at + 1 < len {
                        bytes[len - 1] = b'"';
                    }
                    assert_eq!(special(&bytes), Some(at), "{len} {at} {needle}");
                }
            }
            for plain in [b' ', 0x7f, 0x80, 0xa2, 0xdc, 0xff] {
                assert_eq!(special(&vec![plain; len]), None, "{len} {plain}");
            }
        }
    }

    proptest! {
        /// Any string is written exactly as serde_json writes it.
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(
            text in prop_oneof![any::<String>(), "[a\"\\\\\u{0}-\u{1f}\u{7f}é]{0,24}"],
        ) {
            let mut written = String::new();
            write_string(&mut written, &text).unwrap();
            prop_assert_eq!(written, serde_json::to_string(&text).unwrap());
        }
    }
}
