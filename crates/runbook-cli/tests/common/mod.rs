//! Real servers for the tests: moto (the AWS emulator) and a throwaway PostgreSQL, both on
//! 127.0.0.1. moto and the aws CLI come from `.venv` (`scripts/test` installs them).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn venv(tool: &str) -> PathBuf {
    let p = root().join(".venv/bin").join(tool);
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/test once, it installs moto and the aws CLI into .venv",
        p.display()
    );
    p
}

/// The journal of the only run recorded in `state`.
pub fn only_journal(state: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The moto endpoint, started on first use for this test binary. moto binds a port of its
/// own choosing (`-p 0`) and says which in its log, so no other process can take it in
/// between. A watchdog shell stops moto when the test process ends, however it ends.
pub fn moto() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    static LOG: OnceLock<tempfile::TempDir> = OnceLock::new();
    URL.get_or_init(|| {
        let dir = LOG.get_or_init(|| tempfile::tempdir().unwrap());
        let log = dir.path().join("moto.log");
        let script = format!(
            "{} -H 127.0.0.1 -p 0 >{} 2>&1 & m=$!; \
             while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill $m",
            venv("moto_server").display(),
            log.display(),
            std::process::id()
        );
        // Deliberately not waited for: it lives as long as this process.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text
                .split("Running on http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                break port;
            }
            assert!(Instant::now() < until, "moto_server did not start: {text}");
            std::thread::sleep(Duration::from_millis(100));
        };
        wait_for_port(port, "moto_server");
        format!("http://127.0.0.1:{port}")
    })
}

/// Point a command at moto with test credentials; never at a real account.
pub fn with_aws(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ENDPOINT_URL", moto())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
}

/// A directory with an `aws` that runs the real aws CLI with `--endpoint-url` of moto:
/// aws CLI v1's rds customization ignores `AWS_ENDPOINT_URL` and would go to
/// rds.amazonaws.com. Put it first on PATH for runbooks whose steps call `aws`.
pub fn aws_shim_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("aws");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\nexec {} --endpoint-url {} \"$@\"\n",
                venv("aws").display(),
                moto()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
    .path()
}

/// Run the real aws CLI against moto; its stdout.
pub fn aws_cli(args: &[&str]) -> String {
    let out = with_aws(&mut Command::new(aws_shim_dir().join("aws")))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A throwaway PostgreSQL cluster on a free port; stopped when dropped.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("pg_ctl").exists())
                    .max()
            })
            .expect("PostgreSQL server binaries in /usr/lib/postgresql/*/bin (scripts/test installs them)");
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root: run it as the postgres user then.
        let as_postgres = nix::unistd::getuid().is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres of the cluster directory");
        }
        let mut pg = Postgres {
            port: 0,
            dir,
            bin,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
            ],
        );
        // A free port can be taken by another process before the server binds it: then
        // pg_ctl fails and another port is tried.
        let log = pg.dir.path().join("log");
        for attempt in 1..=5 {
            pg.port = free_port();
            let opts = format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=50",
                pg.port,
                pg.dir.path().display()
            );
            let started = pg.try_run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-o",
                    &opts,
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "start",
                ],
            );
            match started {
                Ok(()) => break,
                Err(e) => assert!(attempt < 5, "{e}"),
            }
        }
        wait_for_port(pg.port, "PostgreSQL");
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        if let Err(e) = self.try_run(tool, args) {
            panic!("{e}");
        }
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Run SQL with psql; its output.
    pub fn sql(&self, query: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                query,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
            .output();
    }
}
