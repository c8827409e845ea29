//! Plain text tables aligned by display width (CJK titles take two columns per character).

use unicode_width::UnicodeWidthStr;

/// Render rows under a header, columns separated by two spaces; the last column is not padded.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.width());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.push_str(&" ".repeat(widths[i] - cell.width() + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `1 step`, `3 steps`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_wide_characters() {
        let out = super::render(
            &["NAME", "TITLE"],
            &[
                vec!["障害".into(), "x".into()],
                vec!["ab".into(), "y".into()],
            ],
        );
        assert_eq!(out, "NAME  TITLE\n障害  x\nab    y\n");
    }
}
