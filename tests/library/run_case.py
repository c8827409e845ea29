#!/usr/bin/env python3
"""Run one end-to-end library case (see README.md beside this file).

Usage: run_case.py CASE.yaml

Environment: RUNBOOK (the binary), AWS_ENDPOINT_URL (a running moto), and optionally
AWS_CLI (the real aws CLI; default: .venv/bin/aws of the repository). Exit 0 when the
run took the expected path and `verify` passed; 1 with the differences otherwise.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def aws_shim(work):
    """A directory with an `aws` that always talks to moto."""
    real = os.environ.get("AWS_CLI") or os.path.join(ROOT, ".venv", "bin", "aws")
    if not os.path.exists(real):
        fail(f"the aws CLI is not at {real}: run scripts/test once, or set AWS_CLI")
    shim = os.path.join(work, "bin")
    os.makedirs(shim, exist_ok=True)
    path = os.path.join(shim, "aws")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec "{real}" --endpoint-url "$AWS_ENDPOINT_URL" "$@"\n')
    os.chmod(path, 0o755)
    return shim


def read_env(work):
    extra = {}
    path = os.path.join(work, "env")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    extra[k] = v
    return extra


def expand(value, env):
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
        lambda m: env.get(m.group(1), m.group(0)),
        str(value),
    )


def bash(script, env, what):
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        fail(f"{what} exited {res.returncode}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}")
    return res.stdout


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    case_path = sys.argv[1]
    with open(case_path) as f:
        case = yaml.safe_load(f)
    name = os.path.basename(case_path).removesuffix(".yaml")
    binary = os.environ.get("RUNBOOK") or os.path.join(ROOT, "target", "debug", "runbook")
    if "AWS_ENDPOINT_URL" not in os.environ:
        fail("AWS_ENDPOINT_URL is not set: start moto_server and point it there")

    work = tempfile.mkdtemp(prefix=f"rb-e2e-{name}-")
    try:
        env = dict(os.environ)
        env.update(
            {
                "PATH": aws_shim(work) + os.pathsep + env.get("PATH", ""),
                "AWS_DEFAULT_REGION": "ap-northeast-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_PAGER": "",
                "NO_COLOR": "1",
                "WORK": work,
                "CASE": name,
                "RUNBOOK_STATE_DIR": os.path.join(work, "state"),
            }
        )
        if case.get("setup"):
            bash(case["setup"], env, "setup")
        env.update(read_env(work))

        args = [binary, "exec", case["runbook"], "--output", "json", "--parallel", "1"]
        args += case.get("args", ["--yes", "--auto-manual"])
        for k, v in (case.get("params") or {}).items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            args += ["-p", f"{k}={expand(v, env)}"]
        run = subprocess.run(
            args, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        events = []
        for line in run.stdout.splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        transcript = f"$ {' '.join(args)}\n--- stdout\n{run.stdout}--- stderr\n{run.stderr}"

        problems = []
        finished = [e for e in events if e.get("event") == "run_finished"]
        status = finished[-1]["status"] if finished else None
        expect = case.get("expect") or {}
        want_status = expect.get("status", "succeeded")
        if status != want_status:
            problems.append(f"run status: expected {want_status}, got {status}")
        path = []
        for e in events:
            if e.get("event") == "step_started" and e.get("attempt", 1) == 1:
                path.append(e["step"])
        if "path" in expect and path != expect["path"]:
            problems.append(f"path:\n  expected {expect['path']}\n  got      {path}")
        final, captures = {}, {}
        for e in events:
            if e.get("event") == "step_finished":
                final[e["step"]] = e.get("status")
                captures[e["step"]] = e.get("captures") or {}
        for step, want in (expect.get("steps") or {}).items():
            if final.get(step) != want:
                problems.append(f"step {step}: expected {want}, got {final.get(step)}")
        for step, want in (expect.get("captures") or {}).items():
            for k, v in want.items():
                got = captures.get(step, {}).get(k)
                if got != v:
                    problems.append(f"capture {step}.{k}: expected {v!r}, got {got!r}")
        for text in expect.get("output") or []:
            if text not in run.stdout and text not in run.stderr:
                problems.append(f"the run's output does not contain {text!r}")
        if problems:
            fail("\n".join(problems) + "\n" + transcript)
        if case.get("verify"):
            bash(case["verify"], env, "verify")
        print(f"ok: {name}: {status}, path {path}")
    finally:
        if os.environ.get("KEEP_WORK"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
