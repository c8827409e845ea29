//! A run's parameters on the command line: `--param` and `--params-file`, Parameter
//! Store for `from: ssm:`, and the terminal prompt, resolved through
//! `runbook_exec::params`.

use anyhow::{Context as _, bail};
use runbook_core::model::{Param, Runbook};
use runbook_exec::backend::ParameterError;

use crate::terminal::prompt_param;

/// AWS settings for `ssm_*` steps and Parameter Store secrets.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsArgs {
    /// AWS region (default: the runbook's `aws.region`, else AWS_REGION)
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile (default: the runbook's `aws.profile`, else AWS_PROFILE)
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

impl AwsArgs {
    /// The library's settings, with the flag named where no region is found.
    pub(crate) fn settings(&self) -> runbook_exec::backend::AwsSettings {
        runbook_exec::backend::AwsSettings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            region_hint: Some("--region".into()),
        }
    }
}

/// A name given twice with --param: the last value counts, and the operator is told so
/// (a pasted command line with an old value left in it is an easy mistake at 3 a.m.).
pub(crate) fn warn_repeated(given: &[(String, String)]) {
    let mut seen = std::collections::BTreeMap::new();
    for (name, value) in given {
        if let Some(first) = seen.insert(name.as_str(), value.as_str()) {
            if first != value {
                crate::diagnostics::warning(&format!(
                    "--param {name} is given more than once; the last value counts: {name}={value}"
                ));
            }
        }
    }
}

/// Parameter Store, through the live backend, connected on first use (most runbooks
/// never need it).
struct ParameterStore {
    settings: runbook_exec::backend::AwsSettings,
    client: std::cell::OnceCell<Result<(tokio::runtime::Runtime, runbook_exec::Live), String>>,
}

impl ParameterStore {
    fn new(rb: &Runbook, aws: &AwsArgs) -> Self {
        ParameterStore {
            settings: aws.settings().or_runbook(rb),
            client: std::cell::OnceCell::new(),
        }
    }

    fn get(&self, path: &str) -> Result<String, ParameterError> {
        use runbook_exec::Backend as _;
        let client = self.client.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            let live = runbook_exec::Live::new(self.settings.clone()).map_err(|e| e.to_string())?;
            Ok((rt, live))
        });
        match client {
            Ok((rt, live)) => rt.block_on(live.parameter(path)),
            Err(e) => Err(ParameterError(e.clone())),
        }
    }
}

pub(crate) fn resolve(
    rb: &Runbook,
    given: &[(String, String)],
    file: &serde_json::Map<String, serde_json::Value>,
    file_is: &str,
    interactive: bool,
    aws: &AwsArgs,
) -> anyhow::Result<runbook_exec::params::Resolved> {
    let env_lookup = |name: &str| std::env::var(name).ok();
    let store = ParameterStore::new(rb, aws);
    let ssm_lookup = |path: &str| store.get(path);
    let mut ask = |name: &str, p: &Param| prompt_param(interactive, name, p);
    runbook_exec::params::resolve(
        rb,
        runbook_exec::params::Sources {
            given,
            given_is: "--param",
            file,
            file_is,
            env: &env_lookup,
            ssm: &ssm_lookup,
            ask: &mut ask,
        },
    )
    .map_err(|problems| {
        anyhow::anyhow!(
            "cannot run {}: {}\n  {}",
            rb.name.value,
            if problems.0.len() == 1 {
                "1 problem with its parameters".to_string()
            } else {
                format!("{} problems with its parameters", problems.0.len())
            },
            problems.0.join("\n  ")
        )
    })
}

/// A run that will need answers must be able to ask for them.
/// A `--params-file`: a YAML or JSON mapping of parameter names to values.
pub(crate) fn read_file(
    path: &std::path::Path,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read params file {}", path.display()))?;
    let node = runbook_core::yaml::parse(&text).map_err(|(msg, span)| {
        anyhow::anyhow!("{}:{}:{}: {msg}", path.display(), span.line, span.column)
    })?;
    match node.to_json() {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null => Ok(serde_json::Map::new()),
        other => bail!(
            "{}: expected a mapping of parameter names to values, found {}",
            path.display(),
            match other {
                serde_json::Value::Array(_) => "a list",
                _ => "a single value",
            }
        ),
    }
}
