//! Whole-runbook checks: references, the DAG, templates, conditions and safety lints.

use std::collections::HashMap;
use std::rc::Rc;

use crate::cond;
use crate::convert::{Converter, Streamed};
use crate::diag::{Code, Diagnostic, Severity, Span, did_you_mean};
use crate::facts::{RUN_VARS, builtins, mutating_check, value_type};
use crate::model::{OnFail, Runbook, Sp, Step, StepKind};
use crate::plan::{CycleError, Plan};
use crate::render::step_templates;
use crate::template::{self, Context};
use crate::yaml;

mod declarations;
pub mod scenarios;

/// The result of checking one runbook file.
#[derive(Debug)]
pub struct Checked {
    /// The typed runbook, when the file was at least a YAML mapping.
    pub runbook: Option<Runbook>,
    /// The DAG, when the steps form one.
    pub plan: Option<Plan>,
    /// Every problem found, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// Whether any diagnostic is an error (or a warning, with `deny_warnings`).
    pub fn has_errors(&self, deny_warnings: bool) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.is_error() || (deny_warnings && d.severity == Severity::Warning))
    }

    /// The runbook and plan, when there are no errors.
    pub fn valid(&self) -> Option<(&Runbook, &Plan)> {
        if self.has_errors(false) {
            return None;
        }
        Some((self.runbook.as_ref()?, self.plan.as_ref()?))
    }
}

/// Parse and check a runbook. `file_stem` is the file name without extension, when the
/// text came from a file (the runbook name must match it).
pub fn check(source: &str, file_stem: Option<&str>) -> Checked {
    let mut conv = Converter::new(source);
    // Steps are converted, and their templates and conditions parsed, while the parser
    // reads on: see `parse_streaming_steps`.
    let mut streamed = Streamed::default();
    let mut analyzer = Analyzer::default();
    let mut analyzed = Vec::new();
    let parsed = yaml::parse_streaming_steps(source, &mut |index, node| {
        streamed.items += 1;
        if let Some(step) = conv.step(index, &node) {
            analyzed.push(analyzer.step(&step));
            streamed.steps.push(step);
        }
    });
    let root = match parsed {
        Ok(root) => root,
        Err((message, span)) => {
            return Checked {
                runbook: None,
                plan: None,
                diagnostics: vec![
                    Diagnostic::new(Code::YamlSyntax, span, message)
                        .label("here")
                        .help("fix the YAML syntax; nothing else is checked until the file parses"),
                ],
            };
        }
    };
    let runbook = conv.runbook(&root, streamed);
    // The typed runbook owns what it needs; free the tree before the validator allocates.
    drop(root);
    let mut diags = conv.diags;
    let mut plan = None;
    if let Some(rb) = &runbook {
        let mut v = Validator {
            source,
            rb,
            diags: &mut diags,
            analyzer,
            analyzed,
        };
        plan = v.run(file_stem);
    }
    diags.sort_by_key(|d| (d.span.offset, d.code));
    diags.dedup();
    Checked {
        runbook,
        plan,
        diagnostics: diags,
    }
}

struct Validator<'a> {
    source: &'a str,
    rb: &'a Runbook,
    diags: &'a mut Vec<Diagnostic>,
    analyzer: Analyzer,
    /// One per step, in order; the streamed steps' were made while the file was read.
    analyzed: Vec<StepAnalysis>,
}

type TemplateAnalysis = Result<template::Analysis, template::SyntaxError>;
type CondAnalysis = Result<cond::Analysis, cond::SyntaxError>;

/// What can be worked out from a step alone: its templates and conditions, parsed, and
/// whether it is a check that looks like it changes something.
struct StepAnalysis {
    /// One per [`step_templates`] entry; `None` where the text is not a template.
    templates: Vec<Option<TemplateAnalysis>>,
    /// `expect`, then each case's `when`.
    conditions: Vec<Rc<CondAnalysis>>,
    mutating_check: Option<Diagnostic>,
}

/// Analyses steps one at a time. It needs nothing but the step, so it runs while the
/// rest of the file is still being read.
#[derive(Default)]
struct Analyzer {
    /// Parsed conditions by text: runbooks repeat the same expectation often, and CEL
    /// parsing is the dearest part of validation.
    conditions: HashMap<String, Rc<CondAnalysis>>,
}

impl Analyzer {
    fn step(&mut self, step: &Step) -> StepAnalysis {
        let templates = step_templates(step)
            .into_iter()
            .map(|(text, _)| template::is_template(text).then(|| template::analyze(text)))
            .collect();
        let conditions = step
            .expect
            .iter()
            .chain(step.cases.iter().map(|c| &c.when))
            .map(|expr| self.condition(expr))
            .collect();
        StepAnalysis {
            templates,
            conditions,
            mutating_check: mutating_check(step),
        }
    }

    fn condition(&mut self, expr: &str) -> Rc<CondAnalysis> {
        if let Some(done) = self.conditions.get(expr) {
            return done.clone();
        }
        let done = Rc::new(cond::parse(expr));
        self.conditions.insert(expr.to_owned(), done.clone());
        done
    }
}

impl<'a> Validator<'a> {
    fn run(&mut self, file_stem: Option<&str>) -> Option<Plan> {
        if let Some(stem) = file_stem {
            let name = &self.rb.name;
            if !name.is_empty() && name.as_str() != stem {
                self.diags.push(
                    Diagnostic::new(
                        Code::NameMismatch,
                        name.span,
                        format!("runbook `{}` is in a file named `{stem}`", name.value),
                    )
                    .label("differs from the file name")
                    .help(format!(
                        "rename the file to `{}.yaml` or set `name: {stem}`",
                        name.value
                    )),
                );
            }
        }
        // Steps that were not streamed (taken from a `<<` merge) are analysed now.
        for step in &self.rb.steps[self.analyzed.len()..] {
            let analysis = self.analyzer.step(step);
            self.analyzed.push(analysis);
        }
        // RB027 is about checks: a step whose `kind` is itself in error (it was taken as a
        // check only to go on checking the rest) gets no lint about being a check.
        let kind_in_error = |step: &Step, diags: &[Diagnostic]| {
            let k = step.kind.span;
            diags.iter().any(|d| {
                d.is_error() && d.span.offset >= k.offset && d.span.offset < k.offset + k.len.max(1)
            })
        };
        let mut mutating = Vec::new();
        for (step, a) in self.rb.steps.iter().zip(self.analyzed.iter_mut()) {
            if let Some(d) = a.mutating_check.take() {
                if !kind_in_error(step, self.diags) {
                    mutating.push(d);
                }
            }
        }
        self.diags.extend(mutating);
        let ids = self.duplicate_ids();
        self.references(&ids);
        self.phases();
        self.triggers();
        let mut plan = match Plan::build(self.rb) {
            Ok(plan) => plan,
            Err(cycle) => {
                self.cycle(&cycle);
                self.expressions(None);
                return None;
            }
        };
        plan.reads = self.reads(&plan);
        self.unreachable(&plan);
        self.retry_targets(&plan);
        self.expressions(Some(&plan));
        self.lints(&plan);
        Some(plan)
    }

    /// Which steps each step reads, from the analyses of its templates and conditions.
    fn reads(&self, plan: &Plan) -> Vec<Vec<usize>> {
        self.analyzed
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let templates = a
                    .templates
                    .iter()
                    .flatten()
                    .flatten()
                    .flat_map(|t| t.vars.iter().map(|v| &v.path));
                let conditions = a
                    .conditions
                    .iter()
                    .filter_map(|c| c.as_ref().as_ref().ok())
                    .flat_map(|c| c.names.iter());
                let names: Vec<&Vec<String>> = templates.chain(conditions).collect();
                // The whole `steps` map (`"a" in steps`, `has(steps.a)`): every step that
                // can have run before this one. Never itself or what follows it: waiting
                // for those would wait forever.
                if names.iter().any(|n| n.len() == 1 && n[0] == "steps") {
                    return (0..plan.order.len())
                        .filter(|&s| s != i && plan.is_ancestor(s, i))
                        .collect();
                }
                let mut out: Vec<usize> = names
                    .iter()
                    .filter(|n| n.len() >= 2 && n[0] == "steps")
                    .filter_map(|n| plan.index(&n[1]))
                    .collect();
                out.sort_unstable();
                out.dedup();
                out
            })
            .collect()
    }

    /// An id declared a second time (`what`: step, phase), pointing at the first.
    fn used_twice(&mut self, code: Code, what: &str, id: &Sp<String>, first: &Sp<String>) {
        self.diags.push(
            Diagnostic::new(
                code,
                id.span,
                format!("{what} id `{}` is used twice", id.value),
            )
            .label("second use")
            .related(first.span, "first used here")
            .help(format!("{what} ids must be unique; rename one of them")),
        );
    }

    fn duplicate_ids(&mut self) -> HashMap<&'a str, &'a Step> {
        let rb = self.rb;
        let mut ids: HashMap<&'a str, &'a Step> = HashMap::new();
        for step in &rb.steps {
            if let Some(first) = ids.get(step.id.as_str()) {
                self.used_twice(Code::DuplicateStepId, "step", &step.id, &first.id);
            } else {
                ids.insert(step.id.as_str(), step);
            }
        }
        ids
    }

    fn unknown_step(&mut self, r: &Sp<String>, field: &str, ids: &HashMap<&str, &Step>) {
        if ids.contains_key(r.as_str()) {
            return;
        }
        let mut d = Diagnostic::new(
            Code::UnknownStep,
            r.span,
            format!("`{field}` names unknown step `{}`", r.value),
        )
        .label("no step with this id");
        if let Some(hint) = did_you_mean(r, ids.keys().copied()) {
            d = d.help(hint);
        }
        self.diags.push(d);
    }

    fn references(&mut self, ids: &HashMap<&str, &Step>) {
        for step in &self.rb.steps {
            for need in step.needs.iter().flatten() {
                self.unknown_step(need, "needs", ids);
                if need.value == step.id.value {
                    self.diags.push(
                        Diagnostic::new(
                            Code::Cycle,
                            need.span,
                            format!("step `{}` needs itself", need.value),
                        )
                        .label("self-reference"),
                    );
                }
            }
            for case in &step.cases {
                self.unknown_step(&case.goto, "goto", ids);
            }
            if let Some(d) = &step.default {
                self.unknown_step(d, "default", ids);
            }
            match step.on_fail.as_deref() {
                Some(OnFail::Goto { goto }) => self.unknown_step(goto, "goto", ids),
                Some(OnFail::RetryFrom { retry_from, .. }) => {
                    self.unknown_step(retry_from, "retry_from", ids)
                }
                _ => {}
            }
        }
    }

    fn cycle(&mut self, cycle: &CycleError) {
        let Some(&first) = cycle.steps.first() else {
            return;
        };
        let mut path: Vec<&str> = cycle
            .steps
            .iter()
            .map(|&i| self.rb.steps[i].id.as_str())
            .collect();
        path.push(self.rb.steps[first].id.as_str());
        // An edge the author did not write: a step without `needs` follows the one listed
        // right above it.
        let order: Vec<usize> = cycle.steps.iter().copied().chain([first]).collect();
        let implicit: Vec<(usize, usize)> = order
            .windows(2)
            .map(|w| (w[0], w[1]))
            .filter(|&(a, b)| b == a + 1 && self.rb.steps[b].needs.is_none())
            .collect();
        let mut help = "steps must form a DAG; for a bounded re-investigation loop use `on_fail: {retry_from: STEP, attempts: N}`".to_string();
        if let Some(&(a, b)) = implicit.first() {
            help = format!(
                "`{}` runs after `{}` only because it is listed right below it and has no `needs`; \
                 give `{}` explicit `needs` (or move it) to break the cycle. Otherwise, {help}",
                self.rb.steps[b].id.value, self.rb.steps[a].id.value, self.rb.steps[b].id.value
            );
        }
        let mut d = Diagnostic::new(
            Code::Cycle,
            self.rb.steps[first].id.span,
            format!("steps form a cycle: {}", path.join(" → ")),
        )
        .label("the cycle starts here")
        .help(help);
        for &i in &cycle.steps[1..] {
            let label = if implicit.iter().any(|&(_, b)| b == i) {
                "part of the cycle (follows the step above it: list order)"
            } else {
                "part of the cycle"
            };
            d = d.related(self.rb.steps[i].id.span, label);
        }
        self.diags.push(d);
    }

    fn unreachable(&mut self, plan: &Plan) {
        let can = plan.reachable(self.rb);
        for (i, step) in self.rb.steps.iter().enumerate() {
            if can[i] {
                continue;
            }
            let blockers: Vec<&str> = plan
                .incoming(i)
                .filter(|(src, _)| self.rb.steps[*src].kind.value == StepKind::Branch)
                .map(|(src, _)| self.rb.steps[src].id.as_str())
                .collect();
            let why = if blockers.is_empty() {
                "every step leading to it can never run".to_string()
            } else {
                format!(
                    "it follows branch `{}`, which never routes to it",
                    blockers.join("`, `")
                )
            };
            self.diags.push(
                Diagnostic::new(
                    Code::UnreachableStep,
                    step.id.span,
                    format!("step `{}` can never run: {why}", step.id.value),
                )
                .label("unreachable")
                .help("make it a target of a branch case or default, or give it explicit `needs`"),
            );
        }
    }

    fn retry_targets(&mut self, plan: &Plan) {
        for (i, step) in self.rb.steps.iter().enumerate() {
            if let Some(OnFail::RetryFrom { retry_from, .. }) = step.on_fail.as_deref() {
                if let Some(t) = plan.index(retry_from) {
                    if t != i && !plan.is_ancestor(t, i) {
                        self.diags.push(
                            Diagnostic::new(Code::BadRetryTarget, retry_from.span, format!("`retry_from` names `{}`, which does not come before step `{}`", retry_from.value, step.id.value))
                                .label("not an earlier step")
                                .help("retry_from re-runs the procedure from an earlier step; name one this step depends on"),
                        );
                    }
                }
            }
        }
    }

    /// Templates and conditions of every step.
    fn expressions(&mut self, plan: Option<&Plan>) {
        if let Some(lock) = &self.rb.lock {
            let analysis = template::is_template(lock).then(|| template::analyze(lock));
            self.template(lock, analysis.as_ref(), None, plan, Context::Text);
        }
        let analyzed = std::mem::take(&mut self.analyzed);
        for ((i, step), exprs) in self.rb.steps.iter().enumerate().zip(&analyzed) {
            for ((text, ctx), analysis) in step_templates(step).into_iter().zip(&exprs.templates) {
                self.template(text, analysis.as_ref(), Some(i), plan, ctx);
            }
            let exprs_in_order = step
                .expect
                .iter()
                .map(|e| (e, true))
                .chain(step.cases.iter().map(|c| (&c.when, false)));
            for ((expr, is_expect), analysis) in exprs_in_order.zip(&exprs.conditions) {
                self.condition(expr, analysis, i, plan, is_expect);
            }
        }
    }

    /// Locate `needle` (found at `offset` in the value `text`) in the source, falling back
    /// to the whole value.
    fn locate(&self, value: &Sp<String>, offset: usize, needle: &str) -> Span {
        value.locate(self.source, offset, needle)
    }

    fn template(
        &mut self,
        text: &Sp<String>,
        analysis: Option<&TemplateAnalysis>,
        step: Option<usize>,
        plan: Option<&Plan>,
        ctx: Context,
    ) {
        let Some(analysis) = analysis else {
            return;
        };
        let analysis = match analysis {
            Ok(a) => a,
            Err(err) => {
                let span = match err.offset.map(|o| crate::text::floor_boundary(text, o)) {
                    Some(o) => self.locate(text, o, text[o..].lines().next().unwrap_or("")),
                    None => text.span,
                };
                self.diags.push(
                    Diagnostic::new(
                        Code::TemplateSyntax,
                        span,
                        "template does not parse: a `{{` without its `}}`, or a malformed expression",
                    )
                    .label("template error")
                    .help({
                        let detail = err.message.trim_start_matches("invalid handlebars syntax: ");
                        // The parser's grammar rule names (`expected trailing_tilde_...`)
                        // mean nothing to an author: leave them out.
                        let jargon = detail.split_whitespace().any(|w| w.contains('_'));
                        if jargon || detail.is_empty() {
                            "templates are handlebars, e.g. `{{params.name}}` or `{{steps.<id>.<capture>}}`; every `{{` needs its `}}`".to_string()
                        } else {
                            format!(
                                "templates are handlebars, e.g. `{{{{params.name}}}}` or `{{{{steps.<id>.<capture>}}}}` (parser: {detail})"
                            )
                        }
                    }),
                );
                return;
            }
        };
        for raw in &analysis.raw {
            let span = self.locate(text, raw.offset, &raw.expr);
            let quoting = match ctx {
                Context::Shell => "shell-quoting",
                Context::Url => "percent-encoding",
                Context::Text => "escaping",
            };
            self.diags.push(
                Diagnostic::new(Code::RawTemplate, span, format!("`{}` inserts a value without {quoting}", raw.expr))
                    .label("unquoted insertion")
                    .help("use `{{name}}` so the value is quoted; keep `{{{raw ...}}}` only for trusted text that must be interpreted"),
            );
        }
        for helper in &analysis.helpers {
            let name = &helper.path[0];
            if !template::HELPERS.contains(&name.as_str()) {
                let span = self.locate(text, helper.offset, &helper.expr);
                let mut d = Diagnostic::new(
                    Code::UnknownHelper,
                    span,
                    format!("unknown template helper `{name}`"),
                )
                .label("unknown helper");
                d = d.help(
                    did_you_mean(name, template::HELPERS.iter().copied())
                        .unwrap_or_else(|| format!("helpers: {}", template::HELPERS.join(", "))),
                );
                self.diags.push(d);
            }
        }
        let source = self.source;
        for var in &analysis.vars {
            // Spans are only worked out for diagnostics: most references are fine.
            let at = || text.locate(source, var.offset, &var.expr);
            self.name_ref(&var.path, &at, step, plan, false);
        }
    }

    /// RB-CEL-syntax at the place in `expr` where the parser stopped.
    fn cel_syntax(&mut self, expr: &Sp<String>, err: &cond::SyntaxError, what: &str, help: &str) {
        let (line, col) = err.position;
        let offset = crate::text::line_col_offset(expr, line, col);
        let span = self.locate(expr, offset, crate::text::char_at(expr, offset));
        self.diags.push(
            Diagnostic::new(
                Code::CelSyntax,
                span,
                format!("{what} does not parse: {}", err.message),
            )
            .label("CEL syntax error")
            .help(help),
        );
    }

    fn condition(
        &mut self,
        expr: &Sp<String>,
        analyzed: &CondAnalysis,
        step: usize,
        plan: Option<&Plan>,
        is_expect: bool,
    ) {
        let names = match analyzed {
            Ok(n) => n,
            Err(err) => {
                self.cel_syntax(
                    expr,
                    err,
                    "condition",
                    "conditions are CEL, e.g. `count >= params.max_connections * 9 / 10` or `status == \"available\"`",
                );
                return;
            }
        };
        let source = self.source;
        self.condition_types(expr, names, step, is_expect);
        for name in names.names.iter() {
            let at = || {
                let start = expr.find(name[0].as_str()).unwrap_or(0);
                expr.locate(source, start, &name.join("."))
            };
            let s = &self.rb.steps[step];
            let root = name[0].as_str();
            if matches!(root, "params" | "steps" | "run" | "env") {
                self.name_ref(name, &at, Some(step), plan, is_expect);
                continue;
            }
            let own = is_expect && (s.capture.contains_key(root) || builtins(s).contains(&root));
            if own {
                continue;
            }
            let mut candidates: Vec<&str> = vec!["params", "steps"];
            if is_expect {
                candidates.extend(s.capture.keys().map(String::as_str));
                candidates.extend(builtins(s));
            }
            let help = match did_you_mean(root, candidates.iter().copied()) {
                Some(h) => h,
                None if is_expect => format!(
                    "an expect can read `params`, `steps` and this step's values: {}",
                    candidates[2..].join(", ")
                ),
                None => {
                    "a branch condition can read `params` and `steps.<id>.<capture>`".to_string()
                }
            };
            self.diags.push(
                Diagnostic::new(
                    Code::CelUnknownIdentifier,
                    at(),
                    format!("condition names unknown identifier `{root}`"),
                )
                .label("unknown identifier")
                .help(help),
            );
        }
    }

    /// Operators applied to values of different types (`used != 730144440` with `used`
    /// text from a regex): errors now, not a wrong route or a failure at 3 a.m.
    fn condition_types(
        &mut self,
        expr: &Sp<String>,
        analysis: &cond::Analysis,
        step: usize,
        is_expect: bool,
    ) {
        use crate::model::ParamType;
        let rb = self.rb;
        let own = &rb.steps[step];
        let lookup = |name: &[String]| -> cond::Ty {
            match name {
                [root, p] if root == "params" => {
                    rb.params
                        .get(p.as_str())
                        .map_or(cond::Ty::Dyn, |p| match p.ty.value {
                            ParamType::Integer => cond::Ty::Int,
                            ParamType::Number => cond::Ty::Double,
                            ParamType::Boolean => cond::Ty::Bool,
                            ParamType::String | ParamType::Enum | ParamType::Secret => {
                                cond::Ty::String
                            }
                        })
                }
                [root, _] if root == "run" || root == "env" => cond::Ty::String,
                [root, id, field] if root == "steps" => rb
                    .steps
                    .iter()
                    .find(|s| s.id.value == *id)
                    .map_or(cond::Ty::Dyn, |s| value_type(s, field)),
                [root, _] if root == "steps" => cond::Ty::Map,
                [field] if is_expect => value_type(own, field),
                _ => cond::Ty::Dyn,
            }
        };
        self.cel_types(expr, analysis, &lookup);
    }

    /// RB-CEL-type at each type error of `expr`, the names typed by `lookup`.
    fn cel_types(
        &mut self,
        expr: &Sp<String>,
        analysis: &cond::Analysis,
        lookup: &dyn Fn(&[String]) -> cond::Ty,
    ) {
        for e in analysis.type_errors(expr, lookup) {
            let needle = expr.get(e.offset..e.offset + e.len).unwrap_or("");
            let span = expr.locate(self.source, e.offset, needle);
            self.diags.push(
                Diagnostic::new(Code::CelType, span, e.message)
                    .label("mismatched types")
                    .help(e.help),
            );
        }
    }

    /// Check a `params.X` / `steps.ID.FIELD` / `env.X` / `run.X` reference.
    fn name_ref(
        &mut self,
        path: &[String],
        at: &dyn Fn() -> Span,
        step: Option<usize>,
        plan: Option<&Plan>,
        allow_self: bool,
    ) {
        let root = path[0].as_str();
        let second = path.get(1).map(String::as_str);
        match (root, second) {
            ("params", Some(p)) => {
                if !self.rb.params.contains_key(p) {
                    let mut d = Diagnostic::new(
                        Code::UnknownVariable,
                        at(),
                        format!("unknown parameter `{p}`"),
                    )
                    .label("not declared in `params`");
                    d = d.help(
                        did_you_mean(p, self.rb.params.keys().map(String::as_str))
                            .unwrap_or_else(|| "declare it under `params:`".into()),
                    );
                    self.diags.push(d);
                }
            }
            ("steps", Some(id)) => self.step_ref(
                id,
                path.get(2).map(String::as_str),
                at,
                step,
                plan,
                allow_self,
            ),
            ("env", Some(name)) => {
                if !self.rb.env.iter().any(|e| e.as_str() == name) {
                    self.diags.push(
                        Diagnostic::new(Code::UnknownVariable, at(), format!("environment variable `{name}` is not in the runbook's `env` allow-list"))
                            .label("not allowed")
                            .help(format!("add `{name}` to `env:` at the top of the runbook")),
                    );
                }
            }
            ("run", Some(name)) => {
                if !RUN_VARS.contains(&name) {
                    self.diags.push(
                        Diagnostic::new(
                            Code::UnknownVariable,
                            at(),
                            format!("unknown run variable `{name}`"),
                        )
                        .label("unknown")
                        .help(format!("run variables: {}", RUN_VARS.join(", "))),
                    );
                }
            }
            ("params" | "steps" | "env" | "run", None) => {}
            _ => {
                let roots = ["params", "steps", "env", "run"];
                let mut d = Diagnostic::new(
                    Code::UnknownVariable,
                    at(),
                    format!("unknown template variable `{}`", path.join(".")),
                )
                .label("unknown variable");
                d = d.help(did_you_mean(root, roots).unwrap_or_else(|| "templates read `params.<name>`, `steps.<id>.<capture>`, `env.<NAME>` and `run.<name>`".into()));
                self.diags.push(d);
            }
        }
    }

    fn step_ref(
        &mut self,
        id: &str,
        field: Option<&str>,
        at: &dyn Fn() -> Span,
        from: Option<usize>,
        plan: Option<&Plan>,
        allow_self: bool,
    ) {
        let target = match plan {
            Some(plan) => plan.index(id),
            None => self.rb.steps.iter().position(|s| s.id.as_str() == id),
        };
        let Some(target) = target else {
            let mut d = Diagnostic::new(
                Code::UnknownStep,
                at(),
                format!("reference to unknown step `{id}`"),
            )
            .label("no step with this id");
            if let Some(h) = did_you_mean(id, self.rb.steps.iter().map(|s| s.id.as_str())) {
                d = d.help(h);
            }
            self.diags.push(d);
            return;
        };
        let Some(from) = from else {
            self.diags.push(
                Diagnostic::new(
                    Code::NotYetRun,
                    at(),
                    format!(
                        "`lock` cannot read step `{id}`: the lock is taken before any step runs"
                    ),
                )
                .label("no step has run yet")
                .help("build the lock key from `params`"),
            );
            return;
        };
        if let Some(plan) = plan {
            let ok = (allow_self && target == from) || plan.is_ancestor(target, from);
            if !ok {
                let s = &self.rb.steps[from];
                let why = if target == from {
                    "a step cannot read its own results before it has run".to_string()
                } else {
                    format!("`{id}` is not an ancestor of `{}` in the plan", s.id.value)
                };
                self.diags.push(
                    Diagnostic::new(
                        Code::NotYetRun,
                        at(),
                        format!(
                            "step `{}` reads `steps.{id}`, which cannot have run before it",
                            s.id.value
                        ),
                    )
                    .label(why)
                    .help(if plan.is_ancestor(from, target) {
                        // `id` already comes after `from`: needing it would close a cycle.
                        format!(
                            "move `{}` below `{id}` in the list; adding `{id}` to its `needs` \
                             would make a cycle, since `{id}` already runs after `{}`",
                            s.id.value, s.id.value
                        )
                    } else {
                        format!(
                            "add `{id}` to the `needs` of `{}`, or move the step after it",
                            s.id.value
                        )
                    }),
                );
                return;
            }
        }
        let target_step = &self.rb.steps[target];
        if let Some(field) = field {
            if !target_step.capture.contains_key(field) && !builtins(target_step).contains(&field) {
                let names: Vec<&str> = target_step
                    .capture
                    .keys()
                    .map(String::as_str)
                    .chain(builtins(target_step).iter().copied())
                    .collect();
                let mut d = Diagnostic::new(
                    Code::UnknownCapture,
                    at(),
                    format!("step `{id}` has no capture `{field}`"),
                )
                .label("unknown capture")
                .related(target_step.id.span, "step defined here");
                d = d.help(
                    did_you_mean(field, names.iter().copied())
                        .unwrap_or_else(|| format!("step `{id}` provides: {}", names.join(", "))),
                );
                self.diags.push(d);
            }
        }
    }

    fn lints(&mut self, plan: &Plan) {
        // An act should be followed by a verify that proves it worked.
        let mut verified_after = vec![false; self.rb.steps.len()];
        for &i in plan.order.iter().rev() {
            verified_after[i] = plan
                .outgoing(i)
                .any(|(t, _)| self.rb.steps[t].kind.value == StepKind::Verify || verified_after[t]);
        }
        for (i, step) in self.rb.steps.iter().enumerate() {
            if step.kind.value == StepKind::Act && !verified_after[i] {
                self.diags.push(
                    Diagnostic::new(
                        Code::ActWithoutVerify,
                        step.id.span,
                        format!("act `{}` has no verify step after it", step.id.value),
                    )
                    .label("change without a check that it worked")
                    .help("add a `kind: verify` step after it that polls for the expected state"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
