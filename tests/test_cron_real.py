"""The crontab `jobs.py crontab` prints, run the way cron runs it, against the demo servers.

Comparing the crontab's text proved nothing: every line failed under cron for months because the
crontab's own `EDGECRON_HOME=` was refused by the settings check. So each line is run twice over:
- in cron's exact environment: only HOME, LOGNAME, SHELL=/bin/sh, PATH=/usr/bin:/bin and the
  crontab's own assignments (what Debian's cron gives a job, like `env -i`), cwd = HOME, the command
  through `/bin/sh -c`;
- by the real Debian cron daemon, from a file in /etc/cron.d (root only; skipped without cron).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, start_demo_serve
from dotenv import dotenv_values
from edgecron.schedule import JOBS

VENV_PYTHON = ROOT / ".venv" / "bin" / "python"  # what every crontab line runs
CRON = Path("/usr/sbin/cron")
pytestmark = pytest.mark.slow  # every crontab line run as cron runs it, and the real cron daemon

CRON_PID_FILE = Path("/var/run/crond.pid")  # Debian's cron holds a flock on it while it runs
CRON_D = Path("/etc/cron.d")
ASSIGNMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class CronEntry:
    schedule: str  # the five time fields
    command: str  # what cron hands to /bin/sh -c

    @property
    def job(self) -> str:
        return next(spec.name for spec in JOBS if f'/scripts/{spec.script}"' in self.command)


@dataclass(frozen=True)
class Crontab:
    assignments: dict[str, str]
    entries: list[CronEntry]


def parse_crontab(text: str) -> Crontab:
    """Read a user crontab as cron does: `#` and blank lines are comments, `NAME=value` sets the
    environment of the commands, anything else is five time fields and a command."""
    assignments: dict[str, str] = {}
    entries: list[CronEntry] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := ASSIGNMENT.fullmatch(line):
            value = match[2]
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            assignments[match[1]] = value
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a crontab line: {line!r}"
        command = fields[5]
        # Cron turns an unescaped % into a newline and feeds the rest to stdin.
        assert "%" not in command, f"cron would cut this command at '%': {line!r}"
        entries.append(CronEntry(" ".join(fields[:5]), command))
    return Crontab(assignments, entries)


def cron_environment(*, home: Path, assignments: dict[str, str]) -> dict[str, str]:
    """What Debian's cron puts in a job's environment (crontab(5)): HOME, SHELL and PATH may be
    overridden by the crontab, LOGNAME may not."""
    user = pwd.getpwuid(os.getuid()).pw_name
    return {"HOME": str(home), "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin", **assignments, "LOGNAME": user}


@dataclass(frozen=True)
class Demo:
    env_file: Path  # .env.demo: every job scheduled each minute
    state_db: Path


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """`demo/serve.py` (the demo site and the Cloudflare emulator) for the test's duration."""
    if not VENV_PYTHON.exists():
        pytest.skip(f"the crontab runs {VENV_PYTHON}; create it with `make venv`")
    where = tmp_path / "demo"
    where.mkdir()
    proc, _ = start_demo_serve(where)
    try:
        env_file = where / ".env.demo"
        state_dir = Path(dotenv_values(env_file)["STATE_DIR"] or "")
        yield Demo(env_file=env_file, state_db=state_dir / "state.db")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def generated_crontab(demo: Demo, *, home: Path) -> Crontab:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "jobs.py"), "crontab"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "EDGECRON_ENV_FILE": str(demo.env_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    crontab = parse_crontab(result.stdout)
    assert [entry.job for entry in crontab.entries] == [spec.name for spec in JOBS]
    return crontab


def read_runs(state_db: Path) -> list[dict[str, Any]]:
    if not state_db.exists():
        return []
    with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=10) as db:
        db.row_factory = sqlite3.Row
        # a job cron just started may have created the file and not yet its tables
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
            return []
        return [dict(row) for row in db.execute("SELECT * FROM runs ORDER BY id")]


def assert_started_by_cron(runs: list[dict[str, Any]]) -> None:
    assert {run["job"]: run["trigger"] for run in runs} == {spec.name: "cron" for spec in JOBS}


# --- every line in cron's environment ---------------------------------------------------------------


def test_every_crontab_line_runs_in_crons_environment_and_records_its_run(demo: Demo, tmp_path: Path) -> None:
    home = tmp_path / "home"  # cron starts each job in the user's HOME, far from the checkout
    home.mkdir()
    crontab = generated_crontab(demo, home=home)
    env = cron_environment(home=home, assignments=crontab.assignments)
    for entry in crontab.entries:
        before = {run["id"] for run in read_runs(demo.state_db)}
        proc = subprocess.run(
            ["/bin/sh", "-c", entry.command], env=env, cwd=home, capture_output=True, text=True, timeout=120
        )
        said = f"{entry.job}: exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        assert proc.returncode in (0, 1), said  # never 2: cron's environment is not a usage error
        if proc.returncode == 0:
            assert (proc.stdout, proc.stderr) == ("", ""), said  # silent on success: cron mails output
        else:
            assert proc.stderr.strip(), said  # a non-zero exit says on stderr what it found
        new = [run for run in read_runs(demo.state_db) if run["id"] not in before]
        assert [(run["job"], run["exit_code"]) for run in new] == [(entry.job, proc.returncode)], said
    assert list(home.iterdir()) == []  # nothing written relative to the working directory
    assert_started_by_cron(read_runs(demo.state_db))


# --- the real Debian cron daemon ----------------------------------------------------------------------


class CronDaemon:
    """The system's cron: a running daemon is reused (it rereads /etc/cron.d each minute), else
    `cron -f` is started here and stopped by `stop`. Never more than one: cron refuses a second."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.started: subprocess.Popen[bytes] | None = None

    @staticmethod
    def someone_runs_it() -> bool:
        try:
            fd = os.open(CRON_PID_FILE, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def ensure_running(self) -> None:
        if self.started is not None and self.started.poll() is None:
            return
        if not self.someone_runs_it():
            with self.log.open("ab") as out:
                self.started = subprocess.Popen(
                    [str(CRON), "-f", "-L", "15"], stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/"
                )

    def stop(self) -> None:
        if self.started is not None and self.started.poll() is None:
            self.started.terminate()
            self.started.wait(timeout=10)


@pytest.mark.slow
def test_the_real_cron_daemon_runs_every_generated_line_at_the_next_minute(demo: Demo, tmp_path: Path) -> None:
    if not CRON.exists():
        pytest.skip(f"Debian's cron is not installed ({CRON}); .ci/run installs it (apt-get install cron)")
    if os.geteuid() != 0:
        pytest.skip("needs root: it installs a root-owned file in /etc/cron.d and may start the cron daemon")
    user = pwd.getpwuid(os.getuid()).pw_name
    crontab = generated_crontab(demo, home=Path(pwd.getpwuid(os.getuid()).pw_dir))
    # /etc/cron.d takes the crontab with a user field; the name must have no dot or cron skips it.
    lines = [
        "# Written by tests/test_cron_real.py and removed when it ends.",
        'MAILTO=""',  # output is checked by the cron-environment test; mail nobody from a test
        *(f"{name}={value}" for name, value in crontab.assignments.items()),
        *(f"{entry.schedule} {user} {entry.command}" for entry in crontab.entries),
    ]
    name = f"edgecron-test-{uuid.uuid4().hex[:12]}"
    staged = CRON_D / f".{name}.tmp"  # cron ignores names with dots; rename makes it appear whole
    staged.write_text("\n".join(lines) + "\n")
    staged.chmod(0o644)
    daemon = CronDaemon(tmp_path / "cron.log")
    try:
        staged.rename(CRON_D / name)
        daemon.ensure_running()
        # Cron fires at the next minute boundary (or the one after, if it started too late for
        # it); then each job takes its own time. This bounds the wait; nothing asserts a duration.
        to_next_minute = 60 - time.time() % 60
        deadline = time.monotonic() + to_next_minute + 60 + 90
        finished: dict[str, dict[str, Any]] = {}
        while len(finished) < len(JOBS) and time.monotonic() < deadline:
            daemon.ensure_running()  # another test run's daemon may have stopped meanwhile
            finished = {run["job"]: run for run in read_runs(demo.state_db) if run["status"] != "running"}
            time.sleep(0.5)
        log = daemon.log.read_text() if daemon.log.exists() else ""
        assert sorted(finished) == sorted(spec.name for spec in JOBS), (
            f"cron ran only {sorted(finished)}. What a line prints under cron shows in "
            "test_every_crontab_line_runs_in_crons_environment; if that passes, cron may be unable to open "
            f"a PAM session (pam_loginuid in a container without CAP_AUDIT_CONTROL; see syslog). cron -f said: {log!r}"
        )
        failed = {job: (run["status"], run["exit_code"], run["error"]) for job, run in finished.items()}
        assert {job: got for job, got in failed.items() if got[1] not in (0, 1)} == {}
    finally:
        (CRON_D / name).unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
        daemon.stop()
        _wait_for_runs_to_end(demo.state_db)
    assert_started_by_cron(list(finished.values()))


def _wait_for_runs_to_end(state_db: Path, *, timeout: float = 60) -> None:
    """A job cron started just before its file went away would outlive the demo servers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(run["status"] == "running" for run in read_runs(state_db)):
        time.sleep(0.5)
