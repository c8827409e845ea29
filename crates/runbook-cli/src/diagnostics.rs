//! Rendering diagnostics for people (the source line with a caret) and for
//! machines (one JSON object per line).

use std::io::{IsTerminal, Write};

use runbook_core::{Diagnostic, Severity};
use unicode_width::UnicodeWidthStr;

use crate::library::{self, Loaded};
use crate::{Cli, Exit};

/// Whether stderr gets colour: a terminal, and NO_COLOR unset.
pub fn stderr_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Print a top-level error to stderr.
pub fn error(message: &str) {
    let mut err = anstream::stderr();
    let style = anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Red.into()));
    let _ = writeln!(err, "{style}error{style:#}: {message}");
}

/// Print a warning to stderr.
pub fn warning(message: &str) {
    let mut err = anstream::stderr();
    let style = anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Yellow.into()));
    let _ = writeln!(err, "{style}warning{style:#}: {message}");
}

/// A file's name and text, which is all a diagnostic needs to be shown.
#[derive(Debug, Clone, Copy)]
pub struct SourceFile<'a> {
    /// Where it was read from.
    pub path: &'a std::path::Path,
    /// Its text.
    pub text: &'a str,
}

impl Loaded {
    /// The file, for rendering its diagnostics.
    pub fn file(&self) -> SourceFile<'_> {
        SourceFile {
            path: &self.path,
            text: &self.source,
        }
    }
}

/// Render one diagnostic rustc-style: header, `--> path:line:col`, the source line with
/// a caret under the span (aligned by display width, so CJK text lines up), then help.
pub fn render(loaded: &SourceFile<'_>, diag: &Diagnostic, color: bool) -> String {
    use anstyle::{AnsiColor, Style};
    let paint = |style: Style, text: &str| {
        if color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    };
    let (word, accent) = match diag.severity {
        Severity::Error => ("error", AnsiColor::Red),
        Severity::Warning => ("warning", AnsiColor::Yellow),
    };
    let accent = Style::new().bold().fg_color(Some(accent.into()));
    let blue = Style::new().bold().fg_color(Some(AnsiColor::Blue.into()));
    let bold = Style::new().bold();
    let gutter = diag
        .related
        .iter()
        .map(|r| r.span.line)
        .chain([diag.span.line])
        .max()
        .unwrap_or(1)
        .to_string()
        .len();
    let pad = " ".repeat(gutter);
    let mut out = format!(
        "{}{} {}\n",
        paint(accent, &format!("{word}[{}]", diag.code)),
        paint(bold, ":"),
        paint(bold, &diag.message)
    );
    let snippet = |span: runbook_core::Span,
                   label: Option<&str>,
                   style: Style,
                   mark: char,
                   out: &mut String| {
        out.push_str(&format!(
            "{pad}{} {}:{}:{}\n",
            paint(blue, "-->"),
            loaded.path.display(),
            span.line,
            span.column
        ));
        let Some(line_text) = loaded
            .text
            .lines()
            .nth(span.line.saturating_sub(1) as usize)
        else {
            return;
        };
        let line_text = line_text.trim_end_matches('\r');
        let start_col = span.column.saturating_sub(1) as usize;
        let before: String = line_text.chars().take(start_col).collect();
        let rest: String = line_text.chars().skip(start_col).collect();
        let span_text: String = loaded
            .text
            .get(span.offset..span.offset + span.len)
            .map(|t| t.lines().next().unwrap_or(""))
            .filter(|t| rest.starts_with(t))
            .unwrap_or("")
            .to_string();
        let width = span_text.width().max(1);
        out.push_str(&format!("{pad} {}\n", paint(blue, "|")));
        out.push_str(&format!(
            "{} {} {}\n",
            paint(blue, &format!("{:>gutter$}", span.line)),
            paint(blue, "|"),
            line_text
        ));
        let carets: String = std::iter::repeat_n(mark, width).collect();
        let label = label.map(|l| format!(" {l}")).unwrap_or_default();
        out.push_str(&format!(
            "{pad} {} {}{}\n",
            paint(blue, "|"),
            " ".repeat(before.width()),
            paint(style, &format!("{carets}{label}"))
        ));
    };
    snippet(diag.span, diag.label.as_deref(), accent, '^', &mut out);
    for rel in &diag.related {
        snippet(rel.span, Some(&rel.label), blue, '-', &mut out);
    }
    if let Some(help) = &diag.help {
        out.push_str(&format!(
            "{pad} {} {}: {help}\n",
            paint(blue, "="),
            paint(bold, "help")
        ));
    }
    out.push('\n');
    out
}

/// One diagnostic as a JSON object.
pub fn to_json(loaded: &SourceFile<'_>, diag: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "file": loaded.path.display().to_string(),
        "line": diag.span.line,
        "column": diag.span.column,
        "offset": diag.span.offset,
        "length": diag.span.len,
        "code": diag.code.as_str(),
        "severity": match diag.severity { Severity::Error => "error", Severity::Warning => "warning" },
        "message": diag.message,
        "label": diag.label,
        "help": diag.help,
    })
}

/// A diagnostic as a GitHub Actions workflow command, one line: the runner turns it into
/// an annotation at `file:line:col` on the pull request.
pub fn to_github(loaded: &SourceFile<'_>, diag: &Diagnostic, error: bool) -> String {
    // The workflow-command escapes: `%`, CR and LF in the message; also `:` and `,` in
    // property values.
    let data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let property = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut message = diag.message.clone();
    if let Some(help) = &diag.help {
        message.push_str(&format!("\nhelp: {help}"));
    }
    format!(
        "::{} file={},line={},col={},title={}::{}\n",
        if error { "error" } else { "warning" },
        property(&loaded.path.display().to_string()),
        diag.span.line,
        diag.span.column,
        property(&format!("{} {}", diag.code.as_str(), diag.code.summary())),
        data(&message)
    )
}

/// Print every diagnostic of a runbook file to stderr; returns (errors, warnings).
pub fn report(loaded: &Loaded, deny_warnings: bool) -> (usize, usize) {
    report_in(&loaded.file(), &loaded.checked.diagnostics, deny_warnings)
}

/// Print `diagnostics` of `file` to stderr; returns (errors, warnings).
pub fn report_in(
    file: &SourceFile<'_>,
    diagnostics: &[Diagnostic],
    deny_warnings: bool,
) -> (usize, usize) {
    let color = stderr_color();
    let mut err = std::io::stderr().lock();
    let (mut errors, mut warnings) = (0, 0);
    for d in diagnostics {
        let mut d = d.clone();
        if deny_warnings && d.severity == Severity::Warning {
            d.severity = Severity::Error;
        }
        match d.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
        let _ = write!(err, "{}", render(file, &d, color));
    }
    (errors, warnings)
}

/// "2 errors, 1 warning".
pub fn counts(errors: usize, warnings: usize) -> String {
    format!(
        "{}, {}",
        crate::table::plural(errors, "error"),
        crate::table::plural(warnings, "warning")
    )
}

/// Load a runbook by name and stop with its diagnostics unless it is valid.
pub(crate) fn load_valid(cli: &Cli, name: &str) -> anyhow::Result<Result<Loaded, Exit>> {
    let path = library::resolve(name, &cli.dirs)?;
    let loaded = Loaded::read(&path)?;
    if loaded.checked.valid().is_none() {
        let (errors, warnings) = report(&loaded, false);
        error(&format!(
            "{} is not a valid runbook ({})",
            path.display(),
            counts(errors, warnings)
        ));
        return Ok(Err(Exit::Invalid));
    }
    Ok(Ok(loaded))
}

/// Run `f` on the valid runbook called `name`; otherwise its diagnostics are reported and
/// the answer is exit 2.
pub(crate) fn with_valid(
    cli: &Cli,
    name: &str,
    f: impl FnOnce(&Loaded, &runbook_core::Runbook, &runbook_core::Plan) -> anyhow::Result<Exit>,
) -> anyhow::Result<Exit> {
    let loaded = match load_valid(cli, name)? {
        Ok(l) => l,
        Err(exit) => return Ok(exit),
    };
    match loaded.checked.valid() {
        Some((rb, plan)) => f(&loaded, rb, plan),
        None => Ok(Exit::Invalid),
    }
}
