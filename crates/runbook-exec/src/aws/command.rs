//! Run Command (`ssm_command`) across a fleet, within AWS's API limits.
//!
//! - `SendCommand` takes at most [`BATCH`] instance ids, so a longer list is sent as
//!   several commands (batches) and reported as one step. `max_concurrency` and
//!   `max_errors` keep their meaning across batches: an absolute concurrency N keeps at
//!   most N instances running in all (batches are sent in waves), an absolute error
//!   budget M stops sending batches once more than M invocations failed; percentages
//!   apply to each batch as they would to the whole.
//! - While commands run, one poll round costs O(1) calls: the aggregate counts of
//!   `ListCommands` (one command by id, several by one filtered listing). Per-instance
//!   results are read once, when a batch has finished (`ListCommandInvocations` with
//!   details, paginated). Where that operation is denied or missing, and the ids are
//!   known, each instance is read with `GetCommandInvocation` instead, and the output
//!   says so.
//! - Throttling answers are waited out with exponential backoff and jitter while the
//!   step's deadline allows, and reported as output lines, not failures.
//! - A timeout or a stop cancels every batch that was sent and has not finished.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{
    CloudWatchOutputConfig, Command, CommandFilter, CommandFilterKey, CommandInvocation,
    CommandInvocationStatus, Target,
};
use tokio::time::Instant;

use runbook_core::render::SsmCommandCall;

use super::{Aws, explain, next_interval, pause};
use crate::action::{ActionResult, Io};
use crate::event::Stream;
use crate::ssm::{Invocation, command_extras};

/// The most instance ids one `SendCommand` accepts.
pub const BATCH: usize = 50;

/// Why a call sequence ended early.
enum Stop {
    /// AWS answered with an error (the message names the operation).
    Failed(String),
    /// The deadline passed or the run stopped the step.
    Ended(ActionResult),
}

/// One `SendCommand` and what is known of it.
#[derive(Debug)]
struct Batch {
    /// Instance ids (empty: the command's tag targets).
    ids: Vec<String>,
    command_id: Option<String>,
    /// `ListCommands` status (`Pending`, `InProgress`, `Success`, ...).
    status: String,
    target: i32,
    completed: i32,
    errors: i32,
    /// Per-instance results, read once the command finished.
    results: Option<BTreeMap<String, Invocation>>,
}

impl Batch {
    fn new(ids: Vec<String>) -> Batch {
        Batch {
            ids,
            command_id: None,
            status: "Pending".into(),
            target: 0,
            completed: 0,
            errors: 0,
            results: None,
        }
    }

    fn finished(&self) -> bool {
        matches!(
            self.status.as_str(),
            "Success" | "Cancelled" | "Failed" | "TimedOut"
        )
    }

    fn running(&self) -> bool {
        self.command_id.is_some() && self.results.is_none()
    }
}

/// A `max_concurrency` / `max_errors` value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Limit {
    Count(usize),
    /// A percentage, or text AWS will judge: the same for every batch.
    Verbatim(String),
    Unset,
}

fn limit(text: Option<&str>) -> Limit {
    match text {
        None => Limit::Unset,
        Some(t) => t
            .trim()
            .parse()
            .map_or_else(|_| Limit::Verbatim(t.to_string()), Limit::Count),
    }
}

/// How many batches run at once, and the `MaxConcurrency` each gets, so that an absolute
/// concurrency holds for the whole fleet.
fn spread(max_concurrency: &Limit, batches: usize) -> (usize, Option<String>) {
    match max_concurrency {
        Limit::Count(n) => {
            let at_once = n.div_ceil(BATCH).clamp(1, batches.max(1));
            (at_once, Some((n / at_once).max(1).to_string()))
        }
        Limit::Verbatim(s) => (batches.max(1), Some(s.clone())),
        Limit::Unset => (batches.max(1), None),
    }
}

/// Whether AWS asked us to slow down.
fn throttled<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_ssm::config::http::HttpResponse>,
) -> bool {
    let code = err.code().unwrap_or("");
    matches!(
        code,
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded"
    ) || err
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 429)
}

/// Exponential backoff (1 s doubling, at most 20 s) with jitter: half to all of it.
fn backoff(attempt: u32) -> Duration {
    let full = Duration::from_secs(1)
        .saturating_mul(1 << attempt.min(5))
        .min(Duration::from_secs(20));
    full.mul_f64(0.5 + jitter() * 0.5)
}

/// A number in [0, 1), different call to call (xorshift over the clock).
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// One AWS call, throttling waited out while the step's deadline allows.
async fn call<T, E, F, Fut>(operation: &str, io: &Io<'_>, send: F) -> Result<T, Stop>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, aws_sdk_ssm::config::http::HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    call_allowing(operation, io, &[], send)
        .await?
        .ok_or_else(|| Stop::Failed(format!("{operation} failed")))
}

/// [`call`], where an error whose code is in `allowed` is `None` rather than a failure.
async fn call_allowing<T, E, F, Fut>(
    operation: &str,
    io: &Io<'_>,
    allowed: &[&str],
    mut send: F,
) -> Result<Option<T>, Stop>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, aws_sdk_ssm::config::http::HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut attempt = 0;
    loop {
        match send().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.code().is_some_and(|c| allowed.contains(&c)) => return Ok(None),
            Err(e) if throttled(&e) => {
                let wait = backoff(attempt);
                attempt += 1;
                io.line(
                    Stream::Stderr,
                    &format!(
                        "{operation}: throttled by AWS ({}), retrying in {:.1} s",
                        e.code().unwrap_or("HTTP 429"),
                        wait.as_secs_f64()
                    ),
                );
                if let Some(stop) = pause(wait, io).await {
                    return Err(Stop::Ended(stop));
                }
            }
            Err(e) => return Err(Stop::Failed(explain(operation, &e))),
        }
    }
}

/// Send `cmd` to one batch; the command id.
async fn send(
    aws: &Aws,
    cmd: &SsmCommandCall,
    ids: &[String],
    concurrency: Option<&str>,
    max_errors: Option<String>,
    io: &Io<'_>,
) -> Result<String, Stop> {
    let sent = call("ssm:SendCommand", io, || {
        let mut request = aws
            .client
            .send_command()
            .document_name(&cmd.document)
            .set_max_concurrency(concurrency.map(str::to_string))
            .set_max_errors(max_errors.clone())
            .set_comment(cmd.comment.clone())
            .set_output_s3_bucket_name(cmd.output_s3_bucket.clone())
            .set_output_s3_key_prefix(cmd.output_s3_prefix.clone());
        if !cmd.commands.is_empty() {
            request = request.parameters("commands", cmd.commands.to_vec());
        }
        for (k, v) in &cmd.parameters {
            request = request.parameters(k, v.clone());
        }
        if let Some(group) = &cmd.cloudwatch_log_group {
            request = request.cloud_watch_output_config(
                CloudWatchOutputConfig::builder()
                    .cloud_watch_log_group_name(group)
                    .cloud_watch_output_enabled(true)
                    .build(),
            );
        }
        if ids.is_empty() {
            for (k, v) in &cmd.tags {
                request = request.targets(
                    Target::builder()
                        .key(format!("tag:{k}"))
                        .set_values(Some(v.clone()))
                        .build(),
                );
            }
        } else {
            request = request.set_instance_ids(Some(ids.to_vec()));
        }
        request.send()
    })
    .await?;
    sent.command()
        .and_then(|c| c.command_id())
        .map(str::to_string)
        .ok_or_else(|| Stop::Failed("ssm:SendCommand returned no command id".into()))
}

/// One poll round: the aggregate state of every running batch from `ListCommands`.
async fn poll(
    aws: &Aws,
    batches: &mut [Batch],
    since: SystemTime,
    cmd: &SsmCommandCall,
    io: &Io<'_>,
) -> Result<(), Stop> {
    let running: Vec<String> = batches
        .iter()
        .filter(|b| b.running() && !b.finished())
        .filter_map(|b| b.command_id.clone())
        .collect();
    let mut seen: Vec<Command> = Vec::new();
    if let [only] = running.as_slice() {
        // Right after SendCommand the command may not be listed yet: for a minute, an
        // unknown id means "not yet".
        let allowed: &[&str] = if SystemTime::now()
            .duration_since(since)
            .is_ok_and(|d| d < Duration::from_secs(60))
        {
            &["InvalidCommandId"]
        } else {
            &[]
        };
        let out = call_allowing("ssm:ListCommands", io, allowed, || {
            aws.client.list_commands().command_id(only).send()
        })
        .await?;
        if let Some(out) = out {
            seen.extend(out.commands().iter().cloned());
        }
    } else if !running.is_empty() {
        // Every command of this step in one listing: sent since the step started, of
        // its document; pages followed until each running batch was seen.
        let after = humantime::format_rfc3339_seconds(since - Duration::from_secs(60)).to_string();
        let mut token: Option<String> = None;
        loop {
            let out = call("ssm:ListCommands", io, || {
                aws.client
                    .list_commands()
                    .filters(
                        CommandFilter::builder()
                            .key(CommandFilterKey::InvokedAfter)
                            .value(&after)
                            .build()
                            .unwrap_or_else(|_| unreachable!("key and value are set")),
                    )
                    .filters(
                        CommandFilter::builder()
                            .key(CommandFilterKey::DocumentName)
                            .value(&cmd.document)
                            .build()
                            .unwrap_or_else(|_| unreachable!("key and value are set")),
                    )
                    .max_results(50)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            seen.extend(out.commands().iter().cloned());
            token = out.next_token().map(str::to_string);
            let all_seen = running
                .iter()
                .all(|id| seen.iter().any(|c| c.command_id() == Some(id)));
            if all_seen || token.is_none() {
                break;
            }
        }
    }
    for c in seen {
        let Some(b) = batches
            .iter_mut()
            .find(|b| b.command_id.is_some() && b.command_id.as_deref() == c.command_id())
        else {
            continue;
        };
        b.status = c.status().map_or("Pending", |s| s.as_str()).to_string();
        b.target = c.target_count();
        b.completed = c.completed_count();
        b.errors = c.error_count() + c.delivery_timed_out_count();
    }
    Ok(())
}

/// The plugin output of `ListCommandInvocations` holds stdout, then stderr after AWS's
/// separator line.
fn split_output(output: &str) -> (String, String) {
    const SEPARATOR: &str = "----------ERROR-------";
    match output.split_once(SEPARATOR) {
        Some((out, err)) => (
            out.trim_end_matches('\n').to_string(),
            err.trim_start_matches('\n').to_string(),
        ),
        None => (output.to_string(), String::new()),
    }
}

fn from_list(inv: &CommandInvocation) -> Invocation {
    let plugins = inv.command_plugins();
    let output = plugins
        .iter()
        .filter_map(|p| p.output())
        .collect::<Vec<_>>()
        .join("\n");
    let (stdout, stderr) = split_output(&output);
    Invocation {
        status: inv
            .status()
            .map_or("Pending", CommandInvocationStatus::as_str)
            .to_string(),
        response_code: plugins.first().map_or(-1, |p| p.response_code()),
        stdout,
        stderr,
    }
}

/// Per-instance results of a finished batch.
async fn read_results(
    aws: &Aws,
    batch: &Batch,
    io: &Io<'_>,
) -> Result<BTreeMap<String, Invocation>, Stop> {
    let Some(command_id) = batch.command_id.as_deref() else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = call("ssm:ListCommandInvocations", io, || {
            aws.client
                .list_command_invocations()
                .command_id(command_id)
                .details(true)
                .max_results(50)
                .set_next_token(token.clone())
                .send()
        })
        .await;
        let page = match page {
            Ok(p) => p,
            Err(Stop::Failed(why)) if !batch.ids.is_empty() => {
                io.line(
                    Stream::Stderr,
                    &format!("{why}; reading each instance with ssm:GetCommandInvocation"),
                );
                return read_each(aws, command_id, &batch.ids, io).await;
            }
            Err(e) => return Err(e),
        };
        for inv in page.command_invocations() {
            if let Some(id) = inv.instance_id() {
                out.insert(id.to_string(), from_list(inv));
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Per-instance results, one `GetCommandInvocation` each.
async fn read_each(
    aws: &Aws,
    command_id: &str,
    ids: &[String],
    io: &Io<'_>,
) -> Result<BTreeMap<String, Invocation>, Stop> {
    let mut out = BTreeMap::new();
    for id in ids {
        let o = call("ssm:GetCommandInvocation", io, || {
            aws.client
                .get_command_invocation()
                .command_id(command_id)
                .instance_id(id)
                .send()
        })
        .await?;
        out.insert(
            id.clone(),
            Invocation {
                status: o
                    .status()
                    .map_or("Pending", CommandInvocationStatus::as_str)
                    .to_string(),
                response_code: o.response_code(),
                stdout: o.standard_output_content().unwrap_or_default().to_string(),
                stderr: o.standard_error_content().unwrap_or_default().to_string(),
            },
        );
    }
    Ok(out)
}

/// Cancel every batch that was sent and has not finished; a note for the message.
async fn cancel_all(aws: &Aws, batches: &[Batch]) -> String {
    let mut notes = Vec::new();
    for b in batches.iter().filter(|b| b.running() && !b.finished()) {
        let Some(id) = b.command_id.as_deref() else {
            continue;
        };
        match aws.client.cancel_command().command_id(id).send().await {
            Ok(_) => notes.push(format!("command {id} cancelled")),
            Err(e) => notes.push(explain("ssm:CancelCommand", &e)),
        }
    }
    notes.join("; ")
}

/// The command ids of the step, comma-separated (one per batch sent).
fn ids_of(batches: &[Batch]) -> String {
    batches
        .iter()
        .filter_map(|b| b.command_id.as_deref())
        .collect::<Vec<_>>()
        .join(",")
}

fn results_of(batches: &[Batch]) -> BTreeMap<String, Invocation> {
    batches
        .iter()
        .filter_map(|b| b.results.as_ref())
        .flat_map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect()
}

/// Send a command to every target, wait until every batch has finished, and report per
/// instance.
pub async fn run_command(aws: &Aws, cmd: &SsmCommandCall, io: Io<'_>) -> ActionResult {
    let groups: Vec<Vec<String>> = if cmd.instance_ids.is_empty() {
        vec![Vec::new()]
    } else {
        cmd.instance_ids
            .chunks(BATCH)
            .map(<[String]>::to_vec)
            .collect()
    };
    let several = groups.len() > 1;
    let mut batches: Vec<Batch> = groups.into_iter().map(Batch::new).collect();
    let (at_once, concurrency) = spread(&limit(cmd.max_concurrency.as_deref()), batches.len());
    let error_budget = limit(cmd.max_errors.as_deref());
    let since = SystemTime::now();
    let started = Instant::now();
    let mut interval = Duration::from_secs(1);
    let mut last_progress = String::new();
    let mut not_sent: Option<String> = None;

    let failed = |batches: &[Batch], message: String| ActionResult {
        message: Some(message),
        extra: command_extras(&ids_of(batches), &results_of(batches)),
        ..ActionResult::default()
    };
    loop {
        // Send what may run now.
        while not_sent.is_none() {
            let running = batches.iter().filter(|b| b.running()).count();
            let Some(next) = batches.iter().position(|b| b.command_id.is_none()) else {
                break;
            };
            if running >= at_once {
                break;
            }
            let errors: i32 = batches.iter().map(|b| b.errors).sum();
            let errors = usize::try_from(errors).unwrap_or(0);
            let max_errors = match &error_budget {
                Limit::Count(m) if errors > *m => {
                    let left: usize = batches
                        .iter()
                        .filter(|b| b.command_id.is_none())
                        .map(|b| b.ids.len())
                        .sum();
                    not_sent = Some(format!(
                        "max_errors {m} exceeded ({errors} failed): {left} instances not sent"
                    ));
                    break;
                }
                Limit::Count(m) => Some((m - errors).to_string()),
                Limit::Verbatim(s) => Some(s.clone()),
                Limit::Unset => None,
            };
            match send(
                aws,
                cmd,
                &batches[next].ids,
                concurrency.as_deref(),
                max_errors,
                &io,
            )
            .await
            {
                Ok(id) => {
                    let b = &mut batches[next];
                    if several {
                        io.line(
                            Stream::Stderr,
                            &format!("command {id} sent to {} instances", b.ids.len()),
                        );
                    } else {
                        io.line(Stream::Stderr, &format!("command {id} sent"));
                    }
                    b.command_id = Some(id);
                }
                Err(stop) => {
                    let note = cancel_all(aws, &batches).await;
                    return ended(stop, &batches, &note);
                }
            }
        }

        if let Err(stop) = poll(aws, &mut batches, since, cmd, &io).await {
            let note = cancel_all(aws, &batches).await;
            return ended(stop, &batches, &note);
        }
        // Tag targets: no target yet may mean they are still being resolved; after a
        // while, or once the command ended with none, it means they match nothing.
        if cmd.instance_ids.is_empty() && batches[0].target == 0 {
            let b = &batches[0];
            if b.finished() || started.elapsed() > Duration::from_secs(30) {
                let id = b.command_id.clone().unwrap_or_default();
                if !b.finished() {
                    let _ = cancel_all(aws, &batches).await;
                }
                return failed(
                    &batches,
                    format!("the tag targets matched no instance (command {id})"),
                );
            }
        }

        for i in 0..batches.len() {
            if batches[i].running() && batches[i].finished() {
                match read_results(aws, &batches[i], &io).await {
                    Ok(r) => batches[i].results = Some(r),
                    Err(stop) => {
                        let note = cancel_all(aws, &batches).await;
                        return ended(stop, &batches, &note);
                    }
                }
            }
        }

        let total: usize = if cmd.instance_ids.is_empty() {
            usize::try_from(batches[0].target).unwrap_or(0)
        } else {
            cmd.instance_ids.len()
        };
        let done: usize = batches
            .iter()
            .map(|b| usize::try_from(b.completed).unwrap_or(0))
            .sum();
        let progress = format!("{done} of {total} instances done");
        if progress != last_progress {
            io.line(Stream::Stderr, &progress);
            last_progress = progress;
        }

        let unsent = batches.iter().any(|b| b.command_id.is_none());
        if batches.iter().all(|b| !b.running()) && (!unsent || not_sent.is_some()) {
            break;
        }
        if let Some(mut stop) = pause(interval, &io).await {
            let note = cancel_all(aws, &batches).await;
            stop.message = Some(join(stop.message.unwrap_or_default(), &note));
            stop.extra = command_extras(&ids_of(&batches), &results_of(&batches));
            return stop;
        }
        interval = next_interval(interval);
    }
    let mut result = crate::ssm::command_result(&ids_of(&batches), &results_of(&batches), &io);
    if let Some(why) = not_sent {
        result.ok = false;
        result.message = Some(join(result.message.unwrap_or_default(), &why));
    }
    result
}

fn join(a: String, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a,
        (true, false) => b.to_string(),
        (false, false) => format!("{a}; {b}"),
    }
}

/// The result of a step stopped by an AWS error, the deadline or the run.
fn ended(stop: Stop, batches: &[Batch], note: &str) -> ActionResult {
    let extra = command_extras(&ids_of(batches), &results_of(batches));
    match stop {
        Stop::Failed(message) => ActionResult {
            message: Some(join(message, note)),
            extra,
            ..ActionResult::default()
        },
        Stop::Ended(mut r) => {
            r.message = Some(join(r.message.unwrap_or_default(), note));
            r.extra = extra;
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_holds_across_batches() {
        assert_eq!(spread(&Limit::Count(10), 20), (1, Some("10".into())));
        assert_eq!(spread(&Limit::Count(100), 20), (2, Some("50".into())));
        assert_eq!(spread(&Limit::Count(120), 20), (3, Some("40".into())));
        assert_eq!(spread(&Limit::Count(5000), 20), (20, Some("250".into())));
        assert_eq!(spread(&Limit::Count(3), 1), (1, Some("3".into())));
        assert_eq!(
            spread(&Limit::Verbatim("25%".into()), 20),
            (20, Some("25%".into()))
        );
        assert_eq!(spread(&Limit::Unset, 3), (3, None));
        assert_eq!(limit(Some("7")), Limit::Count(7));
        assert_eq!(limit(Some("10%")), Limit::Verbatim("10%".into()));
    }

    #[test]
    fn plugin_output_splits_at_the_error_separator() {
        assert_eq!(
            split_output("ok\n----------ERROR-------\nwarn\n"),
            ("ok".into(), "warn\n".into())
        );
        assert_eq!(split_output("ok\n"), ("ok\n".into(), String::new()));
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_ceiling() {
        for attempt in 0..10 {
            let full = Duration::from_secs(1 << attempt.min(5)).min(Duration::from_secs(20));
            let d = backoff(attempt);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
