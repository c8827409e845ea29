//! `runbook serve` for real: the binary listens on 127.0.0.1, a local HTTP receiver
//! stands in for the chat webhook, alerts are posted as monitoring systems post them, and
//! the tests check what ran (the journal), what did not (marker files of acts) and what
//! reached the channel. Nothing waits on a clock: tests wait for the receiver to get a
//! message, for a journal to appear, or for the process to exit.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::root;

/// The chat webhook: every POST body, in order.
struct Receiver {
    url: String,
    got: mpsc::Receiver<(String, serde_json::Value)>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        use axum::routing::{get, post};
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tx, got) = mpsc::channel();
        let cert_dir = cert_dir().to_path_buf();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
        let app = axum::Router::new()
            .route(
                "/{channel}",
                post(
                    move |axum::extract::Path(channel): axum::extract::Path<String>,
                          body: axum::body::Bytes| {
                        let tx = std::sync::Arc::clone(&tx);
                        async move {
                            let v =
                                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                            let _ = tx.lock().unwrap().send((channel, v));
                            "ok"
                        }
                    },
                ),
            )
            .route(
                "/certs/cert.pem",
                get(move || {
                    let pem = std::fs::read_to_string(cert_dir.join("cert.pem")).unwrap();
                    async move { pem }
                }),
            );
        rt.spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got, _rt: rt }
    }

    /// The next message on `channel` (`slack` or `json`).
    fn next(&self, channel: &str) -> serde_json::Value {
        loop {
            let (c, v) = self
                .got
                .recv_timeout(Duration::from_secs(120))
                .expect("a message reached the webhook");
            if c == channel {
                return v;
            }
        }
    }
}

/// A throwaway key and self-signed certificate (openssl), made once.
fn cert_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sns.test",
                "-keyout",
            ])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl made a key");
        dir
    })
    .path()
}

/// Sign like SNS (SignatureVersion 2: SHA256withRSA).
fn sign(text: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' \"$TEXT\" | openssl dgst -sha256 -sign {} | base64 -w0",
            cert_dir().join("key.pem").display()
        ))
        .env("TEXT", text)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

struct Serve {
    child: Child,
    url: String,
    state: tempfile::TempDir,
    marker: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKEN: &str = "t0ken-for-tests";

/// `runbook serve` on a free port with a runbook whose act would leave a marker.
fn serve(receiver: &Receiver, extra_toml: &str) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("acted");
    let books = dir.path().join("runbooks");
    std::fs::create_dir(&books).unwrap();
    std::fs::write(
        books.join("conn.yaml"),
        format!(
            r#"apiVersion: runbook/v1
name: conn
title: Connections near the limit
triggers:
  - source: alertmanager
    when: alert.labels.alertname == "PostgresConnectionsHigh"
    params: {{ db: alert.labels.instance }}
  - source: cloudwatch
    when: alert.name == "rds-connections-high"
    params: {{ db: alert.dimensions.DBInstanceIdentifier }}
  - source: webhook
    when: alert.name == "conn_high"
    params: {{ db: alert.labels.db }}
params:
  db: {{ type: string, pattern: '^[a-z0-9-]+$' }}
steps:
  - id: count
    kind: check
    title: Connections on {{{{params.db}}}}
    shell: echo 185
    capture: {{ n: {{ stdout: int }} }}
  - id: terminate
    kind: act
    title: Terminate the long queries
    confirm: Terminate them on {{{{params.db}}}}?
    shell: touch {}
  - id: back
    kind: verify
    title: Connections back under the limit
    shell: echo 40
"#,
            marker.display()
        ),
    )
    .unwrap();
    serve_dir(receiver, &books, extra_toml, dir, marker)
}

/// `runbook serve` on a free port over the runbooks of `books`.
fn serve_dir(
    receiver: &Receiver,
    books: &Path,
    extra_toml: &str,
    dir: tempfile::TempDir,
    marker: PathBuf,
) -> Serve {
    let config = dir.path().join("runbook.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{extra_toml}\n[auth]\ntoken = \"{TOKEN}\"\n[webhooks]\nslack = \"{0}/slack\"\njson = \"{0}/json\"\n",
            receiver.url
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_SERVE_TOKEN")
        .args(["--dir"])
        .arg(books)
        .arg("--state-dir")
        .arg(state.path())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("{first}"))
        .trim()
        .to_string();
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        url,
        state,
        marker,
        _dir: dir,
    }
}

fn post(url: &str, auth: Option<&str>, body: &[u8]) -> (u16, serde_json::Value) {
    let mut args = vec![
        "-s".to_string(),
        "-o".into(),
        "-".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        "@-".into(),
    ];
    if let Some(a) = auth {
        args.push("-H".into());
        args.push(format!("Authorization: {a}"));
    }
    args.push(url.into());
    let mut child = Command::new("curl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/alerts").join(name)).unwrap()
}

fn journals(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("runs"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[test]
fn an_alert_starts_a_dry_run_and_its_findings_reach_the_channel() {
    let receiver = Receiver::start();
    let s = serve(&receiver, "");
    let (code, body) = post(
        &format!("{}/alertmanager", s.url),
        Some(&bearer()),
        &fixture("alertmanager.json"),
    );
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["started"][0]["runbook"], "conn", "{body}");
    // The resolved alert of the group gets a short follow-up, the firing one findings.
    let mut slack = Vec::new();
    let mut json = None;
    while json.is_none() || slack.len() < 2 {
        let (c, v) = receiver
            .got
            .recv_timeout(Duration::from_secs(120))
            .expect("findings reach the webhook");
        match c.as_str() {
            "slack" => slack.push(v["text"].as_str().unwrap().to_string()),
            "json" if v.get("run_id").is_some() => json = Some(v),
            _ => {}
        }
    }
    let findings = json.unwrap();
    let text = slack.iter().find(|t| t.contains("Runbook *conn*")).unwrap();
    assert!(text.contains("PostgresConnectionsHigh"), "{text}");
    assert!(text.contains("✓ count succeeded: n=185"), "{text}");
    assert!(
        text.contains("• terminate: `touch ") && text.contains("— Terminate them on prod-db?"),
        "{text}"
    );
    assert!(
        text.contains("Continue live: `runbook exec conn --params-from "),
        "{text}"
    );
    assert!(
        slack
            .iter()
            .any(|t| t.contains("is resolved: no run starts")),
        "{slack:?}"
    );
    assert_eq!(findings["status"], "succeeded");
    assert_eq!(findings["acts"][0]["step"], "terminate");
    // Journaled like any run, by the alert; the act never ran.
    let runs = journals(s.state.path());
    assert_eq!(runs.len(), 1, "{runs:?}");
    let journal = std::fs::read_to_string(&runs[0]).unwrap();
    assert!(journal.contains(r#""operator":"alert:alertmanager/PostgresConnectionsHigh""#));
    assert!(journal.contains(r#""mode":"dry-run""#));
    assert!(journal.contains(r#""fingerprint":"c1a2b3d4e5f60718""#));
    assert!(!s.marker.exists(), "an act ran from an alert");
}

#[test]
fn requests_without_the_secret_or_with_bad_bodies_start_nothing() {
    let receiver = Receiver::start();
    let s = serve(&receiver, "max_body = 4096\n");
    let url = format!("{}/alertmanager", s.url);
    let am = fixture("alertmanager.json");
    assert_eq!(post(&url, None, &am).0, 401);
    assert_eq!(post(&url, Some("Bearer nope"), &am).0, 401);
    assert_eq!(post(&url, Some("Basic cnVuYm9vazpub3Bl"), &am).0, 401);
    let (code, body) = post(&url, Some(&bearer()), b"{\"version\": ");
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let (code, body) = post(&url, Some(&bearer()), &fixture("eventbridge-disk.json"));
    assert_eq!(code, 400, "the wrong kind for the endpoint: {body}");
    let big = vec![b' '; 8192];
    assert_eq!(post(&url, Some(&bearer()), &big).0, 413);
    // SNS without a signature is refused (no shared-secret fallback unless configured).
    let (code, _) = post(
        &format!("{}/sns", s.url),
        Some(&bearer()),
        &fixture("sns-rds-connections.json"),
    );
    assert_eq!(code, 401);
    assert!(journals(s.state.path()).is_empty(), "nothing started");
    let health = post(&format!("{}/health", s.url), None, b"");
    assert_eq!(health.0, 405, "health is GET");
}

#[test]
fn a_hundred_notifications_of_one_alarm_start_one_run_and_health_keeps_answering() {
    let receiver = Receiver::start();
    let s = serve(&receiver, "");
    let url = format!("{}/webhook", s.url);
    let body = br#"{"name": "conn_high", "status": "firing", "labels": {"db": "prod-db"}, "fingerprint": "one-alarm"}"#;
    let started = std::sync::atomic::AtomicUsize::new(0);
    let health_ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..10 {
            scope.spawn(|| {
                for _ in 0..10 {
                    let (code, v) = post(&url, Some(&bearer()), body);
                    assert_eq!(code, 202, "{v}");
                    started.fetch_add(
                        v["started"].as_array().map_or(0, Vec::len),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..20 {
                let out = Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                    .arg(format!("{}/health", s.url))
                    .output()
                    .unwrap();
                if out.stdout == b"200" {
                    health_ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    });
    assert_eq!(started.into_inner(), 1, "one run for one alarm");
    assert_eq!(health_ok.into_inner(), 20, "health answered throughout");
    let _ = receiver.next("json");
    assert_eq!(journals(s.state.path()).len(), 1);
}

#[test]
fn sns_signatures_are_checked_against_a_certificate_from_an_allowed_host() {
    let receiver = Receiver::start();
    let s = serve(&receiver, "[sns]\ncert_hosts = [\"127.0.0.1\"]\n");
    let cert_url = format!("{}/certs/cert.pem", receiver.url);
    let message = serde_json::json!({
        "AlarmName": "rds-connections-high",
        "NewStateValue": "ALARM",
        "NewStateReason": "Threshold Crossed: 1 datapoint [185.0 (23/11/26 03:00:00)]",
        "StateChangeTime": "2026-11-23T03:01:00.000+0000",
        "Trigger": {"Dimensions": [{"name": "DBInstanceIdentifier", "value": "prod-db"}], "Threshold": 180.0}
    })
    .to_string();
    let signed = |message: &str, cert_url: &str| {
        let mut n = serde_json::json!({
            "Type": "Notification",
            "MessageId": "0b3c3f5e-1111-2222-3333-444455556666",
            "TopicArn": "arn:aws:sns:ap-northeast-1:123456789012:ops",
            "Subject": "ALARM: rds-connections-high",
            "Message": message,
            "Timestamp": "2026-11-23T03:01:00.123Z",
            "SignatureVersion": "2",
            "SigningCertURL": cert_url,
        });
        let text = format!(
            "Message\n{message}\nMessageId\n{}\nSubject\n{}\nTimestamp\n{}\nTopicArn\n{}\nType\nNotification\n",
            n["MessageId"].as_str().unwrap(),
            n["Subject"].as_str().unwrap(),
            n["Timestamp"].as_str().unwrap(),
            n["TopicArn"].as_str().unwrap()
        );
        n["Signature"] = sign(&text).into();
        n
    };
    let url = format!("{}/sns", s.url);
    // Tampered: signed, then the message changed.
    let mut tampered = signed(&message, &cert_url);
    tampered["Message"] = message.replace("prod-db", "other-db").into();
    let (code, v) = post(&url, None, tampered.to_string().as_bytes());
    assert_eq!(code, 401, "{v}");
    // A certificate on a host that is not allowed.
    let elsewhere = cert_url.replace("127.0.0.1", "localhost");
    let (code, v) = post(
        &url,
        None,
        signed(&message, &elsewhere).to_string().as_bytes(),
    );
    assert_eq!(code, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not on an allowed host"),
        "{v}"
    );
    assert!(journals(s.state.path()).is_empty());
    // Valid.
    let (code, v) = post(
        &url,
        None,
        signed(&message, &cert_url).to_string().as_bytes(),
    );
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["started"][0]["runbook"], "conn", "{v}");
    let findings = receiver.next("json");
    assert_eq!(findings["alert"]["name"], "rds-connections-high");
    assert!(!s.marker.exists());
}

#[test]
fn sigterm_lets_running_dry_runs_finish() {
    let receiver = Receiver::start();
    let mut s = serve(&receiver, "");
    let (code, _) = post(
        &format!("{}/alertmanager", s.url),
        Some(&bearer()),
        &fixture("alertmanager.json"),
    );
    assert_eq!(code, 202);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(s.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The run it had started ended and was journaled to its end.
    let runs = journals(s.state.path());
    assert_eq!(runs.len(), 1);
    let journal = std::fs::read_to_string(&runs[0]).unwrap();
    assert!(journal.contains(r#""event":"run_finished""#), "{journal}");
}

/// A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, installed by
/// scripts/test) with a webhook receiver pointing at `runbook serve`: an alert posted to
/// Alertmanager's API reaches the server and starts the diagnosis.
#[test]
fn a_real_alertmanager_delivers_an_alert_that_starts_the_diagnosis() {
    let binary = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prometheus-alertmanager is installed (scripts/test installs it)");
    let receiver = Receiver::start();
    let s = serve(&receiver, "");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: runbook\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: runbook\n    webhook_configs:\n      - url: {}/alertmanager\n        send_resolved: true\n\
             \x20       http_config:\n          authorization:\n            type: Bearer\n            credentials: {TOKEN}\n",
            s.url
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let am_url = format!("http://127.0.0.1:{port}");
    let mut am = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let ready = {
        let mut ready = false;
        for _ in 0..600 {
            if let Ok(Some(status)) = am.try_wait() {
                panic!("alertmanager exited: {status:?}");
            }
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("{am_url}/-/ready"))
                .output()
                .unwrap();
            if out.stdout == b"200" {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ready
    };
    let _am = Kill(am);
    assert!(ready, "alertmanager became ready");
    let alert = r#"[{"labels": {"alertname": "PostgresConnectionsHigh", "instance": "prod-db", "severity": "critical"},
                    "annotations": {"summary": "185 of 200 connections in use"}}]"#;
    let out = Command::new("curl")
        .args([
            "-s",
            "-f",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
        ])
        .arg(alert)
        .arg(format!("{am_url}/api/v2/alerts"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings = receiver.next("json");
    assert_eq!(
        findings["alert"]["name"], "PostgresConnectionsHigh",
        "{findings}"
    );
    assert_eq!(findings["alert"]["source"], "alertmanager");
    assert_eq!(findings["runbook"], "conn");
    assert_eq!(findings["status"], "succeeded");
    assert_eq!(findings["acts"][0]["step"], "terminate");
    assert_eq!(journals(s.state.path()).len(), 1);
    assert!(!s.marker.exists());
}

/// The library itself answers the seeds' alarms: an Alertmanager webhook with a disk
/// alert (node_exporter labels, the rule's threshold) starts `disk-full`'s checks on the
/// alerted mount point; the findings list what would be cleaned up, and nothing is.
#[test]
fn a_library_runbook_answers_a_disk_alert_with_its_checks_and_withholds_its_acts() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    // The logs the runbook lists are in its default log_dir, /var/log, and it lists only
    // logs on the alerted filesystem: the alert is for the filesystem that holds them.
    let mount = std::path::PathBuf::from("/var/log");
    let marker = dir.path().join("unused");
    let s = serve_dir(&receiver, &root().join("runbooks"), "", dir, marker);
    let alert = serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "runbook",
        "groupLabels": {"alertname": "NodeFilesystemAlmostFull"},
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "NodeFilesystemAlmostFull", "instance": "web-1:9100", "mountpoint": mount.display().to_string()},
            "annotations": {"summary": "filesystem almost full", "value": "93", "threshold": "1"},
            "startsAt": "2026-12-05T03:02:00Z",
            "fingerprint": "0f1e2d3c4b5a6978"
        }]
    });
    let (code, body) = post(
        &format!("{}/alertmanager", s.url),
        Some(&bearer()),
        alert.to_string().as_bytes(),
    );
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["started"][0]["runbook"], "disk-full", "{body}");
    let findings = loop {
        let v = receiver.next("json");
        if v.get("run_id").is_some() {
            break v;
        }
    };
    assert_eq!(findings["runbook"], "disk-full", "{findings}");
    let text = findings.to_string();
    // The checks ran live on the alerted mount point, with the rule's threshold.
    assert!(text.contains(&mount.display().to_string()), "{text}");
    assert!(text.contains("threshold"), "{text}");
    // The clean-up is listed as acts the on-call would approve, none executed.
    let acts = findings["acts"].as_array().unwrap();
    assert!(acts.iter().any(|a| a["step"] == "clean_logs"), "{findings}");
    let runs = journals(s.state.path());
    assert_eq!(runs.len(), 1, "{runs:?}");
    let journal = std::fs::read_to_string(&runs[0]).unwrap();
    assert!(journal.contains(r#""mode":"dry-run""#));
    assert!(journal.contains(r#""operator":"alert:alertmanager/NodeFilesystemAlmostFull""#));
    // Every act of the run ended not executed, and printed nothing.
    let events: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let acts: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step_started" && e["kind"] == "act")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert!(acts.contains(&"clean_logs"), "{journal}");
    for e in &events {
        if acts.contains(&e["step"].as_str().unwrap_or("")) {
            assert!(e["event"] != "output", "an act ran from an alert: {e}");
            if e["event"] == "step_finished" {
                assert_eq!(e["status"], "not_executed", "{e}");
            }
        }
    }
}
