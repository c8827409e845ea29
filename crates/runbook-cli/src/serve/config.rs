//! The server's settings: a TOML file (`--config`, else `runbook.toml` when present),
//! overridden by environment variables, overridden by flags. Secrets and webhook URLs come
//! from here, never from a request.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderMap;
use serde::Deserialize;

/// Arguments of `runbook serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Settings file (TOML); default: ./runbook.toml when it exists
    #[arg(long, value_name = "FILE", env = "RUNBOOK_SERVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:9095; port 0 picks a free one)
    #[arg(long, value_name = "ADDR", env = "RUNBOOK_SERVE_LISTEN")]
    pub listen: Option<String>,
    /// Do not start the same runbook for the same alert again within this time (default 10m)
    #[arg(long, value_name = "DURATION")]
    pub cooldown: Option<String>,
    /// Most dry runs at once (default 4)
    #[arg(long, value_name = "N")]
    pub max_runs: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    cooldown: Option<String>,
    max_runs: Option<usize>,
    max_body: Option<usize>,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    sns: FileSns,
    #[serde(default)]
    webhooks: FileWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    /// Bearer token (or the password of basic auth).
    token: Option<String>,
    /// Basic auth user name (the password is the token).
    user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSns {
    /// Hosts signing certificates and subscription URLs may come from (`*` matches one
    /// label).
    cert_hosts: Option<Vec<String>>,
    /// Accept SNS messages with the shared secret instead of a signature (emulators that
    /// cannot sign; never for real SNS).
    unsigned_with_token: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhooks {
    slack: Option<String>,
    json: Option<String>,
    attempts: Option<u32>,
}

/// Where findings go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// A Slack-compatible incoming webhook (`{"text": ...}`).
    Slack,
    /// The findings as a JSON document.
    Json,
}

impl WebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::Slack => "slack",
            WebhookKind::Json => "json",
        }
    }
}

/// Settings in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub cooldown: Duration,
    pub max_runs: usize,
    pub max_body: usize,
    token: Option<String>,
    user: Option<String>,
    cert_hosts: Vec<String>,
    unsigned_with_token: bool,
    slack: Option<String>,
    json: Option<String>,
    pub webhook_attempts: u32,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let path = args.config.clone().or_else(|| {
            let p = PathBuf::from("runbook.toml");
            p.exists().then_some(p)
        });
        let file: File = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => File::default(),
        };
        let cooldown_text = args
            .cooldown
            .clone()
            .or_else(|| env("RUNBOOK_SERVE_COOLDOWN"))
            .or(file.cooldown)
            .unwrap_or_else(|| "10m".into());
        let cooldown = humantime::parse_duration(&cooldown_text)
            .map_err(|e| anyhow::anyhow!("cooldown `{cooldown_text}`: {e}"))?;
        let config = Config {
            listen: args
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:9095".into()),
            cooldown,
            max_runs: args.max_runs.or(file.max_runs).unwrap_or(4).max(1),
            max_body: file.max_body.unwrap_or(256 * 1024),
            token: env("RUNBOOK_SERVE_TOKEN").or(file.auth.token),
            user: env("RUNBOOK_SERVE_USER").or(file.auth.user),
            cert_hosts: file
                .sns
                .cert_hosts
                .unwrap_or_else(|| vec!["sns.*.amazonaws.com".into()]),
            unsigned_with_token: file.sns.unsigned_with_token.unwrap_or(false),
            slack: env("RUNBOOK_SLACK_WEBHOOK").or(file.webhooks.slack),
            json: env("RUNBOOK_FINDINGS_WEBHOOK").or(file.webhooks.json),
            webhook_attempts: file.webhooks.attempts.unwrap_or(5).max(1),
        };
        if config.token.is_none() {
            anyhow::bail!(
                "runbook serve needs a shared secret: set RUNBOOK_SERVE_TOKEN or `[auth] token` in {}",
                path.map_or("runbook.toml".into(), |p| p.display().to_string())
            );
        }
        Ok(config)
    }

    pub fn webhooks(&self) -> Vec<(WebhookKind, String)> {
        let mut out = Vec::new();
        if let Some(u) = &self.slack {
            out.push((WebhookKind::Slack, u.clone()));
        }
        if let Some(u) = &self.json {
            out.push((WebhookKind::Json, u.clone()));
        }
        out
    }

    /// Bearer token or basic auth with the shared secret, compared in constant time.
    pub fn auth_secret(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(token) = &self.token else {
            return Err("no shared secret is configured".into());
        };
        let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err("missing Authorization (bearer token or basic auth)".into());
        };
        let ok = if let Some(t) = value.strip_prefix("Bearer ") {
            constant_time_eq(t.trim().as_bytes(), token.as_bytes())
        } else if let Some(b) = value.strip_prefix("Basic ") {
            let decoded = base64_decode(b.trim()).unwrap_or_default();
            let expected = format!("{}:{token}", self.user.as_deref().unwrap_or("runbook"));
            constant_time_eq(&decoded, expected.as_bytes())
        } else {
            false
        };
        if ok {
            Ok(())
        } else {
            Err("wrong credentials".into())
        }
    }

    /// SNS messages: a valid signature from an allowed host (see `sns::verify`), or with
    /// `unsigned_with_token`, the shared secret.
    pub async fn auth_sns(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        if self.unsigned_with_token {
            return self.auth_secret(headers);
        }
        super::sns::verify(body, &self.cert_hosts).await
    }

    /// Whether `url` is https (or http on loopback) on an allowed host.
    pub fn sns_host_allowed(&self, url: &str) -> bool {
        super::sns::host_allowed(url, &self.cert_hosts)
    }
}

/// Equal without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Standard base64 (with or without padding).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\n' | b'\r' | b' ' => continue,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_constant_time() {
        assert_eq!(
            base64_decode("cnVuYm9vazpzM2NyM3Q=").unwrap(),
            b"runbook:s3cr3t"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(base64_decode("!!").is_none());
    }
}
