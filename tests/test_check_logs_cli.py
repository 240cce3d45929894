"""scripts/check_logs.py as cron runs it: a real subprocess, real files, a real state database."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from edgecron.state import open_state
from statedb import state_exists, state_rows
from test_install_locks import read_lock

STAMP = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def lines(count: int, *, path: str = "/page", status: int = 200, rt: float = 0.05) -> str:
    return "".join(
        f'198.51.100.1 - - [{STAMP}] "GET {path}?n={i} HTTP/1.1" {status} 10 "-" "ua" rt={rt:.3f} '
        f'urt="{rt:.3f}" cs=MISS ray=- cip=- li=0 cc="-"\n'
        for i in range(count)
    )


@pytest.fixture
def access_log(workdir: Path, env_file: Path) -> Path:
    log = workdir / "access.log"
    log.write_text(lines(100))
    with env_file.open("a") as fh:
        fh.write(f"ACCESS_LOGS={log}\nLOG_FORMAT=edgecron\n")
    return log


def cursor_offset(state_db: Path | str) -> int | None:
    rows = state_rows(state_db, 'SELECT "offset" FROM log_cursors')
    return rows[0][0] if rows else None


@pytest.mark.both_backends
def test_clean_log_is_silent_under_cron_and_rerun_reads_nothing(
    run_cli, access_log: Path, state_db: Path | str
) -> None:  # type: ignore[no-untyped-def]
    first = run_cli("check_logs.py")
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    assert cursor_offset(state_db) == access_log.stat().st_size
    again = run_cli("check_logs.py", "--json")
    doc = json.loads(again.stdout)
    assert again.returncode == 0
    assert doc["summary"]["lines"] == 0 and doc["summary"]["bytes_read"] == 0
    with access_log.open("a") as fh:
        fh.write(lines(7))
    third = json.loads(run_cli("check_logs.py", "--json").stdout)
    assert third["summary"]["lines"] == 7


def test_breach_exits_1_with_the_problem_on_stderr(run_cli, access_log: Path) -> None:  # type: ignore[no-untyped-def]
    with access_log.open("a") as fh:
        fh.write(lines(20, path="/checkout", status=503))
    result = run_cli("check_logs.py")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "BREACH [critical] 5xx_rate: 20 of 120 responses were 5xx" in result.stderr
    assert "/checkout: 20×5xx" in result.stderr


@pytest.mark.both_backends
def test_wrong_log_format_exits_2_and_saves_no_position(run_cli, access_log: Path, state_db: Path | str) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("check_logs.py", "--format", "combined")
    assert result.returncode == 2
    assert "LOG_FORMAT does not match the log: 100 of 100 lines did not parse" in result.stderr
    assert "first bad line: '198.51.100.1 - - [" in result.stderr
    assert "expected lines in the format 'combined'" in result.stderr
    assert "Traceback" not in result.stderr
    assert cursor_offset(state_db) is None
    fixed = json.loads(run_cli("check_logs.py", "--json").stdout)
    assert fixed["summary"]["requests"] == 100  # nothing was skipped by the failed run


def test_unknown_variable_is_a_usage_error(run_cli, access_log: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("check_logs.py", "--format", '$remote_addr "$request" $status $upstream_cach_status')
    assert result.returncode == 2
    assert "unknown nginx variable $upstream_cach_status" in result.stderr
    assert "$upstream_cache_status?" in result.stderr


@pytest.mark.both_backends
def test_dry_run_and_no_state_save_nothing(run_cli, access_log: Path, state_db: Path | str) -> None:  # type: ignore[no-untyped-def]
    for flag in ("--dry-run", "--no-state"):
        doc = json.loads(run_cli("check_logs.py", flag, "--json").stdout)
        assert doc["summary"]["requests"] == 100 and doc["summary"]["dry_run"] is True
    assert not state_exists(state_db)


def test_summary_table_and_help(run_cli, access_log: Path) -> None:  # type: ignore[no-untyped-def]
    table = run_cli("check_logs.py", "--summary")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["check", "status", "severity", "value", "threshold", "summary"]
    assert "100 lines, 100 requests, 0 malformed, 0 breached" in table.stdout
    help_text = run_cli("check_logs.py", "--help").stdout
    assert help_text.rstrip().splitlines()[-1].strip().startswith("check_logs.py --max-age 2h")


def test_bad_since_is_a_usage_error(run_cli, access_log: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("check_logs.py", "--since", "yesterday")
    assert result.returncode == 2
    assert "--since is not a time: got 'yesterday'" in result.stderr


@pytest.mark.both_backends
def test_failed_job_is_reported(run_cli, access_log: Path, state_db: Path | str) -> None:  # type: ignore[no-untyped-def]
    run_cli("check_logs.py")  # creates the state database
    with open_state(state_db) as db:
        db.execute(
            "INSERT INTO runs(run_id, job, started_at, finished_at, status, error) "
            "VALUES ('r1', 'import', '2026-11-28T10:00:00+00:00', '2026-11-28T10:01:00+00:00', 'failed', 'feed 500')"
        )
    result = run_cli("check_logs.py")
    assert result.returncode == 1
    assert "BREACH [critical] job_last_run:import: last import run ended failed" in result.stderr


def link_or_copy(source: str | Path, target: str | Path) -> None:
    if os.stat(source).st_mode & 0o004:  # a link shares the mode bits: only for what all may read
        with contextlib.suppress(OSError):  # another file system
            return os.link(source, target)
    shutil.copy2(source, target)


def readable_by_all(root: Path) -> None:
    """What a clone made under umask 077 lacks; a hard-linked file already readable is left alone."""
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            path.chmod(mode | 0o755)
        elif stat.S_ISREG(mode) and not mode & 0o004:
            path.chmod(mode | 0o444)


def install_outside_the_checkout(root: Path) -> Path:
    """scripts/, lib/ and a venv with the production packages, copied under `root`: the checkout
    may sit where `nobody` cannot reach it (a clone under a 0700 `mktemp -d` directory). Returns
    the venv's python."""
    repo = Path(__file__).resolve().parent.parent
    for name in ("scripts", "lib"):
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(repo / name, root / "app" / name, ignore=ignore, copy_function=link_or_copy)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    for requirement, _ in read_lock((repo / "requirements.lock").read_text(encoding="utf-8")).values():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        dist = importlib.metadata.distribution(requirement.name)
        for file in dist.files or ():
            source = Path(str(dist.locate_file(file)))
            if file.parts[0] != ".." and "__pycache__" not in file.parts and source.is_file():
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(source, site / file)
    readable_by_all(root)
    return venv / "bin" / "python"


def as_nobody(*command: str | Path) -> list[str]:
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *map(str, command)]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody")
def test_unreadable_log_names_the_group(base_env: dict[str, str]) -> None:
    """As on a server: the log is 0640 with a group the job's user is not in."""
    root = Path(tempfile.mkdtemp(prefix="edgecron-perm-"))  # pytest's tmp dirs are 0700
    try:
        python = install_outside_the_checkout(root)
        root.chmod(0o777)  # nobody creates its state directory here
        probe = subprocess.run(as_nobody(python, "-c", "pass"), capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"`nobody` cannot run this Python ({Path(sys.executable).resolve()}): {probe.stderr[-300:]}")
        log = root / "access.log"
        log.write_text(lines(5))
        log.chmod(0o640)  # root:root here; www-data:adm on Debian
        env = root / ".env"
        env.write_text(f"STATE_DIR={root / 'state'}\nACCESS_LOGS={log}\nLOG_FORMAT=edgecron\n")
        env.chmod(0o644)
        result = subprocess.run(
            as_nobody(python, root / "app" / "scripts" / "check_logs.py", "--no-jobs"),
            env={**base_env, "EDGECRON_ENV_FILE": str(env), "HOME": str(root)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(root)
    assert result.returncode == 1, result.stderr
    assert f"cannot read {log} (Permission denied)" in result.stderr
    assert "with group 'root': add this user to that group (sudo usermod -aG root $USER)" in result.stderr


def test_a_glob_never_follows_a_symlink_out_of_the_log_directory(run_cli, env_file: Path, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    """Whoever can write the log directory must not make the check quote .env as malformed lines."""
    logs = workdir / "logs"
    logs.mkdir()
    (logs / "site.access.log").write_text(lines(60))
    (logs / "evil.access.log").symlink_to(env_file)
    with env_file.open("a") as fh:
        fh.write(f"ACCESS_LOGS={logs}/*.access.log\nLOG_FORMAT=edgecron\nCF_API_TOKEN=tok-9f3e-very-secret\n")
    result = run_cli("check_logs.py", "--json")
    assert "tok-9f3e-very-secret" not in result.stdout + result.stderr
    doc = json.loads(result.stdout)
    [refused] = [f for f in doc["findings"] if f["check"] == "log_file_refused"]
    assert refused["value"] == str(logs / "evil.access.log")
    assert result.returncode == 1  # a breach: someone planted that link


# --- issue 11: LOG_FORMAT pasted as in nginx.conf, LOG_ESCAPE, and what --json tells -----------------

PASTED = """LOG_FORMAT=log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                  '$status $body_bytes_sent "$http_referer" '
                  '"$http_user_agent" "$http_x_forwarded_for"';
"""


def main_lines(count: int) -> str:
    return "".join(
        f'198.51.100.1 - alice [{STAMP}] "GET /p?n={i} HTTP/1.1" 200 10 "-" "ua \\x22q\\x22" "203.0.113.9"\n'
        for i in range(count)
    )


def checked(run_script, env_file: Path, log_text: str, settings: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """check_logs --json over a log of `log_text` with these .env lines; it must exit 0."""
    log = env_file.parent / "access.log"
    log.write_text(log_text)
    with env_file.open("a") as fh:
        fh.write(settings + f"ACCESS_LOGS={log}\n")
    result = run_script("check_logs.py", "--json", "--no-jobs")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["summary"]  # type: ignore[no-any-return]


def test_a_log_format_directive_pasted_over_lines_into_env_is_read(run_script, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    summary = checked(run_script, env_file, main_lines(60), PASTED)
    assert (summary["requests"], summary["malformed"]) == (60, 0)


def test_a_pasted_directive_without_its_semicolon_says_how_to_paste(run_cli, env_file: Path, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    with env_file.open("a") as fh:
        fh.write(PASTED.replace("';\n", "'\n") + f"ACCESS_LOGS={workdir / 'access.log'}\n")
    result = run_cli("check_logs.py")
    assert result.returncode == 2
    assert "is a log_format directive without its closing ';'" in result.stderr
    assert "pasted as is after LOG_FORMAT=, over as many lines as it takes" in result.stderr
    assert "not a known setting" not in result.stderr and "Traceback" not in result.stderr


JSON_FORMAT = '{"t":"$time_local","r":"$request","s":$status,"ua":"$http_user_agent","cs":"$upstream_cache_status"}'


def json_lines(count: int) -> str:
    return "".join(
        f'{{"t":"{STAMP}","r":"GET /q?x=\\"{i}\\" HTTP/1.1","s":200,"ua":"a \\\\ \\"b\\"","cs":"HIT"}}\n'
        for i in range(count)
    )


def test_a_bare_json_format_with_log_escape_json(run_script, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    summary = checked(run_script, env_file, json_lines(60), f"LOG_FORMAT='{JSON_FORMAT}'\nLOG_ESCAPE=json\n")
    assert (summary["requests"], summary["malformed"]) == (60, 0)
    assert summary["cache_status"] == {"variable": "upstream_cache_status", "counts": {"HIT": 60}}


def test_a_json_shaped_format_without_escape_json_gets_a_hint(run_cli, env_file: Path, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    log = workdir / "access.log"
    log.write_text(json_lines(60))
    with env_file.open("a") as fh:
        fh.write(f"ACCESS_LOGS={log}\nLOG_FORMAT='{JSON_FORMAT}'\n")
    result = run_cli("check_logs.py", "--no-jobs")
    assert result.returncode == 2  # every line has \" : the format does not match
    assert "Warning: LOG_FORMAT looks like JSON" in result.stderr
    assert "Hint: LOG_FORMAT looks like JSON" in result.stderr and "set LOG_ESCAPE=json" in result.stderr


def test_json_reports_statuses_cache_upstream_top_paths_and_malformed_places(
    run_cli, env_file: Path, workdir: Path
) -> None:  # type: ignore[no-untyped-def]
    log = workdir / "access.log"
    body = (
        lines(50)
        + lines(7, path="/gone", status=404)
        + lines(3, path="/api", status=502, rt=0.25)
        + lines(2, path="/", status=499)
        + "not a log line\n"
        + "x" * 3000
        + "\n"
        + lines(1).replace(" - - [", " [")
    )
    log.write_text(body)
    with env_file.open("a") as fh:
        fh.write(f"ACCESS_LOGS={log}\nLOG_FORMAT=edgecron\nLOG_MAX_LINE_BYTES=2048\n")
    result = run_cli("check_logs.py", "--json", "--no-jobs")
    doc = json.loads(result.stdout)
    s = doc["summary"]
    assert s["lines"] == 65 == s["requests"] + s["outside_window"] + s["malformed"]
    assert (s["malformed"], s["overlong"]) == (3, 1)
    assert s["statuses"] == {"200": 50, "404": 7, "499": 2, "502": 3}
    assert s["client_closed_499"] == 2 and s["status_classes"]["499"] == 2 and s["status_classes"]["4xx"] == 7
    assert s["cache_status"] == {"variable": "upstream_cache_status", "counts": {"MISS": 62}}
    assert s["upstream_response_time"]["sum"]["p99"] == 0.25 and s["upstream_response_time"]["last"]["p50"] == 0.05
    assert s["top_404_paths"] == [{"path": "/gone", "count": 7}]
    assert s["top_5xx_paths"] == [{"path": "/api", "count": 3}]
    assert [(m["file"], m["line"]) for m in s["malformed_lines"]] == [(str(log), 63), (str(log), 64), (str(log), 65)]
    table = run_cli("check_logs.py", "--summary", "--no-state", "--no-jobs")
    assert f"2xx ×50, 499 ×2, 4xx ×7, 5xx ×3; cache MISS ×62; first malformed line: {log}:63" in table.stdout
