//! Spanned YAML tree → typed [`Runbook`], collecting every structural problem.
//!
//! Local checks live here (types, unknown and missing fields, enum values, durations,
//! regexes, JMESPath, ids, defaults); checks that need the whole runbook (references,
//! cycles, templates, conditions) live in `validate`, which builds on this module.

use std::time::Duration;

use indexmap::IndexMap;

use crate::diag::{Code, Diagnostic, Span, did_you_mean};
use crate::model::*;
use crate::yaml::{Key, Node, Value};

/// Steps converted while the file was read.
#[derive(Default)]
pub(crate) struct Streamed {
    /// The steps that converted.
    pub steps: Vec<Step>,
    /// How many items of `steps` were read, including those that did not convert.
    pub items: usize,
}

/// Converts one document; `diags` receives every problem found.
pub(crate) struct Converter<'a> {
    pub source: &'a str,
    pub diags: Vec<Diagnostic>,
}

/// A mapping being read field by field; unread fields are reported when it is finished.
struct Obj<'n> {
    span: Span,
    entries: &'n [(Key, Node)],
    used: Vec<bool>,
}

impl<'n> Obj<'n> {
    fn get(&mut self, name: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _)| k.name == name)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.name == name)
    }

    fn key_span(&self, name: &str) -> Option<Span> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, _)| k.span)
    }
}

const RUNBOOK_FIELDS: &[&str] = &[
    "apiVersion",
    "name",
    "title",
    "description",
    "severity",
    "tags",
    "lock",
    "env",
    "aws",
    "params",
    "escalation",
    "steps",
];
const PARAM_FIELDS: &[&str] = &[
    "type",
    "description",
    "default",
    "required",
    "pattern",
    "values",
    "from",
];
const STEP_FIELDS: &[&str] = &[
    "id",
    "kind",
    "title",
    "description",
    "needs",
    "shell",
    "ssm_command",
    "ssm_automation",
    "http",
    "wait",
    "manual",
    "capture",
    "expect",
    "on_fail",
    "retry",
    "timeout",
    "confirm",
    "concurrent",
    "cases",
    "default",
];

/// Whether `s` is a valid step, parameter or capture id.
pub fn is_snake_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// Whether `s` is a valid runbook name.
pub fn is_kebab_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|part| {
            !part.is_empty() && part.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9'))
        })
}

/// Parse `30s`, `5m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{trimmed}` has no unit"));
    }
    humantime::parse_duration(trimmed).map_err(|e| e.to_string())
}

impl<'a> Converter<'a> {
    pub fn new(source: &'a str) -> Self {
        Converter {
            source,
            diags: Vec::new(),
        }
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.push(
            Diagnostic::new(
                Code::WrongType,
                node.span,
                format!("{what} must be {expected}, found {}", node.value.describe()),
            )
            .label(format!("expected {expected}")),
        );
    }

    fn obj<'n>(&mut self, node: &'n Node, what: &str) -> Option<Obj<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Obj {
                span: node.span,
                entries,
                used: vec![false; entries.len()],
            }),
            _ => {
                self.wrong_type(node, what, "a mapping");
                None
            }
        }
    }

    fn finish(&mut self, obj: Obj<'_>, known: &[&str], what: &str) {
        for ((key, _), used) in obj.entries.iter().zip(&obj.used) {
            if *used {
                continue;
            }
            let mut d = Diagnostic::new(
                Code::UnknownField,
                key.span,
                format!("unknown field `{}` in {what}", key.name),
            )
            .label("not a field of the format");
            d = match did_you_mean(&key.name, known.iter().copied()) {
                Some(hint) => d.help(hint),
                None => d.help(format!("known fields: {}", known.join(", "))),
            };
            self.push(d);
        }
    }

    fn missing(&mut self, obj: &Obj<'_>, field: &str, what: &str) {
        let code = if field == "title" && what.starts_with("step") {
            Code::MissingTitle
        } else {
            Code::MissingField
        };
        self.push(
            Diagnostic::new(code, obj.span, format!("{what} has no `{field}`"))
                .label(format!("`{field}` is required here")),
        );
    }

    /// A scalar as text; numbers and booleans are taken as written.
    fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Str(s) => Some(Sp::new(s.clone(), node.span)),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                let raw = self
                    .source
                    .get(node.span.offset..node.span.offset + node.span.len)
                    .map(str::to_owned)
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| node.to_json().to_string());
                Some(Sp::new(raw, node.span))
            }
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    fn req_string(&mut self, obj: &mut Obj<'_>, field: &str, what: &str) -> Option<Sp<String>> {
        match obj.get(field) {
            Some(node) => self.string(node, &format!("`{field}` of {what}")),
            None => {
                self.missing(obj, field, what);
                None
            }
        }
    }

    fn opt_string(&mut self, obj: &mut Obj<'_>, field: &str, what: &str) -> Option<Sp<String>> {
        let node = obj.get(field)?;
        self.string(node, &format!("`{field}` of {what}"))
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, what, "true or false");
                None
            }
        }
    }

    fn u32(&mut self, node: &Node, what: &str) -> Option<u32> {
        match node.value {
            Value::Int(i) if i >= 0 => u32::try_from(i).ok().or_else(|| {
                self.push(Diagnostic::new(
                    Code::InvalidValue,
                    node.span,
                    format!("{what} is too large"),
                ));
                None
            }),
            Value::Int(_) => {
                self.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        node.span,
                        format!("{what} must not be negative"),
                    )
                    .label("negative"),
                );
                None
            }
            _ => {
                self.wrong_type(node, what, "a whole number");
                None
            }
        }
    }

    fn f64(&mut self, node: &Node, what: &str) -> Option<f64> {
        match node.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => {
                self.wrong_type(node, what, "a number");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Sp<DurationSpec>> {
        let text = self.string(node, what)?;
        match parse_duration(&text) {
            Ok(value) => Some(Sp::new(
                DurationSpec {
                    text: text.value,
                    value,
                },
                text.span,
            )),
            Err(err) => {
                self.push(
                    Diagnostic::new(
                        Code::InvalidDuration,
                        text.span,
                        format!("{what} is not a valid duration: {err}"),
                    )
                    .label("invalid duration")
                    .help("write a number with a unit: `500ms`, `30s`, `5m`, `1h30m`"),
                );
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<Sp<T>> {
        let text = self.string(node, what)?;
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == text.as_str()) {
            return Some(Sp::new(*value, text.span));
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let mut d = Diagnostic::new(
            Code::InvalidValue,
            text.span,
            format!("{what} cannot be `{}`", text.value),
        )
        .label(format!("expected one of: {}", names.join(", ")));
        if let Some(hint) = did_you_mean(&text, names.iter().copied()) {
            d = d.help(hint);
        }
        self.push(d);
        None
    }

    /// A single string or a list of strings.
    fn string_list(&mut self, node: &Node, what: &str) -> Vec<Sp<String>> {
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(|n| self.string(n, what)).collect(),
            _ => self.string(node, what).into_iter().collect(),
        }
    }

    fn string_map(&mut self, node: &Node, what: &str) -> IndexMap<String, Sp<String>> {
        let mut out = IndexMap::new();
        if let Some(obj) = self.obj(node, what) {
            for (key, value) in obj.entries {
                if let Some(s) = self.string(value, &format!("`{}` in {what}", key.name)) {
                    out.insert(key.name.clone(), s);
                }
            }
        }
        out
    }

    fn list_map(&mut self, node: &Node, what: &str) -> IndexMap<String, Vec<Sp<String>>> {
        let mut out = IndexMap::new();
        if let Some(obj) = self.obj(node, what) {
            for (key, value) in obj.entries {
                let list = self.string_list(value, &format!("`{}` in {what}", key.name));
                out.insert(key.name.clone(), list);
            }
        }
        out
    }

    fn seq<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.value {
            Value::Seq(items) => items,
            Value::Null => &[],
            _ => {
                self.wrong_type(node, what, "a list");
                &[]
            }
        }
    }

    fn check_regex(&mut self, pattern: &Sp<String>, what: &str) -> Option<regex::Regex> {
        match regex::Regex::new(pattern) {
            Ok(re) => Some(re),
            Err(err) => {
                let detail = err.to_string();
                let last = detail.lines().last().unwrap_or("").trim().to_string();
                self.push(
                    Diagnostic::new(
                        Code::InvalidRegex,
                        pattern.span,
                        format!(
                            "{what} is not a valid regular expression: {}",
                            last.trim_start_matches("error: ")
                        ),
                    )
                    .label("invalid regex"),
                );
                None
            }
        }
    }

    /// The typed runbook, with the steps already converted while the file was read (see
    /// [`crate::yaml::parse_streaming_steps`]).
    pub fn runbook(&mut self, root: &Node, streamed: Streamed) -> Option<Runbook> {
        let what = "the runbook";
        let mut obj = self.obj(root, what)?;
        let api_version = self.req_string(&mut obj, "apiVersion", what);
        if let Some(v) = &api_version {
            if v.as_str() != API_VERSION {
                self.push(
                    Diagnostic::new(
                        Code::UnsupportedVersion,
                        v.span,
                        format!("unsupported apiVersion `{}`", v.value),
                    )
                    .label("not supported")
                    .help(format!("this version of runbook reads `{API_VERSION}`")),
                );
            }
        }
        let name = self.req_string(&mut obj, "name", what);
        if let Some(n) = &name {
            if !is_kebab_name(n) {
                self.push(
                    Diagnostic::new(Code::BadId, n.span, format!("runbook name `{}` is not kebab-case", n.value))
                        .label("invalid name")
                        .help("use lowercase letters, digits and single dashes, e.g. `db-connection-error`"),
                );
            }
        }
        let title = self.req_string(&mut obj, "title", what);
        let description = self
            .opt_string(&mut obj, "description", what)
            .map(|s| s.value);
        let severity = obj
            .get("severity")
            .and_then(|n| self.choice(n, "`severity`", &Severity::ALL))
            .map(|s| s.value);
        let tags = obj
            .get("tags")
            .map(|n| {
                self.string_list(n, "a tag")
                    .into_iter()
                    .map(|s| s.value)
                    .collect()
            })
            .unwrap_or_default();
        let lock = self.opt_string(&mut obj, "lock", what);
        let env = obj
            .get("env")
            .map(|n| self.string_list(n, "an `env` entry"))
            .unwrap_or_default();
        let aws = obj.get("aws").and_then(|n| self.aws(n));
        let params = obj
            .get("params")
            .map(|n| self.params(n))
            .unwrap_or_default();
        let escalation = obj
            .get("escalation")
            .map(|n| {
                let items = self.seq(n, "`escalation`");
                items.iter().filter_map(|i| self.escalation(i)).collect()
            })
            .unwrap_or_default();
        let steps = match obj.get("steps") {
            Some(n) => {
                let items = self.seq(n, "`steps`");
                let first = streamed.items;
                if items.is_empty() && first == 0 {
                    self.push(
                        Diagnostic::new(Code::NoSteps, n.span, "the runbook has no steps")
                            .label("empty")
                            .help("add at least one step"),
                    );
                }
                let mut steps = streamed.steps;
                for (i, s) in items.iter().enumerate() {
                    steps.extend(self.step(first + i, s));
                }
                steps
            }
            None => {
                self.missing(&obj, "steps", what);
                Vec::new()
            }
        };
        self.finish(obj, RUNBOOK_FIELDS, what);
        let placeholder =
            |s: Option<Sp<String>>| s.unwrap_or_else(|| Sp::new(String::new(), root.span));
        Some(Runbook {
            api_version: placeholder(api_version),
            name: placeholder(name),
            title: placeholder(title),
            description,
            severity,
            tags,
            lock,
            env,
            aws,
            params,
            escalation,
            steps,
        })
    }

    fn aws(&mut self, node: &Node) -> Option<AwsSettings> {
        let what = "`aws`";
        let mut obj = self.obj(node, what)?;
        let settings = AwsSettings {
            region: self.opt_string(&mut obj, "region", what).map(|s| s.value),
            profile: self.opt_string(&mut obj, "profile", what).map(|s| s.value),
        };
        self.finish(obj, &["region", "profile"], what);
        Some(settings)
    }

    fn params(&mut self, node: &Node) -> IndexMap<String, Param> {
        let mut out = IndexMap::new();
        let Some(obj) = self.obj(node, "`params`") else {
            return out;
        };
        for (key, value) in obj.entries {
            if !is_snake_id(&key.name) {
                self.push(
                    Diagnostic::new(
                        Code::BadId,
                        key.span,
                        format!("parameter name `{}` is not snake_case", key.name),
                    )
                    .label("invalid name")
                    .help("use lowercase letters, digits and underscores, starting with a letter"),
                );
            }
            if let Some(p) = self.param(key, value) {
                out.insert(key.name.clone(), p);
            }
        }
        out
    }

    fn param(&mut self, key: &Key, node: &Node) -> Option<Param> {
        let what = format!("parameter `{}`", key.name);
        let mut obj = self.obj(node, &what)?;
        let ty = match obj.get("type") {
            Some(n) => self.choice(n, "parameter `type`", &ParamType::ALL),
            None => {
                self.missing(&obj, "type", &what);
                None
            }
        };
        let description = self
            .opt_string(&mut obj, "description", &what)
            .map(|s| s.value);
        let required = obj.get("required").and_then(|n| self.bool(n, "`required`"));
        let pattern = self.opt_string(&mut obj, "pattern", &what);
        let regex = pattern
            .as_ref()
            .and_then(|p| self.check_regex(p, "`pattern`"));
        let values: Vec<Sp<String>> = obj
            .get("values")
            .map(|n| self.string_list(n, "an enum value"))
            .unwrap_or_default();
        let from = self.opt_string(&mut obj, "from", &what);
        if let Some(f) = &from {
            let ok = f.strip_prefix("env:").is_some_and(|n| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }) || f
                .strip_prefix("ssm:")
                .is_some_and(|p| p.starts_with('/') && p.len() > 1);
            if !ok {
                self.push(
                    Diagnostic::new(Code::InvalidValue, f.span, format!("`from` of {what} cannot be `{}`", f.value))
                        .label("unknown source")
                        .help("write `env:NAME` for an environment variable or `ssm:/path` for SSM Parameter Store"),
                );
            }
        }
        let default_node = obj.get("default");
        let ty = ty?;
        if ty.value == ParamType::Enum && values.is_empty() {
            self.push(
                Diagnostic::new(
                    Code::MissingField,
                    obj.span,
                    format!("{what} is an enum without `values`"),
                )
                .label("`values` is required for enums"),
            );
        }
        if ty.value != ParamType::Enum {
            if let Some(span) = obj.key_span("values") {
                self.push(
                    Diagnostic::new(
                        Code::FieldNotAllowed,
                        span,
                        format!(
                            "`values` only applies to enum parameters, {what} is a {}",
                            ty.as_str()
                        ),
                    )
                    .label("not used"),
                );
            }
        }
        let default = default_node
            .and_then(|n| self.param_default(&what, ty.value, n, regex.as_ref(), &values));
        self.finish(obj, PARAM_FIELDS, &what);
        Some(Param {
            name_span: key.span,
            ty,
            description,
            default,
            required,
            pattern,
            values,
            from,
        })
    }

    fn param_default(
        &mut self,
        what: &str,
        ty: ParamType,
        node: &Node,
        regex: Option<&regex::Regex>,
        values: &[Sp<String>],
    ) -> Option<Sp<serde_json::Value>> {
        let bad = |msg: String| {
            Diagnostic::new(Code::BadDefault, node.span, msg).label("invalid default")
        };
        let value = node.to_json();
        match (ty, &node.value) {
            (ParamType::Secret, _) => {
                self.push(
                    Diagnostic::new(Code::SecretDefault, node.span, format!("{what} is a secret and cannot have a default"))
                        .label("secret default")
                        .help("a default would put the secret in the file; use `from: env:NAME` or `from: ssm:/path`"),
                );
                return None;
            }
            (ParamType::Integer, Value::Int(_))
            | (ParamType::Number, Value::Int(_) | Value::Float(_))
            | (ParamType::Boolean, Value::Bool(_)) => {}
            (ParamType::String | ParamType::Enum, Value::Str(s)) => {
                if let Some(re) = regex {
                    if !full_match(re, s) {
                        self.push(bad(format!(
                            "default `{s}` of {what} does not match its pattern `{}`",
                            re.as_str()
                        )));
                        return None;
                    }
                }
                if ty == ParamType::Enum && !values.iter().any(|v| v.as_str() == s) {
                    let names: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                    self.push(
                        bad(format!("default `{s}` of {what} is not one of its values"))
                            .help(format!("values: {}", names.join(", "))),
                    );
                    return None;
                }
            }
            _ => {
                self.push(bad(format!(
                    "default of {what} must be {}, found {}",
                    type_noun(ty),
                    node.value.describe()
                )));
                return None;
            }
        }
        Some(Sp::new(value, node.span))
    }

    fn escalation(&mut self, node: &Node) -> Option<Escalation> {
        let what = "an escalation entry";
        let mut obj = self.obj(node, what)?;
        let after = match obj.get("after") {
            Some(n) => self.duration(n, "`after`"),
            None => {
                self.missing(&obj, "after", what);
                None
            }
        };
        let to = self.req_string(&mut obj, "to", what);
        self.finish(obj, &["after", "to"], what);
        Some(Escalation {
            after: after?,
            to: to?.value,
        })
    }

    /// One item of `steps`, the `index`th.
    pub fn step(&mut self, index: usize, node: &Node) -> Option<Step> {
        let mut obj = self.obj(node, "a step")?;
        let id = obj.get("id").and_then(|n| self.string(n, "step `id`"));
        let what = match &id {
            Some(id) => format!("step `{}`", id.value),
            None => format!("step {}", index + 1),
        };
        if id.is_none() && !obj.has("id") {
            self.missing(&obj, "id", &what);
        }
        if let Some(id) = &id {
            if !is_snake_id(id) {
                self.push(
                    Diagnostic::new(Code::BadId, id.span, format!("step id `{}` is not snake_case", id.value))
                        .label("invalid id")
                        .help("ids are used in templates and conditions (`steps.<id>`): use lowercase letters, digits and underscores, starting with a letter"),
                );
            }
        }
        let kind = match obj.get("kind") {
            Some(n) => self.choice(n, "step `kind`", &StepKind::ALL),
            None => {
                self.missing(&obj, "kind", &what);
                None
            }
        };
        let title = self.req_string(&mut obj, "title", &what);
        let description = self
            .opt_string(&mut obj, "description", &what)
            .map(|s| s.value);
        let needs = obj.get("needs").map(|n| match &n.value {
            Value::Seq(_) => self.string_list(n, "a `needs` entry"),
            _ => {
                self.wrong_type(n, "`needs`", "a list of step ids");
                Vec::new()
            }
        });

        let obj_has_cases = obj.has("cases");
        let mut actions = Vec::new();
        for key in Action::KEYS {
            if let Some(n) = obj.get(key) {
                actions.push((
                    key,
                    obj.key_span(key).unwrap_or(n.span),
                    self.action(key, n, &what),
                ));
            }
        }
        let kind_value = kind.as_ref().map(|k| k.value);
        let action = match (kind_value, actions.len()) {
            // The kind is invalid (already reported): keep the action for later checks.
            (None, _) => actions.pop().and_then(|(_, _, a)| a),
            (Some(StepKind::Branch), 0) => None,
            (Some(StepKind::Branch), _) => {
                self.push(
                    Diagnostic::new(
                        Code::ActionCount,
                        actions[0].1,
                        format!("{what} is a branch and cannot have an action"),
                    )
                    .label("action on a branch")
                    .help("a branch only decides; put the action in a check step before it"),
                );
                None
            }
            (Some(_), 1) => actions.pop().and_then(|(_, _, a)| a),
            (Some(k), 0) => {
                self.push(
                    Diagnostic::new(Code::ActionCount, obj.span, format!("{what} has no action"))
                        .label(format!(
                            "{} {} step needs one action",
                            if k == StepKind::Act { "an" } else { "a" },
                            k.as_str()
                        ))
                        .help(format!("add one of: {}", Action::KEYS.join(", "))),
                );
                None
            }
            (Some(_), _) => {
                let names: Vec<&str> = actions.iter().map(|(k, _, _)| *k).collect();
                let mut d = Diagnostic::new(
                    Code::ActionCount,
                    actions[1].1,
                    format!(
                        "{what} has {} actions ({}); a step has exactly one",
                        actions.len(),
                        names.join(", ")
                    ),
                )
                .label("second action")
                .help("split it into one step per action");
                d = d.related(actions[0].1, "first action");
                self.push(d);
                None
            }
        };

        let capture = obj
            .get("capture")
            .map(|n| self.captures(n, &what))
            .unwrap_or_default();
        let expect = self.opt_string(&mut obj, "expect", &what);
        let on_fail = obj.get("on_fail").and_then(|n| self.on_fail(n));
        let retry = obj.get("retry").and_then(|n| self.retry(n));
        let timeout = obj
            .get("timeout")
            .and_then(|n| self.duration(n, "`timeout`"));
        let confirm = self.opt_string(&mut obj, "confirm", &what);
        let concurrent = obj
            .get("concurrent")
            .and_then(|n| self.bool(n, "`concurrent`"))
            .unwrap_or(false);
        let cases: Vec<Case> = match obj.get("cases") {
            Some(n) => {
                let items = self.seq(n, "`cases`");
                items.iter().filter_map(|c| self.case(c)).collect()
            }
            None => Vec::new(),
        };
        let default = self.opt_string(&mut obj, "default", &what);

        if let Some(kind) = &kind {
            self.kind_rules(&obj, kind, &what, &cases);
        }
        self.finish(obj, STEP_FIELDS, &what);
        // With an invalid kind, keep the step (as a branch if it has cases, else a check) so
        // that ids, references and templates are still checked.
        let kind = kind.unwrap_or_else(|| {
            let inferred = if obj_has_cases {
                StepKind::Branch
            } else {
                StepKind::Check
            };
            Sp::new(inferred, node.span)
        });
        Some(Step {
            id: id.unwrap_or_else(|| Sp::new(format!("#{}", index + 1), node.span)),
            kind,
            title: title.unwrap_or_else(|| Sp::new(String::new(), node.span)),
            description,
            needs,
            action,
            capture,
            expect,
            on_fail,
            retry,
            timeout,
            confirm,
            concurrent,
            cases,
            default,
        })
    }

    /// Fields that only make sense for some kinds.
    fn kind_rules(&mut self, obj: &Obj<'_>, kind: &Sp<StepKind>, what: &str, cases: &[Case]) {
        let k = kind.value;
        let not_allowed: &[(&str, &str)] = match k {
            StepKind::Branch => &[
                (
                    "expect",
                    "a branch decides with `cases`, it has nothing to expect",
                ),
                (
                    "capture",
                    "a branch runs no action, so there is nothing to capture",
                ),
                ("retry", "a branch runs no action"),
                ("confirm", "only act steps are confirmed"),
                ("concurrent", "only act steps are serialised"),
                (
                    "on_fail",
                    "a branch cannot fail; route with `cases` and `default`",
                ),
            ],
            StepKind::Act => &[
                ("cases", "only branch steps have cases"),
                ("default", "only branch steps have a default"),
            ],
            StepKind::Check | StepKind::Verify => &[
                ("cases", "only branch steps have cases"),
                ("default", "only branch steps have a default"),
                ("confirm", "only act steps are confirmed"),
                ("concurrent", "only act steps are serialised"),
            ],
        };
        for (field, why) in not_allowed {
            if let Some(span) = obj.key_span(field) {
                self.push(
                    Diagnostic::new(
                        Code::FieldNotAllowed,
                        span,
                        format!("`{field}` does not apply to {what}, a {} step", k.as_str()),
                    )
                    .label("not allowed here")
                    .help(*why)
                    .related(kind.span, "kind set here"),
                );
            }
        }
        if k == StepKind::Branch && cases.is_empty() && !obj.has("cases") {
            self.push(
                Diagnostic::new(
                    Code::BranchWithoutCases,
                    obj.span,
                    format!("{what} is a branch without cases"),
                )
                .label("no `cases`")
                .help("add `cases: [{when: <CEL>, goto: <step>}]`, or make it a check step"),
            );
        }
    }

    fn action(&mut self, key: &str, node: &Node, step: &str) -> Option<Action> {
        let what = format!("`{key}` of {step}");
        Some(match key {
            "shell" => Action::Shell(self.shell(node, &what)?),
            "http" => Action::Http(self.http(node, &what)?),
            "wait" => Action::Wait(self.duration(node, &what)?),
            "manual" => Action::Manual(self.string(node, &what)?),
            "ssm_command" => Action::SsmCommand(self.ssm_command(node, &what)?),
            "ssm_automation" => Action::SsmAutomation(self.ssm_automation(node, &what)?),
            _ => return None,
        })
    }

    fn shell(&mut self, node: &Node, what: &str) -> Option<ShellAction> {
        if !matches!(node.value, Value::Map(_)) {
            let run = self.string(node, what)?;
            return Some(ShellAction {
                run,
                env: IndexMap::new(),
                cwd: None,
                interpreter: None,
            });
        }
        let mut obj = self.obj(node, what)?;
        let run = self.req_string(&mut obj, "run", what);
        let env = obj
            .get("env")
            .map(|n| self.string_map(n, "`env`"))
            .unwrap_or_default();
        let cwd = self.opt_string(&mut obj, "cwd", what);
        let interpreter = self
            .opt_string(&mut obj, "interpreter", what)
            .map(|s| s.value);
        self.finish(obj, &["run", "env", "cwd", "interpreter"], what);
        Some(ShellAction {
            run: run?,
            env,
            cwd,
            interpreter,
        })
    }

    fn http(&mut self, node: &Node, what: &str) -> Option<HttpAction> {
        let mut obj = self.obj(node, what)?;
        let method = obj
            .get("method")
            .and_then(|n| self.choice(n, "`method`", &HttpMethod::ALL))
            .map(|m| m.value)
            .unwrap_or_default();
        let url = self.req_string(&mut obj, "url", what);
        let headers = obj
            .get("headers")
            .map(|n| self.string_map(n, "`headers`"))
            .unwrap_or_default();
        let body = self.opt_string(&mut obj, "body", what);
        let status = match obj.get("status") {
            None => Vec::new(),
            Some(n) => {
                let items: Vec<&Node> = match &n.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![n],
                };
                items
                    .into_iter()
                    .filter_map(|i| match i.value {
                        Value::Int(code) if (100..=599).contains(&code) => Some(code as u16),
                        _ => {
                            self.push(
                                Diagnostic::new(
                                    Code::InvalidValue,
                                    i.span,
                                    "`status` must be HTTP status codes between 100 and 599",
                                )
                                .label("not a status code"),
                            );
                            None
                        }
                    })
                    .collect()
            }
        };
        self.finish(obj, &["method", "url", "headers", "body", "status"], what);
        Some(HttpAction {
            method,
            url: url?,
            headers,
            body,
            status,
        })
    }

    fn ssm_command(&mut self, node: &Node, what: &str) -> Option<SsmCommandAction> {
        let mut obj = self.obj(node, what)?;
        let document = self.opt_string(&mut obj, "document", what).map(|s| s.value);
        let commands = obj
            .get("commands")
            .map(|n| self.string_list(n, "a command"))
            .unwrap_or_default();
        let parameters = obj
            .get("parameters")
            .map(|n| self.list_map(n, "`parameters`"))
            .unwrap_or_default();
        let instance_ids = obj
            .get("instance_ids")
            .map(|n| self.string_list(n, "an instance id"))
            .unwrap_or_default();
        let tags = obj
            .get("tags")
            .map(|n| self.list_map(n, "`tags`"))
            .unwrap_or_default();
        let max_concurrency = self
            .opt_string(&mut obj, "max_concurrency", what)
            .map(|s| s.value);
        let max_errors = self
            .opt_string(&mut obj, "max_errors", what)
            .map(|s| s.value);
        let output_s3_bucket = self
            .opt_string(&mut obj, "output_s3_bucket", what)
            .map(|s| s.value);
        let output_s3_prefix = self
            .opt_string(&mut obj, "output_s3_prefix", what)
            .map(|s| s.value);
        let cloudwatch_log_group = self
            .opt_string(&mut obj, "cloudwatch_log_group", what)
            .map(|s| s.value);
        let comment = self.opt_string(&mut obj, "comment", what);
        if instance_ids.is_empty() && tags.is_empty() {
            self.push(
                Diagnostic::new(Code::MissingField, obj.span, format!("{what} has no targets"))
                    .label("no `instance_ids` or `tags`")
                    .help("name the instances with `instance_ids: [...]` or select them with `tags: {Key: [values]}`"),
            );
        }
        let default_doc = document
            .as_deref()
            .is_none_or(|d| d == "AWS-RunShellScript" || d == "AWS-RunPowerShellScript");
        if commands.is_empty() && default_doc && !parameters.contains_key("commands") {
            self.missing(&obj, "commands", what);
        }
        self.finish(
            obj,
            &[
                "document",
                "commands",
                "parameters",
                "instance_ids",
                "tags",
                "max_concurrency",
                "max_errors",
                "output_s3_bucket",
                "output_s3_prefix",
                "cloudwatch_log_group",
                "comment",
            ],
            what,
        );
        Some(SsmCommandAction {
            document,
            commands,
            parameters,
            instance_ids,
            tags,
            max_concurrency,
            max_errors,
            output_s3_bucket,
            output_s3_prefix,
            cloudwatch_log_group,
            comment,
        })
    }

    fn ssm_automation(&mut self, node: &Node, what: &str) -> Option<SsmAutomationAction> {
        let mut obj = self.obj(node, what)?;
        let document = self.req_string(&mut obj, "document", what);
        let document_version = self
            .opt_string(&mut obj, "document_version", what)
            .map(|s| s.value);
        let parameters = obj
            .get("parameters")
            .map(|n| self.list_map(n, "`parameters`"))
            .unwrap_or_default();
        self.finish(obj, &["document", "document_version", "parameters"], what);
        Some(SsmAutomationAction {
            document: document?,
            document_version,
            parameters,
        })
    }

    fn captures(&mut self, node: &Node, step: &str) -> IndexMap<String, Capture> {
        let mut out = IndexMap::new();
        let Some(obj) = self.obj(node, "`capture`") else {
            return out;
        };
        for (key, value) in obj.entries {
            if !is_snake_id(&key.name) {
                self.push(
                    Diagnostic::new(Code::BadId, key.span, format!("capture name `{}` is not snake_case", key.name))
                        .label("invalid name")
                        .help("captures are used as `steps.<id>.<name>`: use lowercase letters, digits and underscores"),
                );
            }
            if let Some(c) = self.capture(key, value, step) {
                out.insert(key.name.clone(), c);
            }
        }
        out
    }

    fn capture(&mut self, key: &Key, node: &Node, step: &str) -> Option<Capture> {
        let what = format!("capture `{}` of {step}", key.name);
        let mut obj = self.obj(node, &what)?;
        let secret = obj
            .get("secret")
            .and_then(|n| self.bool(n, "`secret`"))
            .unwrap_or(false);
        let mut sources = Vec::new();
        if let Some(n) = obj.get("stdout") {
            sources.push(
                self.choice(n, "`stdout` capture type", &CaptureType::ALL)
                    .map(|t| CaptureSource::Stdout(t.value)),
            );
        }
        if let Some(n) = obj.get("json") {
            sources.push(self.string(n, "`json`").and_then(|expr| {
                if let Err(err) = jmespath::compile(&expr) {
                    let reason = match &err.reason {
                        jmespath::ErrorReason::Parse(msg) => msg.clone(),
                        other => other.to_string(),
                    };
                    let offset = crate::text::floor_boundary(&expr, err.offset);
                    let at = expr.locate(self.source, offset, crate::text::char_at(&expr, offset));
                    self.push(
                        Diagnostic::new(Code::JmespathSyntax, at, format!("`json` of {what} is not valid JMESPath: {reason}"))
                            .label("invalid JMESPath")
                            .help("JMESPath is the language of `aws --query`, e.g. `DBInstances[0].DBInstanceStatus`"),
                    );
                    None
                } else {
                    Some(CaptureSource::Json(expr))
                }
            }));
        }
        if let Some(n) = obj.get("regex") {
            sources.push(self.string(n, "`regex`").and_then(|pattern| {
                let re = self.check_regex(&pattern, "`regex`")?;
                if re.capture_names().flatten().next().is_none() {
                    self.push(
                        Diagnostic::new(Code::InvalidRegex, pattern.span, format!("`regex` of {what} has no named group"))
                            .label("no `(?P<name>...)` group")
                            .help("the capture's value is the first named group, e.g. `(?P<value>[0-9]+)`"),
                    );
                    return None;
                }
                Some(CaptureSource::Regex(pattern))
            }));
        }
        let count = sources.len();
        if count != 1 {
            self.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    obj.span,
                    format!(
                        "{what} must have exactly one of `stdout`, `json` or `regex`, found {count}"
                    ),
                )
                .label("one source per capture"),
            );
        }
        let convert = obj.get("as").and_then(|n| {
            let t = self.choice(n, "capture conversion `as`", &CaptureType::ALL)?;
            if obj.get("stdout").is_some() {
                self.push(
                    Diagnostic::new(
                        Code::FieldNotAllowed,
                        t.span,
                        format!("`as` of {what} does not apply to a `stdout` capture"),
                    )
                    .label("not used")
                    .help("a `stdout` capture names its type itself: `stdout: int`"),
                );
                return None;
            }
            Some(t.value)
        });
        self.finish(obj, &["stdout", "json", "regex", "as", "secret"], &what);
        let source = sources.pop().flatten().filter(|_| count == 1)?;
        Some(Capture {
            name_span: key.span,
            source,
            convert,
            secret,
        })
    }

    fn on_fail(&mut self, node: &Node) -> Option<Sp<OnFail>> {
        let options = [
            ("abort", OnFailSimple::Abort),
            ("continue", OnFailSimple::Continue),
            ("escalate", OnFailSimple::Escalate),
        ];
        if !matches!(node.value, Value::Map(_)) {
            let simple = self.choice(node, "`on_fail`", &options)?;
            return Some(Sp::new(OnFail::Simple(simple.value), node.span));
        }
        let what = "`on_fail`";
        let mut obj = self.obj(node, what)?;
        let result = if obj.has("goto") {
            self.req_string(&mut obj, "goto", what)
                .map(|goto| OnFail::Goto { goto })
        } else if obj.has("retry_from") {
            let target = self.req_string(&mut obj, "retry_from", what);
            let attempts = match obj.get("attempts") {
                Some(n) => self.u32(n, "`attempts`"),
                None => {
                    self.missing(&obj, "attempts", "`on_fail: {retry_from}`");
                    None
                }
            };
            match (target, attempts) {
                (Some(retry_from), Some(attempts)) => Some(OnFail::RetryFrom {
                    retry_from,
                    attempts,
                }),
                _ => None,
            }
        } else {
            self.push(
                Diagnostic::new(Code::InvalidValue, node.span, "`on_fail` mapping must have `goto` or `retry_from`")
                    .label("neither `goto` nor `retry_from`")
                    .help("write `abort`, `continue`, `escalate`, `{goto: STEP}` or `{retry_from: STEP, attempts: N}`"),
            );
            None
        };
        self.finish(obj, &["goto", "retry_from", "attempts"], what);
        result.map(|r| Sp::new(r, node.span))
    }

    fn retry(&mut self, node: &Node) -> Option<Retry> {
        let what = "`retry`";
        let mut obj = self.obj(node, what)?;
        let attempts = match obj.get("attempts") {
            Some(n) => self.u32(n, "`attempts`"),
            None => {
                self.missing(&obj, "attempts", what);
                None
            }
        };
        let interval = obj
            .get("interval")
            .and_then(|n| self.duration(n, "`interval`"));
        let backoff = obj.get("backoff").and_then(|n| self.f64(n, "`backoff`"));
        if let (Some(b), Some(n)) = (backoff, obj.get("backoff")) {
            if !(1.0..=10.0).contains(&b) {
                self.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        n.span,
                        "`backoff` must be between 1.0 and 10.0",
                    )
                    .label("out of range")
                    .help("1.0 keeps the interval constant, 2.0 doubles it after each attempt"),
                );
            }
        }
        if attempts == Some(0) {
            if let Some(n) = obj.get("attempts") {
                self.push(
                    Diagnostic::new(Code::InvalidValue, n.span, "`attempts` must be at least 1")
                        .label("zero attempts"),
                );
            }
        }
        self.finish(obj, &["attempts", "interval", "backoff"], what);
        Some(Retry {
            attempts: attempts?,
            interval,
            backoff,
        })
    }

    fn case(&mut self, node: &Node) -> Option<Case> {
        let what = "a branch case";
        let mut obj = self.obj(node, what)?;
        let when = self.req_string(&mut obj, "when", what);
        let goto = self.req_string(&mut obj, "goto", what);
        self.finish(obj, &["when", "goto"], what);
        Some(Case {
            when: when?,
            goto: goto?,
        })
    }
}

fn full_match(re: &regex::Regex, s: &str) -> bool {
    re.find(s)
        .is_some_and(|m| m.start() == 0 && m.end() == s.len())
}

fn type_noun(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String | ParamType::Secret => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "true or false",
        ParamType::Enum => "one of its values",
    }
}

/// Check a parameter value given as text (`--param k=v`) against its declaration and
/// convert it to JSON. The error says what was expected.
pub fn coerce_param(param: &Param, text: &str) -> Result<serde_json::Value, String> {
    let value = match param.ty.value {
        ParamType::String | ParamType::Secret => serde_json::Value::String(text.to_string()),
        ParamType::Integer => text
            .trim()
            .parse::<i64>()
            .map(Into::into)
            .map_err(|_| format!("expected an integer, got `{text}`"))?,
        ParamType::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("expected a number, got `{text}`"))?,
        ParamType::Boolean => match text.trim() {
            "true" | "yes" | "1" => true.into(),
            "false" | "no" | "0" => false.into(),
            _ => return Err(format!("expected true or false, got `{text}`")),
        },
        ParamType::Enum => {
            if !param.values.iter().any(|v| v.as_str() == text) {
                let names: Vec<&str> = param.values.iter().map(|v| v.as_str()).collect();
                return Err(format!(
                    "expected one of {}, got `{text}`",
                    names.join(", ")
                ));
            }
            text.into()
        }
    };
    if let Some(pattern) = &param.pattern {
        if let Ok(re) = regex::Regex::new(pattern) {
            if !full_match(&re, text) {
                let shown = if param.ty.value == ParamType::Secret {
                    "the value"
                } else {
                    text
                };
                return Err(format!(
                    "`{shown}` does not match the pattern `{}`",
                    pattern.value
                ));
            }
        }
    }
    Ok(value)
}
