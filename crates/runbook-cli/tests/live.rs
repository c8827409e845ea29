//! Library runbooks run for real, end to end, against the parts they act on: a throwaway
//! PostgreSQL cluster, gpg with a throwaway key, S3 on moto, a tmpfs of known size in a
//! private mount namespace. (The AWS-only runbooks run from the data
//! cases of `tests/library/` in `library.rs`; the flagship `db-connection-error` in
//! `flagship.rs`.)
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Postgres, aws_cli, aws_shim_dir, root, with_aws};

fn runbook(state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    let path = format!(
        "{}:{}",
        aws_shim_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    with_aws(&mut cmd)
        .current_dir(root())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("RUNBOOK_STATE_DIR", state)
        .env_remove("RUNBOOK_PATH")
        .stdin(Stdio::null());
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The steps a `--output json` run started, in order.
fn path_of(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "step_started" && e["attempt"] == 1)
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect()
}

/// A throwaway gpg home with a key for `e2e@example.com` (no passphrase).
fn gpg_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = Command::new("gpg")
        .env("GNUPGHOME", home.path())
        .args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "e2e@example.com",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    home
}

/// `db-dump-backup` then `db-dump-restore`, encrypted (through S3) and plain (from the
/// local file): the table comes back whole both ways.
#[test]
fn pg_dump_backup_and_restore_round_trip_encrypted_and_plain() {
    let pg = Postgres::start();
    pg.sql("CREATE DATABASE app");
    let psql = |db: &str, sql: &str| {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-tAc", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    psql(
        "app",
        "CREATE TABLE users (id int PRIMARY KEY, name text); \
         INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 1000) g",
    );
    aws_cli(&["s3", "mb", "s3://rb-live-dumps"]);
    let gnupg = gpg_home();
    let state = tempfile::tempdir().unwrap();
    let port = format!("db_port={}", pg.port);
    for (encrypt, restored) in [(true, "restored_gpg"), (false, "restored_plain")] {
        let work = tempfile::tempdir().unwrap();
        let work_dir = format!("work_dir={}", work.path().display());
        let out = runbook(state.path())
            .env("GNUPGHOME", gnupg.path())
            .args([
                "exec",
                "db-dump-backup",
                "-p",
                "region=us-east-1",
                "--yes",
                "--auto-manual",
                "--output",
                "json",
            ])
            .args([
                "-p",
                &port,
                "-p",
                "database=app",
                "-p",
                "recipient=e2e@example.com",
            ])
            .args(["-p", &work_dir, "-p", "bucket=rb-live-dumps"])
            .args(["-p", &format!("encrypt={encrypt}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let path = path_of(&out);
        assert!(path.contains(&"upload".to_string()), "{path:?}");
        assert_eq!(
            path.contains(&"dump_encrypted".to_string()),
            encrypt,
            "{path:?}"
        );
        // What was uploaded is the file that was dumped.
        let listing = aws_cli(&["s3", "ls", "s3://rb-live-dumps/db/"]);
        let suffix = if encrypt { ".sql.gpg" } else { ".sql" };
        let key = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .find(|k| k.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in\n{listing}"))
            .to_string();
        psql("postgres", &format!("CREATE DATABASE {restored}"));
        let file = if encrypt {
            format!("file=s3://rb-live-dumps/db/{key}")
        } else {
            format!("file={}", work.path().join(&key).display())
        };
        let restore_work = tempfile::tempdir().unwrap();
        let out = runbook(state.path())
            .env("GNUPGHOME", gnupg.path())
            .args([
                "exec",
                "db-dump-restore",
                "-p",
                "region=us-east-1",
                "--yes",
                "--auto-manual",
                "--output",
                "json",
            ])
            .args([
                "-p",
                &port,
                "-p",
                &format!("database={restored}"),
                "-p",
                &file,
            ])
            .args(["-p", &format!("work_dir={}", restore_work.path().display())])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let load = if encrypt {
            "load_encrypted"
        } else {
            "load_plain"
        };
        assert!(
            path_of(&out).contains(&load.to_string()),
            "{:?}",
            path_of(&out)
        );
        assert_eq!(
            psql(restored, "SELECT count(*), sum(id) FROM users"),
            "1000|500500",
            "the {restored} copy is whole"
        );
    }
}

/// `disk-full` on a 10 MiB tmpfs (in a private mount namespace, so nothing outside the
/// test sees it) filled to 95% with old and new logs: only old `.log` files go, usage
/// falls under the threshold, and the RDS act is never reached.
#[test]
fn disk_full_deletes_only_old_logs_on_a_filesystem_of_known_size() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let result = dir.path().join("result");
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let script = format!(
        r#"set -eu
mount -t tmpfs -o size=10m tmpfs "{m}"
mkdir "{m}/logs"
for i in 1 2 3 4; do head -c 2097152 /dev/zero > "{m}/logs/old-$i.log"; done
head -c 524288 /dev/zero > "{m}/logs/old-notes.txt"
head -c 1048576 /dev/zero > "{m}/logs/new.log"
touch -d '10 days ago' "{m}"/logs/old-*
set +e
"$RUNBOOK" exec disk-full --yes --auto-manual --output json -p mount="{m}" -p log_dir="{m}/logs" -p threshold=90 -p log_age_days=7 -p db_instance=no-such-db -p region=us-east-1 > "{r}.events"
echo "exit=$?" > "{r}"
ls "{m}/logs" >> "{r}"
df --output=pcent "{m}" | tail -1 >> "{r}"
"#,
        m = mount.display(),
        r = result.display()
    );
    let mut cmd = if nix::unistd::Uid::effective().is_root() {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "bash", "-c", &script]);
        c
    } else {
        let mut c = Command::new("unshare");
        c.args([
            "--user",
            "--map-root-user",
            "--mount",
            "bash",
            "-c",
            &script,
        ]);
        c
    };
    let path = format!(
        "{}:{}",
        aws_shim_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = with_aws(&mut cmd)
        .current_dir(root())
        .env("PATH", path)
        .env("RUNBOOK", env!("CARGO_BIN_EXE_runbook"))
        .env("RUNBOOK_STATE_DIR", state.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "unshare/mount: {}", text(&out));
    let report = std::fs::read_to_string(&result).unwrap();
    let events = std::fs::read_to_string(format!("{}.events", result.display())).unwrap();
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("exit=0"), "{report}\n{events}");
    let files: Vec<&str> = lines.clone().take_while(|l| !l.contains('%')).collect();
    assert_eq!(files, ["new.log", "old-notes.txt"], "{report}");
    let pcent: u32 = report
        .lines()
        .last()
        .unwrap()
        .trim()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(pcent < 90, "usage after the clean-up: {pcent}%");
    let started: Vec<String> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "step_started" && e["attempt"] == 1)
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect();
    assert!(started.contains(&"clean_logs".to_string()), "{started:?}");
    assert!(!started.contains(&"extend_rds".to_string()), "{started:?}");
    assert!(
        !started.contains(&"prune_docker".to_string()),
        "{started:?}"
    );
}
