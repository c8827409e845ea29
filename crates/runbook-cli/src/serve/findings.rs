//! What a dry run found, for the incident channel: the alert, the runbook, each check's
//! result and captures, the branch taken, the acts the on-call would be asked to approve
//! (with their rendered commands), the time each phase took, and the command to continue
//! live. Built from the run's JSON events, which are already masked.

use runbook_exec::alert::Alert;
use serde_json::{Value, json};

/// A payload with just this alert (an Alertmanager group becomes one alert), so the
/// child run starts from exactly the alert it was started for.
pub fn single_alert_payload(body: &[u8], a: &Alert) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if let Some(alerts) = v.get_mut("alerts").and_then(Value::as_array_mut) {
        alerts.retain(|x| *x == a.raw);
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
}

pub fn resolved_text(a: &Alert) -> String {
    format!(
        "✅ *{}* ({}) is {}: no run starts for it.{}",
        a.name,
        a.source.as_str(),
        a.state.as_str(),
        if a.reason.is_empty() {
            String::new()
        } else {
            format!("\n> {}", a.reason)
        }
    )
}

pub fn cannot_start_text(a: &Alert, runbook: &str, problems: &[String]) -> String {
    format!(
        "⚠️ *{}* ({}) answers runbook *{runbook}*, but it cannot start:\n{}",
        a.name,
        a.source.as_str(),
        problems
            .iter()
            .map(|p| format!("• {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[derive(Debug, Default)]
pub struct Findings {
    alert: Value,
    alert_line: String,
    runbook: String,
    run_id: String,
    status: String,
    duration_ms: u64,
    params: Vec<String>,
    checks: Vec<Value>,
    decisions: Vec<Value>,
    acts: Vec<Value>,
    phases: Vec<Value>,
    problem: Option<String>,
}

impl Findings {
    pub fn from_events(a: &Alert, runbook: &str, events: &[Value], stderr: &str) -> Findings {
        let mut f = Findings {
            alert: a.record(),
            alert_line: format!(
                "🚨 *{}* ({}) firing{}",
                a.name,
                a.source.as_str(),
                if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.reason)
                }
            ),
            runbook: runbook.to_string(),
            ..Findings::default()
        };
        let text = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let mut kinds = std::collections::HashMap::new();
        let mut actions = std::collections::HashMap::new();
        let mut confirms = std::collections::HashMap::new();
        let mut captures: std::collections::HashMap<String, serde_json::Map<String, Value>> =
            std::collections::HashMap::new();
        for e in events {
            match e.get("event").and_then(Value::as_str).unwrap_or("") {
                "run_started" => {
                    f.run_id = text(e, "run_id");
                    if let Some(p) = e.get("params").and_then(Value::as_object) {
                        f.params = p
                            .iter()
                            .map(|(k, v)| format!("{k}={}", runbook_exec::params::value_text(v)))
                            .collect();
                    }
                }
                "step_started" if e.get("attempt").and_then(Value::as_u64) == Some(1) => {
                    let step = text(e, "step");
                    kinds.insert(step.clone(), text(e, "kind"));
                    if let Some(a) = e.get("action") {
                        actions.insert(step.clone(), action_text(a));
                    }
                    if let Some(c) = e.get("confirm").and_then(Value::as_str) {
                        confirms.insert(step, c.to_string());
                    }
                }
                "captured" => {
                    captures.entry(text(e, "step")).or_default().insert(
                        text(e, "name"),
                        e.get("value").cloned().unwrap_or(Value::Null),
                    );
                }
                "decision" => {
                    f.decisions.push(json!({
                        "step": text(e, "step"),
                        "goto": e.get("goto").cloned().unwrap_or(Value::Null),
                        "reason": text(e, "reason"),
                    }));
                }
                "step_finished" => {
                    let step = text(e, "step");
                    let status = text(e, "status");
                    let kind = kinds.get(&step).cloned().unwrap_or_default();
                    if kind == "act" || status == "not_executed" {
                        if status == "not_executed" {
                            f.acts.push(json!({
                                "step": step,
                                "command": actions.get(&step).cloned().unwrap_or_default(),
                                "confirm": confirms.get(&step),
                            }));
                        }
                    } else if kind == "check" || kind == "verify" {
                        f.checks.push(json!({
                            "step": step,
                            "kind": kind,
                            "status": status,
                            "message": e.get("message"),
                            "captures": captures.get(&step).cloned().unwrap_or_default(),
                        }));
                    }
                }
                "phase_finished" => f.phases.push(json!({
                    "phase": text(e, "phase"),
                    "title": text(e, "title"),
                    "elapsed_ms": e.get("elapsed_ms"),
                    "within_ms": e.get("within_ms"),
                    "overrun": e.get("overrun"),
                })),
                "run_finished" => {
                    f.status = text(e, "status");
                    f.duration_ms = e.get("duration_ms").and_then(Value::as_u64).unwrap_or(0);
                }
                _ => {}
            }
        }
        if f.status.is_empty() {
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            f.problem = Some(format!("the dry run did not finish: {last}"));
        }
        f
    }

    /// The command that runs the same runbook live with the same parameters.
    fn continue_live(&self) -> String {
        if self.run_id.is_empty() {
            format!("runbook exec {}", self.runbook)
        } else {
            format!(
                "runbook exec {} --params-from {}",
                self.runbook, self.run_id
            )
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "alert": self.alert,
            "runbook": self.runbook,
            "run_id": self.run_id,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "params": self.params,
            "checks": self.checks,
            "decisions": self.decisions,
            "acts": self.acts,
            "phases": self.phases,
            "problem": self.problem,
            "continue": self.continue_live(),
        })
    }

    /// Slack-compatible text (mrkdwn).
    pub fn text(&self) -> String {
        let mut o = format!("{}\n", self.alert_line);
        o.push_str(&format!(
            "Runbook *{}*: dry run `{}` {} in {}",
            self.runbook,
            self.run_id,
            if self.status.is_empty() {
                "did not finish"
            } else {
                &self.status
            },
            crate::display::secs(self.duration_ms)
        ));
        if !self.params.is_empty() {
            o.push_str(&format!(" (params {})", self.params.join(" ")));
        }
        o.push('\n');
        if let Some(p) = &self.problem {
            o.push_str(&format!("⚠️ {p}\n"));
        }
        if !self.checks.is_empty() {
            o.push_str("*Checks*\n");
            for c in &self.checks {
                let mark = match c["status"].as_str() {
                    Some("succeeded") => "✓",
                    Some("failed") => "✗",
                    _ => "○",
                };
                let caps: Vec<String> = c["captures"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", runbook_exec::params::value_text(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                o.push_str(&format!(
                    "{mark} {} {}{}{}\n",
                    c["step"].as_str().unwrap_or(""),
                    c["status"].as_str().unwrap_or(""),
                    if caps.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", caps.join(", "))
                    },
                    c["message"]
                        .as_str()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
        }
        for d in &self.decisions {
            o.push_str(&format!(
                "↳ {} → {} ({})\n",
                d["step"].as_str().unwrap_or(""),
                d["goto"].as_str().unwrap_or("nowhere"),
                d["reason"].as_str().unwrap_or("")
            ));
        }
        if self.acts.is_empty() {
            o.push_str("No act would be asked for.\n");
        } else {
            o.push_str("*Acts the on-call would be asked to approve*\n");
            for a in &self.acts {
                o.push_str(&format!(
                    "• {}: `{}`{}\n",
                    a["step"].as_str().unwrap_or(""),
                    a["command"].as_str().unwrap_or("").replace('`', "'"),
                    a["confirm"]
                        .as_str()
                        .map(|c| format!(" — {c}"))
                        .unwrap_or_default()
                ));
            }
        }
        for p in &self.phases {
            o.push_str(&format!(
                "⏱ {}: {} of {}{}\n",
                p["title"].as_str().unwrap_or(""),
                crate::display::secs(p["elapsed_ms"].as_u64().unwrap_or(0)),
                crate::display::secs(p["within_ms"].as_u64().unwrap_or(0)),
                if p["overrun"] == true { " OVERRUN" } else { "" }
            ));
        }
        o.push_str(&format!("Continue live: `{}`\n", self.continue_live()));
        o
    }
}

/// An action as one line: the command, the request, the instructions.
fn action_text(a: &Value) -> String {
    if let Some(s) = a.get("shell") {
        return s
            .get("run")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string();
    }
    if let Some(h) = a.get("http") {
        return format!(
            "{} {}",
            h.get("method").and_then(Value::as_str).unwrap_or("GET"),
            h.get("url").and_then(Value::as_str).unwrap_or("")
        );
    }
    if let Some(m) = a.get("manual") {
        return m
            .get("instructions")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string();
    }
    a.to_string()
}
