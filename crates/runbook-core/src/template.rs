//! Templates: handlebars in strict mode, with escaping chosen by the field.
//!
//! [`analyze`] lists the variables a template reads (for the validator); [`Renderer`]
//! renders with the escaping of a [`Context`]: shell-quoted for commands, percent-encoded
//! for URLs, verbatim for text meant for people.

use std::borrow::Cow;

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{Handlebars, Path};

/// Where a template's output goes, which decides how inserted values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A shell command: every inserted value is shell-quoted.
    Shell,
    /// A URL: inserted values are percent-encoded.
    Url,
    /// Text for people, headers and bodies: values are inserted as they are.
    Text,
}

/// A variable or helper used by a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef {
    /// Dotted path, split: `["params", "db_host"]` (for helpers: the helper name).
    pub path: Vec<String>,
    /// The `{{...}}` text it appears in (for locating it in the source).
    pub expr: String,
    /// Byte offset of `expr` in the template.
    pub offset: usize,
}

/// What [`analyze`] finds in a template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// Variables read (outside `each`/`with` blocks, whose context is the item).
    pub vars: Vec<VarRef>,
    /// Helpers called.
    pub helpers: Vec<VarRef>,
    /// `{{{...}}}` expressions (inserted without escaping).
    pub raw: Vec<VarRef>,
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
    /// Byte offset in the template, when known.
    pub offset: Option<usize>,
}

/// Helpers the renderer provides, handlebars' built-ins included.
pub const HELPERS: &[&str] = &[
    "raw", "join", "json", "default", "upper", "lower", "trim", "if", "unless", "each", "with",
    "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len",
];

/// Whether the text contains template syntax at all (fast path: most strings do not).
pub fn is_template(text: &str) -> bool {
    text.contains("{{")
}

/// List the variables, helpers and raw insertions of a template.
pub fn analyze(text: &str) -> Result<Analysis, SyntaxError> {
    let mut analysis = Analysis::default();
    if !is_template(text) {
        return Ok(analysis);
    }
    if let Some(fast) = analyze_simple(text) {
        return Ok(fast);
    }
    let template = Template::compile(text).map_err(|err| SyntaxError {
        message: err.reason().to_string(),
        offset: err
            .pos()
            .map(|(line, col)| crate::text::line_col_offset(text, line, col)),
    })?;
    walk(&template, text, false, &mut analysis);
    Ok(analysis)
}

/// Most templates only insert plain paths (`{{params.host}}`). Those are read without
/// compiling the template, which is most of the cost of validating a big runbook;
/// anything else (helpers, blocks, raw, escapes, whitespace control) returns `None` and
/// goes through handlebars. `tests::fast_path_matches_handlebars` keeps the two equal.
fn analyze_simple(text: &str) -> Option<Analysis> {
    if text.contains("{{{") || text.contains("\\{{") {
        return None;
    }
    let mut analysis = Analysis::default();
    let mut rest = text;
    let mut base = 0;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let inner = after[..close].trim();
        let simple = !inner.is_empty()
            && inner.split('.').all(|seg| {
                let mut chars = seg.chars();
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            && inner != "this"
            && !inner.starts_with("this.")
            && !after[..close].contains("}");
        if !simple || after[close + 2..].starts_with('}') {
            return None;
        }
        let offset = base + open;
        analysis.vars.push(VarRef {
            path: inner.split('.').map(str::to_owned).collect(),
            expr: text[offset..offset + 2 + close + 2].to_string(),
            offset,
        });
        let consumed = open + 2 + close + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    if rest.contains("}}") {
        return None;
    }
    Some(analysis)
}

fn expr_text(text: &str, offset: usize) -> String {
    let rest = &text[crate::text::floor_boundary(text, offset)..];
    match rest.find("}}") {
        Some(end) => {
            let mut end = end + 2;
            if rest[end..].starts_with('}') {
                end += 1;
            }
            rest[..end].to_string()
        }
        None => rest.to_string(),
    }
}

fn walk(template: &Template, text: &str, scoped: bool, out: &mut Analysis) {
    for (i, element) in template.elements.iter().enumerate() {
        let offset = template
            .mapping
            .get(i)
            .map_or(0, |m| crate::text::line_col_offset(text, m.0, m.1));
        let expr = expr_text(text, offset);
        let at = |path: Vec<String>| VarRef {
            path,
            expr: expr.clone(),
            offset,
        };
        match element {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => {
                if matches!(element, TemplateElement::HtmlExpression(_)) {
                    out.raw.push(at(Vec::new()));
                }
                let is_helper = !h.params.is_empty()
                    || !h.hash.is_empty()
                    || h.block
                    || matches!(h.name, Parameter::Name(_));
                if is_helper {
                    if let Some(name) = param_name(&h.name) {
                        // `{{raw x}}` writes its value unescaped just as `{{{raw x}}}` does.
                        if name == "raw" && !matches!(element, TemplateElement::HtmlExpression(_)) {
                            out.raw.push(at(Vec::new()));
                        }
                        out.helpers.push(at(vec![name]));
                    }
                } else {
                    param_vars(&h.name, scoped, &at, out);
                }
                for p in h.params.iter().chain(h.hash.values()) {
                    param_vars(p, scoped, &at, out);
                }
                let opens_scope =
                    h.block && param_name(&h.name).is_some_and(|n| n == "each" || n == "with");
                if let Some(t) = &h.template {
                    walk(t, text, scoped || opens_scope, out);
                }
                if let Some(t) = &h.inverse {
                    walk(t, text, scoped, out);
                }
            }
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                out.helpers.push(at(vec![">partial".into()]));
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                out.helpers.push(at(vec!["*decorator".into()]));
            }
            _ => {}
        }
    }
}

fn param_name(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(Path::Relative((_, raw))) => Some(raw.clone()),
        _ => None,
    }
}

fn param_vars(p: &Parameter, scoped: bool, at: &dyn Fn(Vec<String>) -> VarRef, out: &mut Analysis) {
    match p {
        Parameter::Path(Path::Relative((_, raw))) => {
            let rooted = raw.starts_with("@root");
            if scoped && !rooted {
                return;
            }
            let raw = raw
                .trim_start_matches("@root.")
                .trim_start_matches("@root/");
            if raw == "this" || raw.starts_with("this.") || raw.starts_with("../") {
                return;
            }
            let path: Vec<String> = raw.split(['.', '/']).map(str::to_owned).collect();
            out.vars.push(at(path));
        }
        Parameter::Subexpression(sub) => {
            out.helpers.push(at(vec![sub.name().to_string()]));
            if let Some(params) = sub.params() {
                for q in params {
                    param_vars(q, scoped, at, out);
                }
            }
        }
        _ => {}
    }
}

/// Quote a value for a POSIX shell.
pub fn shell_quote(value: &str) -> String {
    let cleaned: Cow<'_, str> = if value.contains('\0') {
        Cow::Owned(value.replace('\0', ""))
    } else {
        Cow::Borrowed(value)
    };
    shlex::try_quote(&cleaned).map_or_else(|_| "''".to_string(), Cow::into_owned)
}

const URL_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Renders templates against a JSON context with the escaping of each [`Context`].
pub struct Renderer {
    shell: Handlebars<'static>,
    url: Handlebars<'static>,
    text: Handlebars<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renderer")
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// A renderer with strict mode and the runbook helpers.
    pub fn new() -> Self {
        let make = |escape: fn(&str) -> String| {
            let mut hb = Handlebars::new();
            hb.set_strict_mode(true);
            hb.register_escape_fn(escape);
            register_helpers(&mut hb);
            hb
        };
        Renderer {
            shell: make(shell_quote),
            url: make(|s| percent_encoding::utf8_percent_encode(s, URL_ESCAPES).to_string()),
            text: make(|s| s.to_string()),
        }
    }

    /// Render `text` with the escaping of `context`.
    pub fn render(
        &self,
        context: Context,
        text: &str,
        data: &serde_json::Value,
    ) -> Result<String, String> {
        if !is_template(text) {
            return Ok(text.to_string());
        }
        let hb = match context {
            Context::Shell => &self.shell,
            Context::Url => {
                if let Some((base, rest)) = url_base(text) {
                    let base = self
                        .text
                        .render_template(base, data)
                        .map_err(|e| e.reason().to_string())?;
                    let rest = self
                        .url
                        .render_template(rest, data)
                        .map_err(|e| e.reason().to_string())?;
                    return Ok(base + &rest);
                }
                &self.url
            }
            Context::Text => &self.text,
        };
        hb.render_template(text, data)
            .map_err(|e| e.reason().to_string())
    }
}

/// A URL that starts with a plain `{{expression}}` takes that value as its base
/// (scheme, host, maybe a path) and inserts it as is; every later value is a component
/// and is percent-encoded. Returns the base expression and the rest.
fn url_base(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix("{{")?;
    if inner.starts_with(['{', '#', '/', '!', '>', '~']) {
        return None;
    }
    let end = inner.find("}}")? + 4;
    Some(text.split_at(end))
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn register_helpers(hb: &mut Handlebars<'static>) {
    use handlebars::{
        Context as HbContext, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
    };

    hb.register_helper(
        "raw",
        Box::new(
            |h: &Helper<'_>,
             _: &Handlebars<'_>,
             _: &HbContext,
             _: &mut RenderContext<'_, '_>,
             out: &mut dyn Output|
             -> HelperResult {
                let v = h
                    .param(0)
                    .ok_or(RenderErrorReason::ParamNotFoundForIndex("raw", 0))?;
                out.write(&value_text(v.value()))?;
                Ok(())
            },
        ),
    );
    handlebars::handlebars_helper!(join: |list: Json, sep: str| {
        match list {
            serde_json::Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(sep),
            other => value_text(other),
        }
    });
    handlebars::handlebars_helper!(json: |v: Json| v.to_string());
    handlebars::handlebars_helper!(default: |v: Json, fallback: Json| {
        if v.is_null() || v.as_str() == Some("") { value_text(fallback) } else { value_text(v) }
    });
    handlebars::handlebars_helper!(upper: |s: str| s.to_uppercase());
    handlebars::handlebars_helper!(lower: |s: str| s.to_lowercase());
    handlebars::handlebars_helper!(trim: |s: str| s.trim().to_string());
    hb.register_helper("join", Box::new(join));
    hb.register_helper("json", Box::new(json));
    hb.register_helper("default", Box::new(default));
    hb.register_helper("upper", Box::new(upper));
    hb.register_helper("lower", Box::new(lower));
    hb.register_helper("trim", Box::new(trim));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(text: &str) -> Vec<String> {
        analyze(text)
            .unwrap()
            .vars
            .iter()
            .map(|v| v.path.join("."))
            .collect()
    }

    #[test]
    fn finds_variables() {
        assert_eq!(
            paths("psql -h {{params.db_host}} -c {{steps.q.pids}}"),
            ["params.db_host", "steps.q.pids"]
        );
        assert_eq!(paths("{{join steps.q.pids \",\"}}"), ["steps.q.pids"]);
        assert_eq!(
            paths("{{#each steps.q.lines}}{{this}} {{name}}{{/each}}"),
            ["steps.q.lines"]
        );
        assert!(paths("no templates here").is_empty());
    }

    #[test]
    fn fast_path_matches_handlebars() {
        let samples = [
            "psql -h {{params.db_host}} -p {{params.db_port}} -c {{steps.q.pids}}",
            "{{params.x}}",
            "a {{ params.spaced }} b",
            "日本語 {{params.x}} テキスト {{steps.a.b}}",
            "line1\n  {{params.a}}\nline3 {{steps.s.v}}",
            "no templates",
            "{{run.id}}-{{env.HOME}}",
        ];
        for text in samples {
            let fast = analyze_simple(text).unwrap_or_else(|| panic!("{text} is simple"));
            let template = Template::compile(text).unwrap();
            let mut slow = Analysis::default();
            walk(&template, text, false, &mut slow);
            assert_eq!(fast, slow, "{text}");
        }
        for text in [
            "{{join steps.q.pids \",\"}}",
            "{{#if params.x}}y{{/if}}",
            "{{{raw params.x}}}",
            "{{this}}",
            "{{~params.x~}}",
            "{{../x}}",
            "{{params.x",
        ] {
            assert!(analyze_simple(text).is_none(), "{text} is not simple");
        }
    }

    #[test]
    fn reports_raw_and_syntax() {
        assert_eq!(analyze("{{{raw params.x}}}").unwrap().raw.len(), 1);
        // The helper writes unescaped output with two braces too.
        assert_eq!(analyze("{{raw params.x}}").unwrap().raw.len(), 1);
        let err = analyze("echo {{params.x").unwrap_err();
        assert!(err.offset.is_some());
    }

    #[test]
    fn shell_context_quotes_injection() {
        let r = Renderer::new();
        let data = json!({"params": {"x": "x'; touch /tmp/pwned; echo '"}});
        let out = r
            .render(Context::Shell, "echo {{params.x}}", &data)
            .unwrap();
        assert_eq!(
            shlex::split(&out).unwrap(),
            ["echo", "x'; touch /tmp/pwned; echo '"]
        );
        let raw = r
            .render(Context::Shell, "echo {{{raw params.x}}}", &data)
            .unwrap();
        assert_eq!(raw, "echo x'; touch /tmp/pwned; echo '");
    }

    #[test]
    fn url_and_strict() {
        let r = Renderer::new();
        let data = json!({"params": {"q": "a b/c"}});
        assert_eq!(
            r.render(Context::Url, "http://h/?q={{params.q}}", &data)
                .unwrap(),
            "http://h/?q=a%20b%2Fc"
        );
        assert!(r.render(Context::Text, "{{params.nope}}", &data).is_err());
        let data = json!({"params": {"base": "http://127.0.0.1:8080/api", "q": "a&b=c"}});
        assert_eq!(
            r.render(Context::Url, "{{params.base}}/health?q={{params.q}}", &data)
                .unwrap(),
            "http://127.0.0.1:8080/api/health?q=a%26b%3Dc"
        );
    }
}
