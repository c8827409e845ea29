//! Cutting user text safely: by characters, never inside one.
//!
//! Runbooks and command output are written in any language (the seed documents are in
//! Japanese), and error offsets from parsers (jmespath, CEL, regex, handlebars, YAML) are
//! byte offsets that may fall inside a multi-byte character. Slicing `&s[a..b]` there
//! panics. Every place that takes "the character at this offset" or "at most N
//! characters" of user text goes through these helpers instead of an ad-hoc slice.

/// The largest char boundary of `s` at or before byte `i` (`s.len()` past the end).
pub fn floor_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    (0..=i).rev().find(|&b| s.is_char_boundary(b)).unwrap_or(0)
}

/// The character that byte offset `i` falls in (empty at or past the end): the text a
/// caret points at.
pub fn char_at(s: &str, i: usize) -> &str {
    let start = floor_boundary(s, i);
    let rest = &s[start..];
    rest.chars().next().map_or("", |c| &rest[..c.len_utf8()])
}

/// At most `n` characters of `s`, cut on a char boundary.
pub fn prefix_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((b, _)) => &s[..b],
        None => s,
    }
}

/// The byte offset of 1-based `line` and `column` (counted in characters) in `text`,
/// clamped to the line's end and the text's end: parsers report positions this way.
pub fn line_col_offset(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset
                + l.char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(l.len(), |(b, _)| b);
        }
        offset += l.len();
    }
    text.len()
}

/// How many leading bytes of `bytes` to keep so that a cut does not end inside a UTF-8
/// sequence: an incomplete sequence at the very end is left out (invalid bytes elsewhere
/// are kept as they are; they are shown as U+FFFD).
pub fn utf8_complete_len(bytes: &[u8]) -> usize {
    let n = bytes.len();
    // A sequence is at most 4 bytes: look back for the lead byte of the last one.
    for back in 1..=n.min(4) {
        let b = bytes[n - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte
        }
        let need = match b {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return n, // not a lead byte: invalid, keep as is
        };
        return if need > back { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Japanese (3 bytes), emoji (4 bytes) and a combining mark (e + U+0301).
    const MIXED: &str = "aテ🚀e\u{301}z";

    #[test]
    fn char_at_every_byte_offset() {
        let expect = [
            "a", "テ", "テ", "テ", "🚀", "🚀", "🚀", "🚀", "e", "\u{301}", "\u{301}", "z",
        ];
        for (i, want) in expect.iter().enumerate() {
            assert_eq!(char_at(MIXED, i), *want, "offset {i}");
        }
        assert_eq!(char_at(MIXED, MIXED.len()), "");
        assert_eq!(char_at(MIXED, 999), "");
        assert_eq!(char_at("", 0), "");
    }

    #[test]
    fn prefixes_count_characters() {
        assert_eq!(prefix_chars(MIXED, 0), "");
        assert_eq!(prefix_chars(MIXED, 2), "aテ");
        assert_eq!(prefix_chars(MIXED, 3), "aテ🚀");
        assert_eq!(prefix_chars(MIXED, 4), "aテ🚀e");
        assert_eq!(prefix_chars(MIXED, 99), MIXED);
        for i in 0..=MIXED.len() + 1 {
            assert!(MIXED.is_char_boundary(floor_boundary(MIXED, i)));
        }
    }

    #[test]
    fn line_and_column_count_characters() {
        let t = "テスト\nx == テスト(";
        assert_eq!(line_col_offset(t, 1, 2), 3);
        assert_eq!(line_col_offset(t, 2, 6), 10 + 5);
        assert_eq!(char_at(t, line_col_offset(t, 2, 9)), "(");
        assert_eq!(line_col_offset(t, 2, 99), t.len());
        assert_eq!(line_col_offset(t, 9, 1), t.len());
    }

    #[test]
    fn incomplete_utf8_at_the_end_is_left_out() {
        let bytes = MIXED.as_bytes();
        for cut in 0..=bytes.len() {
            let keep = utf8_complete_len(&bytes[..cut]);
            assert!(std::str::from_utf8(&bytes[..keep]).is_ok(), "cut {cut}");
            assert!(cut - keep < 4);
        }
        assert_eq!(utf8_complete_len(b"ab\xff"), 3, "invalid bytes stay");
        assert_eq!(utf8_complete_len("テ".as_bytes()), 3);
        assert_eq!(utf8_complete_len(&"テ".as_bytes()[..2]), 0);
    }
}
