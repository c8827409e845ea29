//! Word-level differences of two texts, for the changed lines of a diff.

/// Word-level differences between two texts: (kept, removed, added) runs in order.
pub fn word_diff(old: &str, new: &str) -> Vec<(WordOp, String)> {
    let a: Vec<&str> = old.split_whitespace().collect();
    let b: Vec<&str> = new.split_whitespace().collect();
    let (n, m) = (a.len(), b.len());
    // LCS table, bounded: very long texts are shown as replaced whole.
    if n.saturating_mul(m) > 4_000_000 {
        return vec![(WordOp::Removed, a.join(" ")), (WordOp::Added, b.join(" "))];
    }
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if a[i] == b[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let mut out: Vec<(WordOp, String)> = Vec::new();
    let mut push = |op: WordOp, w: &str| match out.last_mut() {
        Some((o, text)) if *o == op => {
            text.push(' ');
            text.push_str(w);
        }
        _ => out.push((op, w.to_string())),
    };
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            push(WordOp::Same, a[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || t[i + 1][j] >= t[i][j + 1]) {
            push(WordOp::Removed, a[i]);
            i += 1;
        } else {
            push(WordOp::Added, b[j]);
            j += 1;
        }
    }
    out
}

/// One run of a word diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOp {
    /// In both.
    Same,
    /// Only in the old text.
    Removed,
    /// Only in the new text.
    Added,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_diff_marks_the_changed_words() {
        let d = word_diff("psql -c 'select 1' -h a", "psql -c 'select 2' -h a");
        assert_eq!(
            d,
            vec![
                (WordOp::Same, "psql -c 'select".into()),
                (WordOp::Removed, "1'".into()),
                (WordOp::Added, "2'".into()),
                (WordOp::Same, "-h a".into()),
            ]
        );
    }
}
