"""scripts/jobs.py: crontab, status, next, and the scheduler started for real."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from conftest import ROOT, RunScript
from edgecron.config import load_settings
from edgecron.errors import InputError
from edgecron.outbox import PurgeOutbox
from edgecron.runner import JobRun
from edgecron.scheduler import Entry, JobProcesses
from edgecron.state import open_state

JOB_NAMES = ("warm", "purge", "import", "check-logs", "cache-rules")


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- crontab ----------------------------------------------------------------------------------------


def test_crontab_example_is_exactly_the_generated_crontab(run_cli: RunScript, env_file: Path) -> None:
    result = run_cli("jobs.py", "crontab", "--home", "/opt/edgecron")
    assert result.returncode == 0, result.stderr
    # This test's settings file is not the checkout's .env, so cron must be told where it is.
    env_line = f"EDGECRON_ENV_FILE={env_file.resolve()}\n"
    assert env_line in result.stdout
    assert result.stdout.replace(env_line, "") == (ROOT / "crontab.example").read_text()


def test_crontab_lines_follow_settings(run_cli: RunScript) -> None:
    result = run_cli(
        "jobs.py", "crontab", "--home", "/srv/e", env={"SCHEDULE_WARM": "5 */2 * * 1-5", "SCHEDULE_IMPORT": "off"}
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "EDGECRON_HOME=/srv/e" in lines
    assert '5 */2 * * 1-5 "$EDGECRON_HOME/.venv/bin/python" "$EDGECRON_HOME/scripts/warm_cache.py"' in lines
    assert "# disabled by SCHEDULE_IMPORT=off" in lines
    assert not any(line.endswith("import_stale.py") and not line.startswith("#") for line in lines)
    assert (
        '*/5 * * * * "$EDGECRON_HOME/.venv/bin/python" "$EDGECRON_HOME/scripts/purge_cache.py" outbox --retry' in lines
    )


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"SCHEDULE_WARM": "*/10 * * * 8"}, ["SCHEDULE_WARM", "day-of-week", "0-7 or sun-sat"]),
        ({"SCHEDULE_CHECKLOGS": "* * * * *"}, ["SCHEDULE_CHECKLOGS names no job", "SCHEDULE_CHECK_LOGS?"]),
        ({"SCHEDULE_TIMEZONE": "Europe/Atlantis"}, ["SCHEDULE_TIMEZONE", "IANA zone name"]),
        ({"HEALTHCHECKS_URL": "not a url"}, ["HEALTHCHECKS_URL", "http(s) base URL"]),
    ],
)
def test_bad_settings_exit_2_with_the_key_named(run_cli: RunScript, env: dict[str, str], fragments: list[str]) -> None:
    result = run_cli("jobs.py", "crontab", env=env)
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: ") and all(f in first for f in fragments), result.stderr
    assert "Traceback" not in result.stderr


# --- next ------------------------------------------------------------------------------------------


def test_next_for_an_expression_and_unknown_job(run_cli: RunScript) -> None:
    result = run_cli("jobs.py", "next", "--cron", "0 3 * * 7", "--count", "3", "--json")
    assert result.returncode == 0, result.stderr
    times = json.loads(result.stdout)["next"]["0 3 * * 7"]
    assert len(times) == 3 and all(t.endswith("T03:00:00+00:00") for t in times)
    from datetime import datetime

    assert {datetime.fromisoformat(t).strftime("%A") for t in times} == {"Sunday"}
    bad = run_cli("jobs.py", "next", "warmup")
    assert bad.returncode == 2 and "unknown job 'warmup'" in bad.stderr


# --- status ----------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_status_json_shows_runs_locks_and_outbox(env_file: Path, run_cli: RunScript) -> None:
    cfg = load_settings(env_file=env_file)
    with JobRun(settings=cfg, job="warm"):
        pass
    with pytest.raises(InputError), JobRun(settings=cfg, job="import"):
        raise InputError("feed line 3 is not JSON", expected="one JSON object per line")
    with open_state(cfg.state_db) as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue(
            "url",
            ["https://www.example.com/a", "https://www.example.com/b"],
            source="test",
            now=JobRun(settings=cfg, job="x").now(),
        )
        state.execute("UPDATE outbox SET attempts=3, last_error='HTTP 500 from the API' WHERE value LIKE '%/a'")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from datetime import datetime, UTC; from pathlib import Path;"
            "from edgecron.lock import JobLock;"
            "JobLock(Path(sys.argv[2]), 'purge').acquire(now=datetime.now(UTC)); print('held', flush=True); time.sleep(60)",
            str(ROOT / "lib"),
            str(cfg.lock_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_cli("jobs.py", "status", "--json")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    jobs = {j["job"]: j for j in doc["jobs"]}
    assert set(jobs) == set(JOB_NAMES)
    assert jobs["warm"]["last_status"] == "ok" and jobs["warm"]["last_ok"] is not None
    assert jobs["import"]["last_status"] == "usage-error" and jobs["import"]["last_exit_code"] == 2
    assert "feed line 3 is not JSON" in jobs["import"]["last_error"]
    assert jobs["purge"]["lock_holder"]["pid"] == holder.pid
    assert jobs["warm"]["lock_holder"] is None
    assert jobs["cache-rules"]["last_status"] is None
    assert all(j["next_due"] for j in jobs.values())
    assert doc["outbox"]["pending"] == 2 and doc["outbox"]["failing"] == 1
    assert doc["outbox"]["failing_items"][0]["last_error"] == "HTTP 500 from the API"


# --- the scheduler, for real --------------------------------------------------------------------------

JOB_SCRIPT = """
import os, signal, sys, time
name, out, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
stopped = []
signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
def note(word):
    with open(out, "a") as f:
        f.write(f"{word} {name} {time.time():.3f} {os.getpid()}\\n")
note("start")
deadline = time.time() + seconds
while time.time() < deadline and not stopped:
    time.sleep(0.02)
note("interrupted" if stopped else "end")
sys.exit(143 if stopped else 0)
"""

# The production serve() with a custom table: second-level triggers so the test takes seconds.
HARNESS = """
import logging, sys
from datetime import timezone
sys.path.insert(0, sys.argv[1])
from apscheduler.triggers.cron import CronTrigger
from edgecron.scheduler import Entry, serve
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
job, out, slow, grace = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
entries = [
    Entry("slow", (sys.executable, job, "slow", out, slow), CronTrigger(second="*", timezone=timezone.utc)),
    Entry("quick", (sys.executable, job, "quick", out, "0.1"), CronTrigger(second="*/2", timezone=timezone.utc)),
]
sys.exit(serve(entries, timezone=timezone.utc, misfire_grace=30, stop_grace=grace))
"""


def events(out: Path) -> list[tuple[str, str, float, int]]:
    if not out.exists():
        return []
    rows = []
    for line in out.read_text().splitlines():
        word, name, stamp, pid = line.split()
        rows.append((word, name, float(stamp), int(pid)))
    return rows


def start_harness(tmp_path: Path, *, slow: float, grace: float) -> tuple[subprocess.Popen[str], Path, Path]:
    job = tmp_path / "job.py"
    job.write_text(JOB_SCRIPT)
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    out = tmp_path / "events.txt"
    log = tmp_path / "scheduler.log"
    proc = subprocess.Popen(
        [sys.executable, str(harness), str(ROOT / "lib"), str(job), str(out), str(slow), str(grace)],
        stderr=log.open("w"),
        text=True,
    )
    return proc, out, log


def intervals(rows: list[tuple[str, str, float, int]], name: str) -> list[tuple[float, float]]:
    starts = {pid: t for word, n, t, pid in rows if n == name and word == "start"}
    ends = {pid: t for word, n, t, pid in rows if n == name and word != "start"}
    assert set(starts) == set(ends), f"a {name} run did not finish: {rows}"
    return sorted((starts[pid], ends[pid]) for pid in starts)


def slow_in_flight(rows: list[tuple[str, str, float, int]]) -> bool:
    started = sum(1 for row in rows if row[:2] == ("start", "slow"))
    return started > sum(1 for row in rows if row[:2] != ("start", "slow") and row[1:2] == ("slow",))


@pytest.mark.slow
def test_scheduler_never_overlaps_a_job_and_waits_for_it_on_sigterm(tmp_path: Path) -> None:
    proc, out, log = start_harness(tmp_path, slow=2.5, grace=10)
    try:
        # A 2.5 s job scheduled every second: it must run back to back, never twice at once.
        wait_for(lambda: sum(1 for e in events(out) if e[:2] == ("end", "slow")) >= 2, timeout=15, what="two slow runs")
        # SIGTERM while a slow run is in flight (quick runs may have logged after its start)
        wait_for(lambda: slow_in_flight(events(out)), timeout=15, what="a slow run in flight")
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = events(out)
    slow_runs = intervals(rows, "slow")  # asserts the run in flight at SIGTERM finished ("end")
    for (_, end), (start, _) in itertools.pairwise(slow_runs):
        assert start >= end, f"two slow runs overlapped: {slow_runs}"
    assert all(word == "end" for word, *_ in rows if word != "start")  # none had to be interrupted
    assert len(intervals(rows, "quick")) >= 2
    assert code == 143
    assert took < 10, "the scheduler did not stop within its grace time"
    text = log.read_text()
    assert "slow is still running: this run is skipped" in text
    assert "SIGTERM: no new runs" in text and "scheduler stopped" in text


@pytest.mark.slow
def test_scheduler_stops_a_job_that_outlasts_the_grace_time(tmp_path: Path) -> None:
    proc, out, log = start_harness(tmp_path, slow=60, grace=3)
    try:
        wait_for(lambda: any(e[:2] == ("start", "slow") for e in events(out)), timeout=10, what="the slow run")
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 143
    assert took < 3 + 1.0
    assert ("interrupted", "slow") in [e[:2] for e in events(out)]
    assert "slow still running: sending SIGTERM" in log.read_text()


@pytest.mark.slow
def test_jobs_py_schedule_starts_every_minute_jobs_and_stops_on_sigterm(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(base_env)
    for name in JOB_NAMES:
        env["SCHEDULE_" + name.upper().replace("-", "_")] = "* * * * *"
    log = tmp_path / "jobs-schedule.log"
    cmd = [sys.executable, str(ROOT / "scripts" / "jobs.py"), "schedule", "--stop-grace", "5"]
    proc = subprocess.Popen(cmd, env=env, stderr=log.open("w"), text=True)
    try:
        wait_for(lambda: "scheduler started" in log.read_text(), timeout=20, what="the scheduler to start")
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=20)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    for name in JOB_NAMES:
        assert f"{name} scheduled: cron[* * * * *]" in text
    assert "scheduler started: 5 jobs, time zone UTC" in text
    assert code == 143 and took < 5 + 1.0
    # Only one scheduler at a time: the second exits 75 naming the first.
    assert second.returncode == 75 and f"pid {proc.pid}" in second.stderr, second.stderr
    assert os.path.exists(Path(env["EDGECRON_ENV_FILE"]).parent / "state" / "locks" / "scheduler.lock")


def test_scheduler_children_record_trigger_scheduler(tmp_path: Path) -> None:
    """Job health judges scheduled runs: the scheduler marks its children so they count."""
    seen = tmp_path / "trigger.txt"
    child = "import os, sys; open(sys.argv[1], 'w').write(os.environ.get('EDGECRON_TRIGGER', 'unset'))"
    entry = Entry("probe", (sys.executable, "-c", child, str(seen)), CronTrigger(minute="*"))
    assert JobProcesses(env={"PATH": os.environ["PATH"]}, cwd=tmp_path).run(entry) == 0
    assert seen.read_text() == "scheduler"
