//! Alerts: the payloads monitoring systems send (an SNS notification carrying a CloudWatch
//! alarm, an EventBridge "CloudWatch Alarm State Change" event, an Alertmanager webhook,
//! any other JSON), read into one normalised [`Alert`], and matched against runbooks'
//! `triggers:`. `runbook match`, `exec --alert` and `runbook serve` share all of this.

use runbook_core::model::{AlertSource, Runbook};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The payload kinds read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// An SNS notification whose message is a CloudWatch alarm.
    Sns,
    /// An SNS subscription confirmation (not an alert: `serve` confirms it).
    SnsSubscription,
    /// An EventBridge "CloudWatch Alarm State Change" event.
    Eventbridge,
    /// An Alertmanager webhook (version 4), one or more alerts.
    Alertmanager,
    /// Any other JSON object with an alert name.
    Webhook,
}

impl PayloadKind {
    /// As shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Sns => "sns",
            PayloadKind::SnsSubscription => "sns_subscription",
            PayloadKind::Eventbridge => "eventbridge",
            PayloadKind::Alertmanager => "alertmanager",
            PayloadKind::Webhook => "webhook",
        }
    }
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds (CloudWatch `ALARM`, Alertmanager `firing`).
    Firing,
    /// It no longer does (CloudWatch `OK`, Alertmanager `resolved`).
    Resolved,
    /// CloudWatch `INSUFFICIENT_DATA`.
    InsufficientData,
}

impl AlertState {
    /// As written in `alert.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::InsufficientData => "insufficient_data",
        }
    }
}

/// One alert, normalised: what trigger expressions read as `alert`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Which trigger `source` it answers to.
    pub source: AlertSource,
    /// The payload it came in.
    pub kind: PayloadKind,
    /// Alarm or alert name.
    pub name: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// Why (the state reason, an annotation's summary).
    pub reason: String,
    /// When it changed state (as the payload gives it).
    pub time: String,
    /// Identity for de-duplication: the same alert keeps it across notifications.
    pub fingerprint: String,
    /// The metric value that crossed the threshold, when the payload says.
    pub value: Option<f64>,
    /// The threshold, when the payload says.
    pub threshold: Option<f64>,
    /// The alarm's metric (`DatabaseConnections`, `disk_used_percent`), empty when the
    /// payload does not say (Alertmanager: its rules carry labels instead).
    pub metric: String,
    /// The metric's namespace (`AWS/RDS`, `CWAgent`), empty when the payload does not say.
    pub namespace: String,
    /// Labels (Alertmanager, webhook).
    pub labels: Map<String, Value>,
    /// Metric dimensions (CloudWatch).
    pub dimensions: Map<String, Value>,
    /// Annotations (Alertmanager).
    pub annotations: Map<String, Value>,
    /// The alert's own part of the payload (the alarm message, the Alertmanager alert).
    pub raw: Value,
}

impl Alert {
    /// The value trigger expressions read as `alert`.
    pub fn to_value(&self) -> Value {
        json!({
            "source": self.source.as_str(),
            "kind": self.kind.as_str(),
            "name": self.name,
            "state": self.state.as_str(),
            "reason": self.reason,
            "time": self.time,
            "fingerprint": self.fingerprint,
            "value": self.value,
            "threshold": self.threshold,
            "metric": self.metric,
            "namespace": self.namespace,
            "labels": self.labels,
            "dimensions": self.dimensions,
            "annotations": self.annotations,
            "raw": self.raw,
        })
    }

    /// What a run records of the alert that started it (`run_started`): everything but
    /// the raw payload.
    pub fn record(&self) -> Value {
        let mut v = self.to_value();
        if let Some(o) = v.as_object_mut() {
            o.remove("raw");
        }
        v
    }

    /// `cloudwatch/prod-db-connections-high`: the operator of a run an alert started.
    pub fn who(&self) -> String {
        format!("alert:{}/{}", self.source.as_str(), self.name)
    }
}

/// A payload that cannot be read as alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON at all.
    #[error("the payload is not valid JSON: {0}")]
    NotJson(String),
    /// JSON of no known kind.
    #[error("the payload is of no known kind: {0}")]
    Unknown(String),
}

/// A payload read: its kind and the alerts in it (an SNS subscription confirmation has
/// none, and its `SubscribeURL`).
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// What it was.
    pub kind: PayloadKind,
    /// The alerts it carries.
    pub alerts: Vec<Alert>,
    /// For an SNS subscription confirmation: where to confirm it.
    pub subscribe_url: Option<String>,
}

/// Read a payload.
pub fn parse(bytes: &[u8]) -> Result<Payload, PayloadError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(PayloadError::Unknown(format!(
            "expected a JSON object, found {}",
            type_name(&v)
        )));
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    if let (Some(t), Some(_)) = (text("Type"), text("TopicArn")) {
        return sns(obj, t);
    }
    if text("detail-type").is_some() {
        return eventbridge(obj);
    }
    if obj.get("alerts").is_some_and(Value::is_array) && obj.contains_key("version") {
        return alertmanager(obj);
    }
    // A CloudWatch alarm message on its own (an SNS message body as delivered to email/SQS).
    if text("AlarmName").is_some() && text("NewStateValue").is_some() {
        return Ok(Payload {
            kind: PayloadKind::Sns,
            alerts: vec![cloudwatch_message(obj, &v)],
            subscribe_url: None,
        });
    }
    webhook(obj, &v)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn sns(obj: &Map<String, Value>, ty: &str) -> Result<Payload, PayloadError> {
    match ty {
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => Ok(Payload {
            kind: PayloadKind::SnsSubscription,
            alerts: Vec::new(),
            subscribe_url: obj
                .get("SubscribeURL")
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
        "Notification" => {
            let message = obj.get("Message").and_then(Value::as_str).unwrap_or("");
            let inner: Value = serde_json::from_str(message).map_err(|_| {
                PayloadError::Unknown(
                    "an SNS notification whose message is not a CloudWatch alarm (not JSON)".into(),
                )
            })?;
            let Some(alarm) = inner.as_object().filter(|o| o.contains_key("AlarmName")) else {
                return Err(PayloadError::Unknown(
                    "an SNS notification whose message is not a CloudWatch alarm (no AlarmName)"
                        .into(),
                ));
            };
            Ok(Payload {
                kind: PayloadKind::Sns,
                alerts: vec![cloudwatch_message(alarm, &inner)],
                subscribe_url: None,
            })
        }
        other => Err(PayloadError::Unknown(format!(
            "an SNS message of type `{other}`"
        ))),
    }
}

fn cloudwatch_state(s: &str) -> AlertState {
    match s {
        "ALARM" => AlertState::Firing,
        "OK" => AlertState::Resolved,
        _ => AlertState::InsufficientData,
    }
}

/// The value in a state reason: `... 1 datapoint [185.0 (23/11/26 03:00:00)] was ...`.
fn value_in_reason(reason: &str) -> Option<f64> {
    let start = reason.find('[')? + 1;
    let rest = &reason[start..];
    let end =
        rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'E' || c == 'e'))?;
    rest[..end].parse().ok()
}

fn cloudwatch_message(alarm: &Map<String, Value>, raw: &Value) -> Alert {
    let text = |k: &str| {
        alarm
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let trigger = alarm.get("Trigger").and_then(Value::as_object);
    let mut dimensions = Map::new();
    if let Some(dims) = trigger
        .and_then(|t| t.get("Dimensions"))
        .and_then(Value::as_array)
    {
        for d in dims {
            let name = d
                .get("name")
                .or_else(|| d.get("Name"))
                .and_then(Value::as_str);
            let value = d
                .get("value")
                .or_else(|| d.get("Value"))
                .and_then(Value::as_str);
            if let (Some(n), Some(v)) = (name, value) {
                dimensions.insert(n.to_string(), Value::String(v.to_string()));
            }
        }
    }
    let reason = text("NewStateReason");
    let name = text("AlarmName");
    let arn = text("AlarmArn");
    // A plain alarm names its metric in the trigger; a metric-math alarm lists metrics.
    let field = |k: &str| {
        trigger
            .and_then(|t| t.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let first_metric = trigger
        .and_then(|t| t.get("Metrics"))
        .and_then(Value::as_array)
        .and_then(|ms| ms.iter().find_map(|m| m.get("MetricStat")?.get("Metric")));
    let of_first = |k: &str| {
        first_metric
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let metric = field("MetricName")
        .or_else(|| of_first("MetricName"))
        .unwrap_or_default();
    let namespace = field("Namespace")
        .or_else(|| of_first("Namespace"))
        .unwrap_or_default();
    Alert {
        source: AlertSource::Cloudwatch,
        kind: PayloadKind::Sns,
        state: cloudwatch_state(&text("NewStateValue")),
        value: value_in_reason(&reason),
        threshold: trigger
            .and_then(|t| t.get("Threshold"))
            .and_then(Value::as_f64),
        reason,
        time: text("StateChangeTime"),
        fingerprint: if arn.is_empty() {
            format!("cloudwatch/{name}")
        } else {
            arn
        },
        name,
        metric,
        namespace,
        labels: Map::new(),
        dimensions,
        annotations: Map::new(),
        raw: raw.clone(),
    }
}

fn eventbridge(obj: &Map<String, Value>) -> Result<Payload, PayloadError> {
    let detail_type = obj.get("detail-type").and_then(Value::as_str).unwrap_or("");
    if detail_type != "CloudWatch Alarm State Change" {
        return Err(PayloadError::Unknown(format!(
            "an EventBridge event of type `{detail_type}` (only \"CloudWatch Alarm State Change\" starts runbooks)"
        )));
    }
    let detail = obj
        .get("detail")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            PayloadError::Unknown("an EventBridge alarm event without `detail`".into())
        })?;
    let state = detail.get("state").and_then(Value::as_object);
    let st = |k: &str| {
        state
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let reason_data: Option<Value> = state
        .and_then(|s| s.get("reasonData"))
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok());
    // The first metric with a statistic (a metric-math alarm lists expressions too).
    let metric = detail
        .get("configuration")
        .and_then(|c| c.get("metrics"))
        .and_then(Value::as_array)
        .and_then(|ms| ms.iter().find_map(|m| m.get("metricStat")?.get("metric")));
    let metric_text = |k: &str| {
        metric
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let dimensions = metric
        .and_then(|m| m.get("dimensions"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let reason = st("reason");
    let value = reason_data
        .as_ref()
        .and_then(|r| r.get("recentDatapoints"))
        .and_then(Value::as_array)
        .and_then(|d| d.last())
        .and_then(Value::as_f64)
        .or_else(|| value_in_reason(&reason));
    let threshold = reason_data
        .as_ref()
        .and_then(|r| r.get("threshold"))
        .and_then(Value::as_f64);
    let name = detail
        .get("alarmName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let fingerprint = obj
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str)
        .map_or_else(|| format!("cloudwatch/{name}"), str::to_string);
    Ok(Payload {
        kind: PayloadKind::Eventbridge,
        alerts: vec![Alert {
            source: AlertSource::Cloudwatch,
            kind: PayloadKind::Eventbridge,
            state: cloudwatch_state(&st("value")),
            time: st("timestamp"),
            name,
            reason,
            fingerprint,
            value,
            threshold,
            metric: metric_text("name"),
            namespace: metric_text("namespace"),
            labels: Map::new(),
            dimensions,
            annotations: Map::new(),
            raw: Value::Object(obj.clone()),
        }],
        subscribe_url: None,
    })
}

fn string_map(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), Value::String(text))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn alertmanager(obj: &Map<String, Value>) -> Result<Payload, PayloadError> {
    let version = obj.get("version").and_then(Value::as_str).unwrap_or("");
    if version != "4" {
        return Err(PayloadError::Unknown(format!(
            "an Alertmanager webhook of version `{version}` (version 4 is read)"
        )));
    }
    let mut alerts = Vec::new();
    for a in obj
        .get("alerts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let labels = string_map(a.get("labels"));
        let annotations = string_map(a.get("annotations"));
        let text = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let name = labels
            .get("alertname")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let annotation = |k: &str| annotations.get(k).and_then(Value::as_str);
        let fingerprint = match text("fingerprint") {
            f if !f.is_empty() => f,
            _ => format!(
                "alertmanager/{name}/{}",
                serde_json::to_string(&labels).unwrap_or_default()
            ),
        };
        alerts.push(Alert {
            source: AlertSource::Alertmanager,
            kind: PayloadKind::Alertmanager,
            state: if text("status") == "resolved" {
                AlertState::Resolved
            } else {
                AlertState::Firing
            },
            reason: annotation("summary")
                .or_else(|| annotation("description"))
                .unwrap_or("")
                .to_string(),
            time: text("startsAt"),
            value: annotation("value").and_then(|v| v.trim().parse().ok()),
            threshold: annotation("threshold").and_then(|v| v.trim().parse().ok()),
            metric: String::new(),
            namespace: String::new(),
            name,
            fingerprint,
            labels,
            dimensions: Map::new(),
            annotations,
            raw: a.clone(),
        });
    }
    Ok(Payload {
        kind: PayloadKind::Alertmanager,
        alerts,
        subscribe_url: None,
    })
}

fn webhook(obj: &Map<String, Value>, raw: &Value) -> Result<Payload, PayloadError> {
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str))
            .map(str::to_string)
    };
    let Some(name) = text(&["name", "alertname", "alert", "title"]) else {
        return Err(PayloadError::Unknown(
            "a JSON object without an alert name (`name`, `alertname`, `alert` or `title`)".into(),
        ));
    };
    let state = match text(&["state", "status"])
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("resolved" | "ok" | "closed" | "recovered") => AlertState::Resolved,
        Some("insufficient_data") => AlertState::InsufficientData,
        _ => AlertState::Firing,
    };
    let labels = string_map(obj.get("labels"));
    let number = |k: &str| {
        obj.get(k).and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
    };
    let fingerprint = text(&["fingerprint", "id"]).unwrap_or_else(|| {
        format!(
            "webhook/{name}/{}",
            serde_json::to_string(&labels).unwrap_or_default()
        )
    });
    Ok(Payload {
        kind: PayloadKind::Webhook,
        alerts: vec![Alert {
            source: AlertSource::Webhook,
            kind: PayloadKind::Webhook,
            state,
            reason: text(&["reason", "message", "description", "summary"]).unwrap_or_default(),
            time: text(&["time", "timestamp", "startsAt"]).unwrap_or_default(),
            value: number("value"),
            threshold: number("threshold"),
            metric: text(&["metric"]).unwrap_or_default(),
            namespace: text(&["namespace"]).unwrap_or_default(),
            fingerprint,
            name,
            labels,
            dimensions: string_map(obj.get("dimensions")),
            annotations: string_map(obj.get("annotations")),
            raw: raw.clone(),
        }],
        subscribe_url: None,
    })
}

/// What a runbook's triggers make of an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// The runbook.
    pub runbook: String,
    /// Which of its triggers matched (0-based).
    pub trigger: usize,
    /// The parameter values the trigger gives (before defaults and checks).
    pub params: Map<String, Value>,
    /// A parameter the trigger could not give: the run would not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The first trigger of `rb` that answers `alert`, with the parameters it gives; `None`
/// when none does. A trigger whose condition cannot be evaluated does not match (the
/// reason is in the error of the returned value only when a later step fails).
pub fn match_runbook(rb: &Runbook, alert: &Alert) -> Option<Match> {
    let mut scope = Map::new();
    scope.insert("alert".into(), alert.to_value());
    for (k, trigger) in rb.triggers.iter().enumerate() {
        if trigger.source.value != alert.source {
            continue;
        }
        if let Some(when) = &trigger.when {
            match crate::eval::evaluate(when, &scope) {
                Ok(o) if o.result => {}
                _ => continue,
            }
        }
        let mut params = Map::new();
        let mut error = None;
        for (name, expr) in &trigger.params {
            match crate::eval::value(expr, &scope) {
                Ok(Value::Null) => {
                    error.get_or_insert(format!(
                        "parameter `{name}`: `{}` gave no value for this alert",
                        expr.value
                    ));
                }
                Ok(v) => {
                    params.insert(name.clone(), v);
                }
                Err(e) => {
                    error.get_or_insert(format!("parameter `{name}`: {e}"));
                }
            }
        }
        return Some(Match {
            runbook: rb.name.value.clone(),
            trigger: k,
            params,
            error,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_value_from_a_cloudwatch_reason() {
        assert_eq!(
            value_in_reason(
                "Threshold Crossed: 1 datapoint [185.0 (23/11/26 03:00:00)] was greater"
            ),
            Some(185.0)
        );
        assert_eq!(value_in_reason("no datapoints"), None);
    }

    #[test]
    fn not_json_and_unknown_kinds_are_errors() {
        assert!(matches!(parse(b"{"), Err(PayloadError::NotJson(_))));
        assert!(matches!(parse(b"[1]"), Err(PayloadError::Unknown(_))));
        assert!(matches!(parse(b"{\"x\":1}"), Err(PayloadError::Unknown(_))));
        assert!(matches!(
            parse(br#"{"version":"3","alerts":[]}"#),
            Err(PayloadError::Unknown(_))
        ));
    }
}
