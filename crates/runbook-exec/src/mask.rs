//! Secret masking: every secret value is replaced by `***` wherever it appears.

use std::sync::RwLock;

/// The replacement text.
pub const MASK: &str = "***";

/// Lines of a multi-line secret shorter than this are not masked on their own: a line
/// such as `}` or `--` would hide ordinary output everywhere.
const MIN_LINE: usize = 4;

/// The secret values of a run. Captures marked `secret` are added as they are taken.
#[derive(Debug, Default)]
pub struct Masker {
    secrets: RwLock<Vec<String>>,
}

impl Masker {
    /// A masker for these values (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let m = Masker::default();
        for s in secrets {
            m.add(s);
        }
        m
    }

    /// Add a value to hide from now on. Output is masked a line at a time, so each line
    /// of a multi-line secret (a private key, say) is hidden on its own as well.
    pub fn add(&self, secret: String) {
        if secret.is_empty() {
            return;
        }
        if secret.contains('\n') {
            for line in secret.lines().map(str::trim) {
                if line.chars().count() >= MIN_LINE {
                    self.add(line.to_string());
                }
            }
        }
        if let Ok(mut v) = self.secrets.write() {
            if !v.contains(&secret) {
                v.push(secret);
                // Longest first, so a secret that contains another is replaced whole.
                v.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.read().map_or(true, |v| v.is_empty())
    }

    /// `text` with every secret replaced.
    pub fn mask(&self, text: &str) -> String {
        let Ok(secrets) = self.secrets.read() else {
            return MASK.to_string();
        };
        let mut out = text.to_string();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// A line cut short (at the output bound): every secret replaced, and a secret's
    /// beginning left at the very end by the cut replaced too, since the rest of it was
    /// cut off and no longer matches.
    pub fn mask_cut(&self, text: &str) -> String {
        let mut out = self.mask(text);
        let Ok(secrets) = self.secrets.read() else {
            return MASK.to_string();
        };
        for s in secrets.iter() {
            // The longest proper beginning of `s` that `out` ends with.
            let head = s
                .char_indices()
                .rev()
                .map(|(b, _)| &s[..b])
                .find(|h| !h.is_empty() && out.ends_with(h));
            if let Some(h) = head {
                out.truncate(out.len() - h.len());
                out.push_str(MASK);
                break;
            }
        }
        out
    }

    /// A JSON value with every string masked.
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.mask_json(v)))
                    .collect(),
            ),
            Value::Number(n) => {
                let text = n.to_string();
                if self.mask(&text) == text {
                    value.clone()
                } else {
                    Value::String(MASK.into())
                }
            }
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let m = Masker::new(["hunter2".to_string(), "hunter".to_string(), String::new()]);
        assert_eq!(m.mask("pw=hunter2 and hunter"), "pw=*** and ***");
        assert_eq!(
            m.mask_json(&serde_json::json!({"a": ["xhunter2x", 1]})),
            serde_json::json!({"a": ["x***x", 1]})
        );
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn a_secret_cut_in_two_is_masked_in_the_head_that_is_shown() {
        // Japanese, emoji (4 bytes) and a combining mark in the secret.
        let m = Masker::new(["パス🔑e\u{301}word".to_string()]);
        assert_eq!(m.mask_cut("token=パス🔑e"), "token=***");
        assert_eq!(m.mask_cut("token=パ"), "token=***");
        assert_eq!(m.mask_cut("x パス🔑e\u{301}word y パス"), "x *** y ***");
        assert_eq!(m.mask_cut("nothing"), "nothing");
        assert_eq!(
            m.mask("token=パス🔑e"),
            "token=パス🔑e",
            "whole lines are not guessed at"
        );
    }

    #[test]
    fn multi_line_secrets_are_masked_line_by_line() {
        let key = "-----BEGIN KEY-----\r\nMIIEvQIBADANBgkq\n  c2VjcmV0\n}\n-----END KEY-----\n";
        let m = Masker::new([key.to_string()]);
        assert_eq!(m.mask(key), "***");
        assert_eq!(m.mask("line: MIIEvQIBADANBgkq"), "line: ***");
        assert_eq!(m.mask("c2VjcmV0"), "***");
        assert_eq!(m.mask("}"), "}", "lines too short to mask alone stay");
    }
}
