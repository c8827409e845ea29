//! What a runbook declares besides its steps: alert triggers (their CEL over `alert`,
//! the parameters they set) and phases (ids, the steps that join them).

use std::collections::HashMap;

use super::Validator;
use crate::cond;
use crate::diag::{Code, Diagnostic, did_you_mean};
use crate::model::Sp;

impl Validator<'_> {
    /// Trigger conditions and parameter expressions parse, read only `alert.<field>` with a
    /// field the normalised alert has, combine values of matching types, and set declared
    /// parameters.
    pub(super) fn triggers(&mut self) {
        let rb = self.rb;
        for trigger in &rb.triggers {
            if let Some(when) = &trigger.when {
                self.alert_expr(when, "trigger condition");
            }
            for (name, expr) in &trigger.params {
                if !rb.params.contains_key(name) {
                    let mut d = Diagnostic::new(
                        Code::TriggerParam,
                        expr.span,
                        format!("the trigger sets parameter `{name}`, which the runbook does not declare"),
                    )
                    .label("no such parameter");
                    d = d.help(
                        did_you_mean(name, rb.params.keys().map(String::as_str))
                            .unwrap_or_else(|| "declare it under `params:`".into()),
                    );
                    self.diags.push(d);
                }
                self.alert_expr(expr, "trigger parameter");
            }
        }
    }

    fn alert_expr(&mut self, expr: &Sp<String>, what: &str) {
        let analysis = match cond::parse(expr) {
            Ok(a) => a,
            Err(err) => {
                self.cel_syntax(
                    expr,
                    &err,
                    what,
                    "trigger expressions are CEL over `alert`, e.g. `alert.name == \"rds-connections-high\"` or `alert.dimensions.DBInstanceIdentifier`",
                );
                return;
            }
        };
        for name in &analysis.names {
            let start = expr.find(name[0].as_str()).unwrap_or(0);
            let at = expr.locate(self.source, start, &name.join("."));
            if name[0] != "alert" {
                self.diags.push(
                    Diagnostic::new(
                        Code::CelUnknownIdentifier,
                        at,
                        format!("{what} names unknown identifier `{}`", name[0]),
                    )
                    .label("unknown identifier")
                    .help(
                        did_you_mean(&name[0], ["alert"])
                            .unwrap_or_else(|| "trigger expressions read only `alert`".into()),
                    ),
                );
                continue;
            }
            if let Some(field) = name.get(1) {
                if !crate::facts::ALERT_FIELDS.iter().any(|(f, _)| f == field) {
                    let fields: Vec<&str> =
                        crate::facts::ALERT_FIELDS.iter().map(|(f, _)| *f).collect();
                    self.diags.push(
                        Diagnostic::new(
                            Code::TriggerParam,
                            at,
                            format!("an alert has no field `{field}`"),
                        )
                        .label("unknown alert field")
                        .help(
                            did_you_mean(field, fields.iter().copied())
                                .unwrap_or_else(|| format!("alert fields: {}", fields.join(", "))),
                        ),
                    );
                }
            }
        }
        let lookup = |name: &[String]| -> cond::Ty {
            match name {
                [root, field] if root == "alert" => crate::facts::ALERT_FIELDS
                    .iter()
                    .find(|(f, _)| f == field)
                    .map_or(cond::Ty::Dyn, |(_, t)| *t),
                [root, map, _] if root == "alert" && map != "raw" => cond::Ty::String,
                _ => cond::Ty::Dyn,
            }
        };
        self.cel_types(expr, &analysis, &lookup);
    }

    /// Phase ids are unique, every `phase:` names one, and every phase has a step.
    pub(super) fn phases(&mut self) {
        let rb = self.rb;
        let mut seen: HashMap<&str, &Sp<String>> = HashMap::new();
        for phase in &rb.phases {
            if let Some(first) = seen.get(phase.id.as_str()) {
                self.used_twice(Code::UnknownPhase, "phase", &phase.id, first);
            } else {
                seen.insert(phase.id.as_str(), &phase.id);
            }
        }
        for step in &rb.steps {
            let Some(p) = &step.phase else { continue };
            if seen.contains_key(p.as_str()) {
                continue;
            }
            let mut d = Diagnostic::new(
                Code::UnknownPhase,
                p.span,
                format!("step `{}` names unknown phase `{}`", step.id.value, p.value),
            )
            .label("no phase with this id");
            d = d.help(
                did_you_mean(p, seen.keys().copied()).unwrap_or_else(|| {
                    "declare it under `phases:` with an `id`, a `title` and `within` (a deadline from the run start)".into()
                }),
            );
            self.diags.push(d);
        }
        for phase in &rb.phases {
            let used = rb
                .steps
                .iter()
                .any(|s| s.phase.as_ref().is_some_and(|p| p.value == phase.id.value));
            if !used {
                self.diags.push(
                    Diagnostic::new(
                        Code::EmptyPhase,
                        phase.id.span,
                        format!("no step belongs to phase `{}`", phase.id.value),
                    )
                    .label("empty phase")
                    .help(format!(
                        "add `phase: {}` to the steps it covers, or remove it",
                        phase.id.value
                    )),
                );
            }
        }
    }
}
