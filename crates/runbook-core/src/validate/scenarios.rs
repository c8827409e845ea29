//! Scenario files checked: the YAML converted with every problem located ([`check`]),
//! and the problems only the runbook can show ([`check_against`]: every step, param and
//! capture a scenario names exists; each result has the shape its step's action
//! produces). The format itself is [`crate::scenario`].

use crate::convert::Converter;
use crate::diag::{Code, Diagnostic, did_you_mean};
use crate::model::{Action, Runbook, Sp, StepKind};
use crate::scenario::*;
use crate::yaml;

/// Parse a scenario file. Problems that need the runbook come from [`check_against`].
pub fn check(source: &str) -> CheckedScenarios {
    let root = match yaml::parse(source) {
        Ok(root) => root,
        Err((message, span)) => {
            return CheckedScenarios {
                file: None,
                diagnostics: vec![Diagnostic::new(Code::YamlSyntax, span, message).label("here")],
            };
        }
    };
    let mut conv = Converter::new(source);
    let file = conv.scenario_file(&root);
    let mut diagnostics = conv.diags;
    diagnostics.sort_by_key(|d| (d.span.offset, d.code));
    CheckedScenarios { file, diagnostics }
}

/// What the fields of a result mean for each kind of action.
fn allowed_fields(action: Option<&Action>) -> (&'static str, &'static [&'static str]) {
    match action {
        Some(Action::Shell(_)) => ("a shell step", &["exit_code", "stdout", "stderr", "takes"]),
        Some(Action::Http(_)) => ("an http step", &["status", "body", "error", "takes"]),
        Some(Action::SsmCommand(_)) => ("an ssm_command step", &["instances", "takes"]),
        Some(Action::SsmAutomation(_)) => (
            "an ssm_automation step",
            &["status", "outputs", "failure", "takes"],
        ),
        Some(Action::Wait(_)) => ("a wait step", &[]),
        Some(Action::Manual(_)) => ("a manual step", &["takes"]),
        None => ("a branch", &[]),
    }
}

/// The problems of scenarios that only the runbook can show: names that do not exist,
/// results of the wrong shape, parameter values of the wrong type.
pub fn check_against(file: &ScenarioFile, rb: &Runbook) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let step_ids: Vec<&str> = rb.steps.iter().map(|s| s.id.value.as_str()).collect();
    let step = |id: &Sp<String>, out: &mut Vec<Diagnostic>| {
        let found = rb.steps.iter().find(|s| s.id.value == id.value);
        if found.is_none() {
            let mut d = Diagnostic::new(
                Code::UnknownStep,
                id.span,
                format!("`{}` has no step `{}`", rb.name.value, id.value),
            )
            .label("no such step");
            if let Some(h) = did_you_mean(id, step_ids.iter().copied()) {
                d = d.help(h);
            }
            out.push(d);
        }
        found
    };
    for sc in &file.scenarios {
        for (name, value) in &sc.params {
            match rb.params.get(&name.value) {
                None => {
                    let mut d = Diagnostic::new(
                        Code::UnknownParam,
                        name.span,
                        format!("`{}` has no parameter `{}`", rb.name.value, name.value),
                    )
                    .label("no such parameter");
                    if let Some(h) = did_you_mean(name, rb.params.keys().map(String::as_str)) {
                        d = d.help(h);
                    }
                    out.push(d);
                }
                Some(p) => {
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if let Err(e) = crate::convert::coerce_param(p, &text) {
                        out.push(
                            Diagnostic::new(
                                Code::InvalidValue,
                                name.span,
                                format!("parameter `{}`: {e}", name.value),
                            )
                            .label("not a valid value"),
                        );
                    }
                }
            }
        }
        for (id, answers) in &sc.answers {
            if let Some(s) = step(id, &mut out) {
                let asks =
                    s.kind.value == StepKind::Act || matches!(s.action, Some(Action::Manual(_)));
                if !asks {
                    out.push(
                        Diagnostic::new(
                            Code::FieldNotAllowed,
                            id.span,
                            format!(
                                "step `{}` is a {} step; the operator is only asked about acts and manual steps",
                                id.value,
                                s.kind.value.as_str()
                            ),
                        )
                        .label("never asked"),
                    );
                }
                let _ = answers;
            }
        }
        for (id, results) in &sc.results {
            let Some(s) = step(id, &mut out) else {
                continue;
            };
            let (noun, allowed) = allowed_fields(s.action.as_ref());
            for r in results {
                for (field, span) in &r.fields {
                    if allowed.contains(&field.as_str()) {
                        continue;
                    }
                    let help = if allowed.is_empty() {
                        match s.action {
                            Some(Action::Wait(_)) => {
                                "a wait step needs no result: it takes its time".to_string()
                            }
                            _ => "a branch needs no result: its cases read other steps' values"
                                .to_string(),
                        }
                    } else {
                        format!("a result of {noun} has: {}", allowed.join(", "))
                    };
                    out.push(
                        Diagnostic::new(
                            Code::FieldNotAllowed,
                            *span,
                            format!("`{field}` is not a result of step `{}`, {noun}", id.value),
                        )
                        .label(format!("not part of {noun}'s result"))
                        .help(help),
                    );
                }
                if let (Some(st), Some(Action::Http(_) | Action::SsmAutomation(_))) =
                    (&r.status, &s.action)
                {
                    let http = matches!(s.action, Some(Action::Http(_)));
                    let fits = matches!(
                        (&st.value, http),
                        (ResultStatus::Http(_), true) | (ResultStatus::Automation(_), false)
                    );
                    if !fits {
                        out.push(
                            Diagnostic::new(
                                Code::WrongType,
                                st.span,
                                if http {
                                    format!("`status` of http step `{}` must be an HTTP status code", id.value)
                                } else {
                                    format!(
                                        "`status` of ssm_automation step `{}` must be an execution status such as `Success` or `Failed`",
                                        id.value
                                    )
                                },
                            )
                            .label("wrong kind of status"),
                        );
                    }
                }
            }
        }
        let e = &sc.expect;
        let lists = [
            e.path.as_ref().map(|p| &p.value),
            e.skipped.as_ref(),
            e.not_run.as_ref(),
        ];
        for id in lists.into_iter().flatten().flatten() {
            step(id, &mut out);
        }
        for (id, _) in &e.steps {
            step(id, &mut out);
        }
        for (id, _) in &e.commands {
            let Some(s) = step(id, &mut out) else {
                continue;
            };
            if matches!(s.action, None | Some(Action::Wait(_) | Action::Manual(_))) {
                out.push(
                    Diagnostic::new(
                        Code::FieldNotAllowed,
                        id.span,
                        format!(
                            "step `{}` has no command to compare: it is {}",
                            id.value,
                            allowed_fields(s.action.as_ref()).0
                        ),
                    )
                    .label("no command"),
                );
            }
        }
        for (id, caps) in &e.captures {
            let Some(s) = step(id, &mut out) else {
                continue;
            };
            for (name, _) in caps {
                if !s.capture.contains_key(&name.value) {
                    let mut d = Diagnostic::new(
                        Code::UnknownCapture,
                        name.span,
                        format!("step `{}` has no capture `{}`", id.value, name.value),
                    )
                    .label("no such capture");
                    if let Some(h) = did_you_mean(name, s.capture.keys().map(String::as_str)) {
                        d = d.help(h);
                    }
                    out.push(d);
                }
            }
        }
    }
    out.sort_by_key(|d| (d.span.offset, d.code));
    // A result in a YAML anchor is checked once per alias that uses it: the same problem
    // at the same place is reported once.
    let mut once: Vec<Diagnostic> = Vec::with_capacity(out.len());
    for d in out {
        if !once.contains(&d) {
            once.push(d);
        }
    }
    once
}
