//! AWS Systems Manager: Run Command (`ssm_command`), Automation (`ssm_automation`) and
//! Parameter Store secrets. One client per run, from the standard credential chain.
//!
//! Every AWS error is turned into a message that names the operation and says what to do.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::AutomationExecutionStatus;

use crate::action::{ActionResult, Io};
use crate::event::Stream;
use crate::ssm::{Automation, AutomationStep};

mod command;

pub use command::{BATCH, run_command};

/// A Systems Manager client.
#[derive(Debug, Clone)]
pub struct Aws {
    client: Client,
    region: String,
}

/// Why AWS could not be reached or answered with an error, in words for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AwsError(pub String);

impl From<String> for AwsError {
    fn from(s: String) -> Self {
        AwsError(s)
    }
}

impl From<&str> for AwsError {
    fn from(s: &str) -> Self {
        AwsError(s.to_string())
    }
}

impl Aws {
    /// Load the configuration and build the client. Fails without a region.
    /// `region` and `profile` win over the environment's; `region_hint` says how the
    /// front end takes a region (`--region`), named when none is found.
    pub async fn connect(
        region: Option<&str>,
        profile: Option<&str>,
        region_hint: Option<&str>,
    ) -> Result<Aws, AwsError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        if let Some(p) = profile {
            loader = loader.profile_name(p);
        }
        let config = loader.load().await;
        let Some(region) = config.region().map(|r| r.to_string()) else {
            let give =
                region_hint.map_or("give the run one".to_string(), |how| format!("pass {how}"));
            return Err(AwsError(format!(
                "no AWS region: {give}, set `aws: {{region: ...}}` in the runbook, or set AWS_REGION"
            )));
        };
        Ok(Aws {
            client: Client::new(&config),
            region,
        })
    }

    /// Wrap an existing client (tests with mocked responses).
    pub fn from_client(client: Client, region: &str) -> Aws {
        Aws {
            client,
            region: region.into(),
        }
    }

    /// Read a parameter from Parameter Store, decrypted.
    pub async fn parameter(&self, name: &str) -> Result<String, AwsError> {
        let out = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found())
                {
                    format!(
                        "parameter `{name}` does not exist in Parameter Store (region {})",
                        self.region
                    )
                } else {
                    explain("ssm:GetParameter", &e)
                }
            })?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| AwsError(format!("parameter `{name}` has no value")))
    }
}

/// An AWS error as an on-call engineer needs it: the operation, AWS's words, the fix.
pub fn explain<E>(
    operation: &str,
    err: &SdkError<E, aws_sdk_ssm::config::http::HttpResponse>,
) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, message) = match err {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("").to_string();
            let message = s.err().message().map_or_else(
                || {
                    format!(
                        "HTTP {} without an AWS error in the body (does the endpoint support this \
                         operation? check AWS_ENDPOINT_URL)",
                        s.raw().status().as_u16()
                    )
                },
                str::to_string,
            );
            (code, message)
        }
        other => {
            // The error and its causes, without the debug dump DisplayErrorContext adds.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let part = s.to_string();
                if !text.contains(&part) {
                    text.push_str(": ");
                    text.push_str(&part);
                }
                source = s.source();
            }
            (String::new(), text)
        }
    };
    let fix = match code.as_str() {
        "AccessDeniedException" | "AccessDenied" => {
            "the credentials in use lack this permission: check the IAM policy"
        }
        "InvalidInstanceId" => {
            "the instance does not exist, is not running, or is not managed by SSM (agent, instance profile)"
        }
        "InvalidDocument" => "the document does not exist in this account and region",
        "InvalidParameters" => "the document does not accept these parameters",
        "ThrottlingException" => "AWS is throttling requests; retry later or lower max_concurrency",
        "ExpiredTokenException" | "ExpiredToken" => {
            "the credentials expired: log in again (aws sso login)"
        }
        "UnrecognizedClientException" | "InvalidSignatureException" => {
            "the credentials are not valid for this account"
        }
        "" if message.contains("credentials") => {
            "no AWS credentials: set AWS_PROFILE, log in with aws sso login, or run on an instance with a role"
        }
        "" if message.contains("dispatch") || message.contains("connect") => {
            "AWS could not be reached: check the network and AWS_ENDPOINT_URL"
        }
        _ => "",
    };
    let mut text = format!("{operation} failed");
    if !code.is_empty() {
        text.push_str(&format!(": {code}"));
    }
    if !message.is_empty() {
        text.push_str(&format!(": {message}"));
    }
    if !fix.is_empty() {
        text.push_str(&format!(" ({fix})"));
    }
    text
}

/// Poll interval: 1s, growing to 5s.
pub(crate) fn next_interval(d: Duration) -> Duration {
    (d * 3 / 2).min(Duration::from_secs(5))
}

/// Wait `d`, unless the step's deadline passes or the run stops it first: then the
/// result that ends the action.
pub(crate) async fn pause(d: Duration, io: &Io<'_>) -> Option<ActionResult> {
    let mut kill = io.kill.clone();
    tokio::select! {
        () = tokio::time::sleep(d) => None,
        () = async { match io.deadline { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
            Some(ActionResult { timed_out: true, message: Some("timed out waiting for AWS".into()), ..ActionResult::default() })
        }
        _ = kill.wait_for(Option::is_some) => {
            Some(ActionResult { killed: true, message: Some("stopped".into()), ..ActionResult::default() })
        }
    }
}

/// Start an Automation execution and wait for it to end.
pub async fn run_automation(
    aws: &Aws,
    document: &str,
    version: Option<&str>,
    parameters: &BTreeMap<String, Vec<String>>,
    io: Io<'_>,
) -> ActionResult {
    let params: HashMap<String, Vec<String>> = parameters.clone().into_iter().collect();
    let started = aws
        .client
        .start_automation_execution()
        .document_name(document)
        .set_document_version(version.map(str::to_string))
        .set_parameters((!params.is_empty()).then_some(params))
        .send()
        .await;
    let id = match started {
        Ok(o) => match o.automation_execution_id() {
            Some(id) => id.to_string(),
            None => {
                return ActionResult {
                    message: Some("ssm:StartAutomationExecution returned no execution id".into()),
                    ..ActionResult::default()
                };
            }
        },
        Err(e) => {
            return ActionResult {
                message: Some(explain("ssm:StartAutomationExecution", &e)),
                ..ActionResult::default()
            };
        }
    };
    io.line(
        Stream::Stderr,
        &format!("automation execution {id} started"),
    );
    let mut interval = Duration::from_secs(1);
    let mut last = String::new();
    loop {
        let got = aws
            .client
            .get_automation_execution()
            .automation_execution_id(&id)
            .send()
            .await;
        let exec = match got {
            Ok(o) => o.automation_execution().cloned(),
            Err(e) => {
                return ActionResult {
                    message: Some(explain("ssm:GetAutomationExecution", &e)),
                    extra: crate::ssm::automation_extras(&automation(&id, None)),
                    ..ActionResult::default()
                };
            }
        };
        let status = exec
            .as_ref()
            .and_then(|e| e.automation_execution_status())
            .map_or("Pending", AutomationExecutionStatus::as_str)
            .to_string();
        if status != last {
            io.line(Stream::Stderr, &format!("status {status}"));
            last = status.clone();
        }
        if crate::ssm::automation_terminal(&status) {
            return crate::ssm::automation_result(&automation(&id, exec.as_ref()), &status, &io);
        }
        if let Some(mut stop) = pause(interval, &io).await {
            let stopped = aws
                .client
                .stop_automation_execution()
                .automation_execution_id(&id)
                .send()
                .await;
            let note = match stopped {
                Ok(_) => format!("automation {id} stopped"),
                Err(e) => explain("ssm:StopAutomationExecution", &e),
            };
            stop.message = Some(format!("{}; {note}", stop.message.unwrap_or_default()));
            stop.extra = crate::ssm::automation_extras(&automation(&id, exec.as_ref()));
            return stop;
        }
        interval = next_interval(interval);
    }
}

/// The SDK's execution as plain data.
fn automation(id: &str, exec: Option<&aws_sdk_ssm::types::AutomationExecution>) -> Automation {
    Automation {
        id: id.to_string(),
        outputs: exec
            .and_then(|e| e.outputs())
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        steps: exec
            .map(|e| {
                e.step_executions()
                    .iter()
                    .map(|s| AutomationStep {
                        name: s.step_name().map(str::to_string),
                        status: s.step_status().map(|x| x.as_str().to_string()),
                        failure: s.failure_message().map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        failure: exec.and_then(|e| e.failure_message()).map(str::to_string),
    }
}
