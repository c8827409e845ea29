//! Diagnostics: what is wrong, where, and what to do about it.
//!
//! Every problem the validator finds is a [`Diagnostic`] with a stable [`Code`]. Codes are
//! part of the public interface (people grep for them and suppress them in CI), so a code
//! is never reused for a different problem. `docs/diagnostics.md` lists them all.

use std::fmt;

/// A region of the source text: byte offset and length, plus the 1-based line and column
/// (in characters) of its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes (may be 0 for a point).
    pub len: usize,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl Span {
    /// A sub-span `start..start+len` bytes into this span's text, on the same line
    /// (used to point inside a scalar, e.g. at one template expression).
    pub fn narrow(self, source: &str, start: usize, len: usize) -> Span {
        let offset = (self.offset + start).min(source.len());
        let len = len.min(source.len() - offset);
        let Some(prefix) = source.get(self.offset..offset) else {
            return self;
        };
        let newlines = prefix.matches('\n').count() as u32;
        let column = if newlines == 0 {
            self.column + prefix.chars().count() as u32
        } else {
            let after = prefix.rsplit('\n').next().unwrap_or("");
            after.chars().count() as u32 + 1
        };
        Span {
            offset,
            len,
            line: self.line + newlines,
            column,
        }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Suspicious but runnable; an error under `--deny-warnings`.
    Warning,
    /// The runbook cannot be planned or run.
    Error,
}

macro_rules! codes {
    ($( $variant:ident = $code:literal, $severity:ident, $summary:literal; )*) => {
        /// Stable diagnostic codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $( #[doc = $summary] $variant, )*
        }

        impl Code {
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$( Code::$variant, )*];

            /// The `RBnnn` identifier.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }

            /// The default severity of this code.
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$severity, )* }
            }

            /// One line saying what the code is about.
            pub fn summary(self) -> &'static str {
                match self { $( Code::$variant => $summary, )* }
            }
        }
    };
}

codes! {
    YamlSyntax = "RB001", Error, "the file is not valid YAML";
    UnknownField = "RB002", Error, "a field that the format does not know";
    WrongType = "RB003", Error, "a value of the wrong type";
    MissingField = "RB004", Error, "a required field is missing";
    DuplicateStepId = "RB005", Error, "two steps share an id";
    BadId = "RB006", Error, "an id or name that does not follow the naming rules";
    UnknownStep = "RB007", Error, "a reference to a step that does not exist";
    Cycle = "RB008", Error, "the steps form a cycle";
    UnreachableStep = "RB009", Error, "a step that can never run";
    BranchWithoutCases = "RB010", Error, "a branch step without cases";
    ActionCount = "RB011", Error, "a step without exactly one action (or a branch with one)";
    MissingTitle = "RB012", Error, "a step without a title";
    UnknownVariable = "RB013", Error, "a template names a parameter or variable that does not exist";
    TemplateSyntax = "RB014", Error, "a template that does not parse";
    NotYetRun = "RB015", Error, "a reference to a step that cannot have run before this point";
    CelSyntax = "RB016", Error, "a CEL condition that does not parse";
    CelUnknownIdentifier = "RB017", Error, "a CEL condition names an unknown identifier";
    JmespathSyntax = "RB018", Error, "an invalid JMESPath expression";
    InvalidDuration = "RB019", Error, "an invalid duration";
    BadDefault = "RB020", Error, "a parameter default that does not match its type, pattern or values";
    SecretDefault = "RB021", Error, "a secret parameter with a default value";
    RawTemplate = "RB022", Warning, "a template inserts a value without quoting";
    UnsupportedVersion = "RB023", Error, "an apiVersion this tool does not support";
    InvalidValue = "RB024", Error, "a value outside the allowed set";
    InvalidRegex = "RB025", Error, "an invalid regular expression";
    NameMismatch = "RB026", Warning, "the runbook name differs from its file name";
    MutatingCheck = "RB027", Warning, "a check step whose command looks like it changes something";
    ActWithoutVerify = "RB028", Warning, "an act step with no verify step after it";
    UnknownCapture = "RB029", Error, "a reference to a capture that the step does not define";
    FieldNotAllowed = "RB030", Error, "a field that does not apply to this kind of step";
    NoSteps = "RB031", Error, "a runbook without steps";
    UnknownHelper = "RB032", Error, "a template uses a helper that does not exist";
    BadRetryTarget = "RB033", Error, "retry_from names a step that does not come before this one";
    CelType = "RB034", Error, "a condition combines or compares values of different types";
    UnknownParam = "RB035", Error, "a scenario gives a value for a parameter the runbook does not declare";
    UnknownPhase = "RB036", Error, "a step names a phase the runbook does not declare, or a phase id is declared twice";
    EmptyPhase = "RB037", Warning, "a phase that no step belongs to";
    TriggerParam = "RB038", Error, "a trigger sets a parameter the runbook does not declare, or reads an alert field that does not exist";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secondary location that explains the primary one ("first defined here").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    /// Where.
    pub span: Span,
    /// What this location is.
    pub label: String,
}

/// One problem in a runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// Where.
    pub span: Span,
    /// Short text shown under the caret.
    pub label: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
    /// Other locations that explain this one.
    pub related: Vec<Related>,
}

impl Diagnostic {
    /// A diagnostic with the code's default severity.
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            span,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    /// Add the text shown under the caret.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Add a help line.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Add a related location.
    #[must_use]
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push(Related {
            span,
            label: label.into(),
        });
        self
    }

    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// "did you mean `x`?" for a misspelt name, if one candidate is close enough.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_sequential() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.as_str(), format!("RB{:03}", i + 1));
        }
    }

    #[test]
    fn narrow_counts_lines_and_columns() {
        let src = "run: |\n  echo {{x}}\n";
        let span = Span {
            offset: 5,
            len: 18,
            line: 1,
            column: 6,
        };
        let inner = span.narrow(src, src[5..].find("{{").unwrap(), 5);
        assert_eq!((inner.line, inner.column), (2, 8));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("titel", ["title", "steps"]).as_deref(),
            Some("did you mean `title`?")
        );
        assert_eq!(did_you_mean("zzz", ["title", "steps"]), None);
    }
}
