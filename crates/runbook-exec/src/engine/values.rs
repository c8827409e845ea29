//! A step's values: what `steps.<id>` holds for the templates and conditions of the steps
//! after it. One type, built by the engine after an attempt, restored by resume from a
//! journal, and given by the CLI for an act counted as done. Its JSON form has exactly the
//! validator's `STEP_BUILTINS` (a test keeps them equal) plus the captures.

use serde_json::{Map, Value, json};

/// The values of one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepValues {
    /// Exit code of a command.
    pub exit_code: Option<i32>,
    /// Standard output (or response body), up to the output bound.
    pub stdout: String,
    /// Standard error, up to the output bound.
    pub stderr: String,
    /// HTTP status of an `http` step.
    pub status: Option<u16>,
    /// Wall time of the attempt.
    pub duration_ms: u64,
    /// Which attempt this is (1-based).
    pub attempt: u32,
    /// Captures, and the values an action adds (SSM: `instances`, `outputs`, ...).
    pub captures: Map<String, Value>,
}

impl StepValues {
    /// The values of a step that finished without an action result of its own (a manual
    /// step, a branch, an act counted as done on resume).
    pub fn bare(duration_ms: u64) -> Self {
        StepValues {
            duration_ms,
            attempt: 1,
            ..StepValues::default()
        }
    }

    /// The `steps.<id>` object templates and conditions read.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("exit_code".into(), json!(self.exit_code));
        m.insert("stdout".into(), json!(self.stdout));
        m.insert("stderr".into(), json!(self.stderr));
        m.insert("status".into(), json!(self.status));
        m.insert("duration_ms".into(), json!(self.duration_ms));
        m.insert("attempt".into(), json!(self.attempt));
        for (k, v) in &self.captures {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_form_has_exactly_the_builtins_the_validator_knows() {
        let v = StepValues::default().to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, runbook_core::facts::STEP_BUILTINS);
    }

    #[test]
    fn captures_sit_beside_the_builtins() {
        let mut v = StepValues::bare(12);
        v.captures.insert("count".into(), json!(3));
        let j = v.to_json();
        assert_eq!(j["count"], 3);
        assert_eq!(j["attempt"], 1);
        assert_eq!(j["duration_ms"], 12);
        assert_eq!(j["exit_code"], Value::Null);
    }
}
