//! Where actions' results come from: the one seam between the engine and the world.
//!
//! The engine decides *whether* an action runs (a dry run withholds acts; that is engine
//! policy, not a backend) and what its result means (captures, `expect`, routing). A
//! [`Backend`] only runs it: [`Live`] runs shell commands, sends HTTP requests, waits and
//! calls AWS Systems Manager; a scripted backend (the engine tests, `runbook test`)
//! answers from a script without touching anything.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use runbook_core::render::RenderedAction;

use crate::action::{self, ActionResult, Io};

/// The live backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct SetupError(String);

/// A Parameter Store value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParameterError(pub String);

/// A boxed future, as backends return them (the trait must stay object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs actions.
pub trait Backend: Send + Sync {
    /// Run `action` for step `step` and report how it went. Output lines go to
    /// `io.emit` as they come; `io.deadline` and `io.kill` say when to stop.
    fn run<'a>(
        &'a self,
        step: &'a str,
        action: &'a RenderedAction,
        io: Io<'a>,
    ) -> BoxFuture<'a, ActionResult>;

    /// Read a value from Parameter Store (a secret parameter's `from: ssm:`).
    fn parameter<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<String, ParameterError>>;
}

/// Where AWS calls go: the front end's settings win over the runbook's `aws:`, which win
/// over the environment (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// Region.
    pub region: Option<String>,
    /// Named profile.
    pub profile: Option<String>,
    /// How the front end takes a region (the CLI: `--region R`), named when no region is
    /// found; the library knows no flags.
    pub region_hint: Option<String>,
}

impl AwsSettings {
    /// These settings, with the runbook's `aws:` where these have none.
    pub fn or_runbook(&self, runbook: &runbook_core::Runbook) -> AwsSettings {
        let from_runbook = runbook.aws.clone().unwrap_or_default();
        AwsSettings {
            region: self.region.clone().or(from_runbook.region),
            profile: self.profile.clone().or(from_runbook.profile),
            region_hint: self.region_hint.clone(),
        }
    }
}

/// The real world: processes, HTTP and AWS.
pub struct Live {
    http: reqwest::Client,
    #[cfg(feature = "aws")]
    aws_settings: AwsSettings,
    /// Created on first use: runbooks without AWS steps never load AWS configuration.
    #[cfg(feature = "aws")]
    aws: tokio::sync::OnceCell<Result<crate::aws::Aws, crate::aws::AwsError>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// A live backend; AWS calls go where `aws` says.
    pub fn new(aws: AwsSettings) -> Result<Live, SetupError> {
        #[cfg(not(feature = "aws"))]
        let _ = aws;
        let http = reqwest::Client::builder()
            .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SetupError(e.to_string()))?;
        Ok(Live {
            http,
            #[cfg(feature = "aws")]
            aws_settings: aws,
            #[cfg(feature = "aws")]
            aws: tokio::sync::OnceCell::new(),
        })
    }

    /// The run's AWS client, created on first use.
    #[cfg(feature = "aws")]
    async fn aws(&self) -> Result<&crate::aws::Aws, crate::aws::AwsError> {
        let result = self
            .aws
            .get_or_init(|| async {
                let s = &self.aws_settings;
                crate::aws::Aws::connect(
                    s.region.as_deref(),
                    s.profile.as_deref(),
                    s.region_hint.as_deref(),
                )
                .await
            })
            .await;
        result.as_ref().map_err(Clone::clone)
    }
}

#[cfg(not(feature = "aws"))]
const NO_AWS: &str = "AWS Systems Manager needs runbook built with the `aws` feature";

impl Backend for Live {
    fn run<'a>(
        &'a self,
        _step: &'a str,
        action: &'a RenderedAction,
        io: Io<'a>,
    ) -> BoxFuture<'a, ActionResult> {
        Box::pin(async move {
            match action {
                RenderedAction::Shell {
                    run,
                    env,
                    cwd,
                    interpreter,
                } => action::shell(run, env, cwd.as_deref(), interpreter, io).await,
                RenderedAction::Http {
                    method,
                    url,
                    headers,
                    body,
                    status,
                } => {
                    action::http(
                        &self.http,
                        method,
                        url,
                        headers,
                        body.as_deref(),
                        status,
                        io,
                    )
                    .await
                }
                RenderedAction::Wait { ms, .. } => {
                    action::wait(Duration::from_millis(*ms), io).await
                }
                // The operator has acknowledged it: that is the whole action.
                RenderedAction::Manual { .. } => ActionResult {
                    ok: true,
                    ..ActionResult::default()
                },
                #[cfg(feature = "aws")]
                RenderedAction::SsmCommand(call) => match self.aws().await {
                    Ok(aws) => crate::aws::run_command(aws, call, io).await,
                    Err(e) => ActionResult::failed(e.to_string()),
                },
                #[cfg(feature = "aws")]
                RenderedAction::SsmAutomation {
                    document,
                    document_version,
                    parameters,
                } => match self.aws().await {
                    Ok(aws) => {
                        crate::aws::run_automation(
                            aws,
                            document,
                            document_version.as_deref(),
                            parameters,
                            io,
                        )
                        .await
                    }
                    Err(e) => ActionResult::failed(e.to_string()),
                },
                #[cfg(not(feature = "aws"))]
                RenderedAction::SsmCommand(_) | RenderedAction::SsmAutomation { .. } => {
                    ActionResult::failed(format!("{NO_AWS} to run this step"))
                }
            }
        })
    }

    fn parameter<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<String, ParameterError>> {
        Box::pin(async move {
            #[cfg(feature = "aws")]
            {
                let aws = self.aws().await.map_err(|e| ParameterError(e.0))?;
                aws.parameter(path).await.map_err(|e| ParameterError(e.0))
            }
            #[cfg(not(feature = "aws"))]
            {
                Err(ParameterError(format!(
                    "reading `{path}` from Parameter Store: {NO_AWS}; give the value as a parameter instead"
                )))
            }
        })
    }
}
