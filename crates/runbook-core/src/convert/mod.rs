//! Spanned YAML tree → typed [`Runbook`], collecting every structural problem.
//!
//! Local checks live here (types, unknown and missing fields, enum values, durations,
//! regexes, JMESPath, ids, defaults); checks that need the whole runbook (references,
//! cycles, templates, conditions) live in `validate`, which builds on this module.

mod params;
mod parts;
mod scenario;

pub use params::coerce_param;

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
    "triggers",
    "phases",
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
/// A step's fields: these, then the action keys ([`Action::KEYS`]), then
/// [`STEP_FIELDS_AFTER`].
const STEP_FIELDS_BEFORE: &[&str] = &["id", "kind", "title", "description", "needs", "phase"];
static STEP_FIELDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    [STEP_FIELDS_BEFORE, &Action::KEYS[..], STEP_FIELDS_AFTER].concat()
});
const STEP_FIELDS_AFTER: &[&str] = &[
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
        let triggers = obj
            .get("triggers")
            .map(|n| {
                let items = self.seq(n, "`triggers`");
                items.iter().filter_map(|i| self.trigger(i)).collect()
            })
            .unwrap_or_default();
        let phases = obj
            .get("phases")
            .map(|n| {
                let items = self.seq(n, "`phases`");
                items.iter().filter_map(|i| self.phase(i)).collect()
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
            triggers,
            phases,
            steps,
        })
    }

    fn trigger(&mut self, node: &Node) -> Option<Trigger> {
        let what = "a trigger";
        let mut obj = self.obj(node, what)?;
        let source = match obj.get("source") {
            Some(n) => self.choice(n, "trigger `source`", &AlertSource::ALL),
            None => {
                self.missing(&obj, "source", what);
                None
            }
        };
        let when = self.opt_string(&mut obj, "when", what);
        let mut params = IndexMap::new();
        if let Some(n) = obj.get("params") {
            if let Some(map) = self.obj(n, "trigger `params`") {
                for (key, value) in map.entries {
                    if let Some(expr) = self.string(value, "a trigger parameter expression") {
                        params.insert(key.name.clone(), expr);
                    }
                }
            }
        }
        self.finish(obj, &["source", "when", "params"], what);
        Some(Trigger {
            source: source?,
            when,
            params,
        })
    }

    fn phase(&mut self, node: &Node) -> Option<Phase> {
        let what = "a phase";
        let mut obj = self.obj(node, what)?;
        let id = self.req_string(&mut obj, "id", what);
        if let Some(id) = &id {
            if !is_snake_id(id) {
                self.push(
                    Diagnostic::new(
                        Code::BadId,
                        id.span,
                        format!("phase id `{}` is not snake_case", id.value),
                    )
                    .label("invalid id")
                    .help("steps name it in `phase:`: use lowercase letters, digits and underscores, starting with a letter"),
                );
            }
        }
        let title = self.req_string(&mut obj, "title", what);
        let within = match obj.get("within") {
            Some(n) => self.duration(n, "`within`"),
            None => {
                self.missing(&obj, "within", what);
                None
            }
        };
        self.finish(obj, &["id", "title", "within"], what);
        Some(Phase {
            id: id?,
            title: title?.value,
            within: within?,
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
        // Where the kind is (or would be): an inferred kind points there, at its error.
        let kind_at = obj.get("kind").map_or(node.span, |n| n.span);
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
        let phase = self.opt_string(&mut obj, "phase", &what);

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
        self.finish(obj, &STEP_FIELDS, &what);
        // With an invalid kind, keep the step (as a branch if it has cases, else a check) so
        // that ids, references and templates are still checked.
        let kind = kind.unwrap_or_else(|| {
            let inferred = if obj_has_cases {
                StepKind::Branch
            } else {
                StepKind::Check
            };
            Sp::new(inferred, kind_at)
        });
        Some(Step {
            id: id.unwrap_or_else(|| Sp::new(format!("#{}", index + 1), node.span)),
            kind,
            title: title.unwrap_or_else(|| Sp::new(String::new(), node.span)),
            description,
            needs,
            phase,
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
}
