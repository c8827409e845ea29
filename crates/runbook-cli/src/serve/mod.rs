//! `runbook serve`: receive alerts over HTTP (SNS, EventBridge API destinations,
//! Alertmanager, generic webhooks), start a **dry run** of each runbook whose triggers
//! answer a firing alert, and post the findings to the incident channel.
//!
//! Each dry run is this binary run as `exec NAME --alert FILE --dry-run --output json`, so
//! it is journaled like any other run (operator `alert:<source>/<name>`, the alert in
//! `run_started`) and `audit show`/`resume` work on it; the server reads its events to
//! write the findings. Acts never run from an alert: the child always gets `--dry-run`.

mod config;
mod findings;
mod sns;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runbook_exec::alert::{self, Alert, AlertState, PayloadKind};
use serde_json::{Value, json};

use config::Config;
pub use config::ServeArgs;

use crate::{Cli, Exit};

/// Run `runbook serve` until SIGTERM or Ctrl-C; running dry runs finish first.
pub fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<Exit> {
    let config = Config::load(args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli, config))
}

/// What the server shares between requests.
struct Server {
    config: Config,
    /// `--dir` and `--state-dir` for the child runs.
    dirs: Vec<PathBuf>,
    state_dir: Option<PathBuf>,
    /// Runs in progress and recent starts, by `(runbook, fingerprint)`.
    starts: Mutex<Starts>,
    /// Dry runs in progress, for the bound and for shutdown.
    tasks: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
    http: reqwest::Client,
}

#[derive(Default)]
struct Starts {
    running: usize,
    last: HashMap<(String, String), Instant>,
    active: std::collections::HashSet<(String, String)>,
}

async fn run(cli: &Cli, config: Config) -> anyhow::Result<Exit> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let max_body = config.max_body;
    let server = Arc::new(Server {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        dirs: cli.dirs.clone(),
        state_dir: cli.state_dir.clone(),
        starts: Mutex::new(Starts::default()),
        tasks: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        config,
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/sns", post(sns))
        .route("/eventbridge", post(eventbridge))
        .route("/alertmanager", post(alertmanager))
        .route("/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Arc::clone(&server));
    // The address, for whoever started us (tests bind port 0).
    tracing::info!("listening on http://{addr}");
    crate::emit(&format!("runbook serve: listening on http://{addr}\n"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    crate::emit("runbook serve: stopping; waiting for running dry runs to finish\n")?;
    let mut tasks = server.tasks.lock().await;
    while tasks.join_next().await.is_some() {}
    crate::emit("runbook serve: stopped\n")?;
    Ok(Exit::Success)
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn health(State(server): State<Arc<Server>>) -> Response {
    let running = server.starts.lock().map(|s| s.running).unwrap_or(0);
    (
        StatusCode::OK,
        axum::Json(json!({"status": "ok", "running": running})),
    )
        .into_response()
}

fn reject(status: StatusCode, why: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": why.into()}))).into_response()
}

async fn sns(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let payload = match alert::parse(&body) {
        Ok(p) => p,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Err(why) = server.config.auth_sns(&headers, &body).await {
        return reject(StatusCode::UNAUTHORIZED, why);
    }
    if payload.kind == PayloadKind::SnsSubscription {
        return confirm_subscription(&server, payload.subscribe_url.as_deref()).await;
    }
    if payload.kind != PayloadKind::Sns {
        return reject(
            StatusCode::BAD_REQUEST,
            format!("/sns takes SNS messages, not {}", payload.kind.as_str()),
        );
    }
    handle(server, payload.alerts, &body).await
}

async fn confirm_subscription(server: &Server, url: Option<&str>) -> Response {
    let Some(url) = url else {
        return reject(
            StatusCode::BAD_REQUEST,
            "a subscription confirmation without SubscribeURL",
        );
    };
    if !server.config.sns_host_allowed(url) {
        return reject(
            StatusCode::BAD_REQUEST,
            "SubscribeURL is not on an allowed SNS host",
        );
    }
    match server.http.get(url).send().await {
        Ok(r) if r.status().is_success() => {
            (StatusCode::OK, axum::Json(json!({"confirmed": true}))).into_response()
        }
        Ok(r) => reject(
            StatusCode::BAD_GATEWAY,
            format!("confirming the subscription: HTTP {}", r.status()),
        ),
        Err(e) => reject(
            StatusCode::BAD_GATEWAY,
            format!("confirming the subscription: {e}"),
        ),
    }
}

async fn eventbridge(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    typed(server, headers, body, PayloadKind::Eventbridge).await
}

async fn alertmanager(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    typed(server, headers, body, PayloadKind::Alertmanager).await
}

async fn webhook(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = server.config.auth_secret(&headers) {
        return reject(StatusCode::UNAUTHORIZED, why);
    }
    match alert::parse(&body) {
        Ok(p) if p.kind != PayloadKind::SnsSubscription => handle(server, p.alerts, &body).await,
        Ok(_) => reject(StatusCode::BAD_REQUEST, "send SNS messages to /sns"),
        Err(e) => reject(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn typed(
    server: Arc<Server>,
    headers: HeaderMap,
    body: Bytes,
    kind: PayloadKind,
) -> Response {
    if let Err(why) = server.config.auth_secret(&headers) {
        return reject(StatusCode::UNAUTHORIZED, why);
    }
    match alert::parse(&body) {
        Ok(p) if p.kind == kind => handle(server, p.alerts, &body).await,
        Ok(p) => reject(
            StatusCode::BAD_REQUEST,
            format!(
                "this endpoint takes {} payloads, not {}",
                kind.as_str(),
                p.kind.as_str()
            ),
        ),
        Err(e) => reject(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Start a dry run for every firing alert and runbook that answers it (once per runbook
/// and fingerprint, not again within the cooldown, within the bound); post a short
/// follow-up for resolved ones.
async fn handle(server: Arc<Server>, alerts: Vec<Alert>, body: &[u8]) -> Response {
    let mut started = Vec::new();
    let mut skipped = Vec::new();
    for a in alerts {
        if a.state != AlertState::Firing {
            let text = findings::resolved_text(&a);
            let doc = json!({"alert": a.record(), "resolved": true});
            post_later(&server, text, doc).await;
            skipped.push(json!({"alert": a.name, "why": a.state.as_str()}));
            continue;
        }
        let found = match crate::alerts::find(&server.dirs, &a, None) {
            Ok(f) => f,
            Err(e) => return reject(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        };
        if found.is_empty() {
            skipped.push(json!({"alert": a.name, "why": "no runbook answers it"}));
        }
        for f in found {
            let runbook = f.matched.runbook.clone();
            if !f.problems.is_empty() {
                let text = findings::cannot_start_text(&a, &runbook, &f.problems);
                let doc = json!({"alert": a.record(), "runbook": runbook, "problems": f.problems});
                post_later(&server, text, doc).await;
                skipped.push(
                    json!({"alert": a.name, "runbook": runbook, "why": f.problems.join("; ")}),
                );
                continue;
            }
            let key = (runbook.clone(), a.fingerprint.clone());
            let verdict = {
                let Ok(mut s) = server.starts.lock() else {
                    return reject(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned");
                };
                if s.active.contains(&key) {
                    Err("a dry run for this alert is already running")
                } else if s
                    .last
                    .get(&key)
                    .is_some_and(|t| t.elapsed() < server.config.cooldown)
                {
                    Err("within the cooldown of the last run for this alert")
                } else if s.running >= server.config.max_runs {
                    Err("too many dry runs running; try again later")
                } else {
                    s.running += 1;
                    s.active.insert(key.clone());
                    s.last.insert(key.clone(), Instant::now());
                    Ok(())
                }
            };
            if let Err(why) = verdict {
                skipped.push(json!({"alert": a.name, "runbook": runbook, "why": why}));
                continue;
            }
            let path = f.loaded.path.clone();
            let one = findings::single_alert_payload(body, &a);
            let task_server = Arc::clone(&server);
            let task_alert = a.clone();
            server.tasks.lock().await.spawn(async move {
                dry_run(&task_server, &task_alert, &runbook, &path, &one).await;
                if let Ok(mut s) = task_server.starts.lock() {
                    s.running = s.running.saturating_sub(1);
                    s.active.remove(&key);
                }
            });
            started.push(json!({"alert": a.name, "runbook": f.matched.runbook}));
        }
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"started": started, "skipped": skipped})),
    )
        .into_response()
}

/// The dry run as a child process; its events become the findings.
async fn dry_run(
    server: &Server,
    a: &Alert,
    runbook: &str,
    path: &std::path::Path,
    payload: &[u8],
) {
    let file = match tempfile_with(payload) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot write the alert for {runbook}: {e}");
            return;
        }
    };
    let Ok(exe) = std::env::current_exe() else {
        tracing::error!("cannot find the runbook binary");
        return;
    };
    let mut cmd = tokio::process::Command::new(exe);
    for d in &server.dirs {
        cmd.arg("--dir").arg(d);
    }
    if let Some(s) = &server.state_dir {
        cmd.arg("--state-dir").arg(s);
    }
    cmd.arg("exec")
        .arg(path)
        .arg("--alert")
        .arg(file.path())
        .arg("--dry-run")
        .arg("--output")
        .arg("json")
        .arg("--operator")
        .arg(a.who())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    let out = match cmd.output().await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("cannot start the dry run of {runbook}: {e}");
            return;
        }
    };
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let f =
        findings::Findings::from_events(a, runbook, &events, &String::from_utf8_lossy(&out.stderr));
    spawn_post(server, f.text(), f.json()).await;
}

fn tempfile_with(bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new()?;
    f.write_all(bytes)?;
    f.flush()?;
    Ok(f)
}

/// Post in the background (shutdown waits for it), so the request is answered now.
async fn post_later(server: &Arc<Server>, text: String, doc: Value) {
    let s = Arc::clone(server);
    server
        .tasks
        .lock()
        .await
        .spawn(async move { spawn_post(&s, text, doc).await });
}

/// Post to every configured webhook, retrying with backoff; failures are logged.
async fn spawn_post(server: &Server, text: String, doc: Value) {
    let targets = server.config.webhooks();
    if targets.is_empty() {
        tracing::info!("findings (no webhook configured):\n{text}");
        return;
    }
    for (kind, url) in targets {
        let body = match kind {
            config::WebhookKind::Slack => json!({"text": text}),
            config::WebhookKind::Json => doc.clone(),
        };
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let result = server.http.post(&url).json(&body).send().await;
            match result {
                Ok(r) if r.status().is_success() => break,
                other => {
                    let why = match other {
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    if attempt >= server.config.webhook_attempts {
                        tracing::error!(
                            "posting findings to {url} failed after {attempt} attempts: {why}"
                        );
                        crate::diagnostics::warning(&format!(
                            "posting findings to the {} webhook failed after {attempt} attempts: {why}",
                            kind.as_str()
                        ));
                        break;
                    }
                    tracing::warn!("posting findings to {url}: {why}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
            }
        }
    }
}
