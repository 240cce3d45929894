"""One job-health reading: `jobs.py status` and `check_logs.py` give the same verdicts on the same state.

The state is a real SQLite state.db with a run of each kind health knows (completed, failed, a
`running` row whose process is gone, an overdue job), a real lock held too long, and an open purge
outbox item that keeps failing. Each side is asked through its library entry point and through
its script, and the verdicts are compared job by job, and with what they must be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import RunScript
from edgecron.config import Settings, load_settings
from edgecron.errors import ExitCode, LockHeld
from edgecron.findings import Thresholds
from edgecron.health import job_findings, max_ages
from edgecron.lock import JobLock
from edgecron.outbox import PurgeOutbox
from edgecron.runner import JobRun
from edgecron.runs import last_completed_at, last_run, recent_runs
from edgecron.schedule import load_schedule, schedule_timezone
from edgecron.state import StateDB, iso, open_state
from edgecron.status import collect_status

pytestmark = pytest.mark.both_backends

# The default schedule: warm */30 (max age 65 min), purge */5 (15 min), import 7 * * * * (2 h 5 min),
# check-logs */15, cache-rules 30 6 * * * (2 days 5 min).
EXPECTED = {
    "warm": {"lock_held:warm"},  # completed 10 minutes ago, but its lock is held for 2 hours
    "purge": {"job_died:purge"},  # the newest run is `running`, its process is gone, nobody holds the lock
    "import": {"job_last_run:import"},  # completed 40 minutes ago, then a scheduled run failed
    "check-logs": set(),  # never ran: nothing to judge yet
    "cache-rules": {"job_stale:cache-rules"},  # last completed 3 days ago
    "outbox": {"outbox_failing"},  # one item failed 3 times (CHECK_OUTBOX_MAX_ATTEMPTS)
}


def add_run(
    state: StateDB, job: str, status: str, *, started: datetime, finished: datetime | None, pid: int | None = None
) -> None:
    state.execute(
        "INSERT INTO runs(run_id, job, started_at, finished_at, status, error, pid, trigger)"
        " VALUES (?,?,?,?,?,?,?, 'cron')",
        (
            f"{job}-{status}-{started.timestamp()}",
            job,
            iso(started),
            iso(finished) if finished else None,
            status,
            "feed answered 500" if status == "failed" else None,
            pid,
        ),
    )


def gone_pid() -> int:
    """The pid of a process that has ended (a `kill -9`ed run leaves such a pid in its row)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def cfg(env_file: Path) -> Settings:
    return load_settings(env_file=env_file)


@pytest.fixture
def seeded(cfg: Settings) -> Iterator[datetime]:
    """The state above, as of the returned time; the warm lock stays held until the test ends."""
    now = datetime.now(UTC)
    with open_state(cfg.state_db) as state:
        add_run(state, "warm", "ok", started=now - timedelta(minutes=12), finished=now - timedelta(minutes=10))
        add_run(state, "purge", "ok", started=now - timedelta(minutes=6), finished=now - timedelta(minutes=5))
        add_run(state, "purge", "running", started=now - timedelta(minutes=1), finished=None, pid=gone_pid())
        add_run(state, "import", "ok", started=now - timedelta(minutes=41), finished=now - timedelta(minutes=40))
        add_run(state, "import", "failed", started=now - timedelta(minutes=3), finished=now - timedelta(minutes=2))
        add_run(state, "cache-rules", "ok", started=now - timedelta(days=3), finished=now - timedelta(days=3))
        outbox = PurgeOutbox(state)
        outbox.enqueue("url", ["https://www.example.com/a", "https://www.example.com/b"], source="test", now=now)
        state.execute("UPDATE outbox SET attempts=3, last_error='HTTP 500 from the API' WHERE value LIKE '%/a'")
    lock = JobLock(cfg.lock_dir, "warm")
    lock.acquire(now=now - timedelta(hours=2))
    try:
        yield now
    finally:
        lock.release()


def verdicts_of_status(jobs: list[dict[str, Any]], outbox: dict[str, Any]) -> dict[str, set[str]]:
    found = {job["job"]: {b["check"] for b in job["breaches"]} for job in jobs}
    found["outbox"] = {b["check"] for b in outbox["breaches"]}
    return found


def verdicts_of_check_logs(findings: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Job findings are named `<check>:<job>`; `outbox_failing` is the outbox's; the log checks are neither."""
    found: dict[str, set[str]] = {job: set() for job in EXPECTED}
    for finding in findings:
        if finding["status"] != "breach":
            continue
        check = finding["check"]
        if ":" in check:
            found[check.split(":", 1)[1]].add(check)
        elif check.startswith("outbox_"):
            found["outbox"].add(check)
    return found


def test_status_and_the_log_check_judge_the_same_runs_alike(cfg: Settings, seeded: datetime) -> None:
    now = seeded
    schedule = load_schedule(cfg)
    with open_state(cfg.state_db) as state:
        jobs, outbox = collect_status(cfg, state, schedule, now=now)
        findings = job_findings(
            state,
            lock_dir=cfg.lock_dir,
            now=now,
            limits=Thresholds.from_settings(cfg),
            max_ages=max_ages(schedule, now=now, tz=schedule_timezone(cfg)),
        )
    from_status = verdicts_of_status([vars(j) for j in jobs], vars(outbox))
    from_check = verdicts_of_check_logs([f.as_dict() for f in findings])
    assert from_status == from_check == EXPECTED
    # Not only the names: each breach is the same finding, word for word.
    status_breaches = [b for j in jobs for b in j.breaches] + outbox.breaches
    assert status_breaches == [f.as_dict() for f in findings if f.breached]
    assert {j.job: j.died for j in jobs} == {job: job == "purge" for job in EXPECTED if job != "outbox"}


def test_the_two_scripts_give_the_same_verdicts(
    run_script: RunScript, env_file: Path, workdir: Path, seeded: datetime
) -> None:
    log = workdir / "access.log"
    log.write_text("")
    with env_file.open("a") as fh:
        fh.write(f"ACCESS_LOGS={log}\nLOG_FORMAT=edgecron\n")

    status = run_script("jobs.py", "status", "--json")
    assert status.returncode == 0, status.stderr  # status reports; it does not judge by its exit code
    doc = json.loads(status.stdout)
    checked = run_script("check_logs.py", "--json", "--dry-run")
    assert checked.returncode == 1, checked.stderr  # the breaches
    findings = json.loads(checked.stdout)["findings"]

    from_status = verdicts_of_status(doc["jobs"], doc["outbox"])
    assert from_status == verdicts_of_check_logs(findings) == EXPECTED
    assert [j["job"] for j in doc["jobs"] if j["died"]] == ["purge"]

    table = run_script("jobs.py", "status")
    assert table.returncode == 0, table.stderr
    assert "health, as check_logs.py judges it: 5 breaches" in table.stdout
    assert "  [warning] job_died:purge: the purge run started " in table.stdout
    assert "  [critical] job_stale:cache-rules: cache-rules has not succeeded for 3.0d" in table.stdout


def test_thresholds_default_to_the_config_table_and_follow_the_settings(tmp_path: Path) -> None:
    defaults = load_settings(environ={}, env_file=tmp_path / "absent.env")
    assert Thresholds() == Thresholds.from_settings(defaults)
    changed = load_settings(environ={"CHECK_LOCK_MAX_SECONDS": "60", "CHECK_5XX_RATE": "0.2"}, env_file=tmp_path / "x")
    assert (Thresholds.from_settings(changed).lock_max_seconds, Thresholds.from_settings(changed).rate_5xx) == (60, 0.2)


def test_the_runs_table_reads_back_what_each_kind_of_run_recorded(cfg: Settings) -> None:
    """What JobRun records through runs.py (done, skipped, died then abandoned), read back by runs.py's
    questions word for word on either engine: the rows health is judged from."""
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    clock = [t0]
    with JobRun(settings=cfg, job="warm", now=lambda: clock[0], trigger="cron") as done:
        done.counts = {"failed": 2}
        done.exit_code = ExitCode.PROBLEMS
        clock[0] = t0 + timedelta(seconds=90)
    held = JobLock(cfg.lock_dir, "warm")
    held.acquire(now=t0)
    clock[0] = t0 + timedelta(minutes=2)
    try:
        with pytest.raises(LockHeld), JobRun(settings=cfg, job="warm", now=lambda: clock[0], trigger="cron"):
            pass
    finally:
        held.release()
    with open_state(cfg.state_db) as state:  # a run killed before it could record its end
        state.execute(
            "INSERT INTO runs(run_id, job, started_at, status, trigger) VALUES ('dead', 'warm', ?, 'running', 'manual')",
            (iso(t0 + timedelta(minutes=5)),),
        )
    clock[0] = t0 + timedelta(minutes=10)
    with JobRun(settings=cfg, job="warm", now=lambda: clock[0], trigger="manual") as manual:
        pass
    with open_state(cfg.state_db) as state:
        newest, scheduled = last_run(state, "warm"), last_run(state, "warm", scheduled_only=True, finished_only=True)
        assert newest is not None and scheduled is not None
        assert (newest["run_id"], newest["status"], newest["exit_code"]) == (manual.run_id, "ok", 0)
        assert (scheduled["run_id"], scheduled["status"], scheduled["exit_code"]) == (done.run_id, "problems", 1)
        assert isinstance(scheduled["duration_s"], float)
        assert last_completed_at(state, "warm", scheduled_only=True) == "2026-12-01T10:01:30.000+00:00"
        assert last_completed_at(state, "warm") == "2026-12-01T10:10:00.000+00:00"
        assert last_completed_at(state, "import") is None
        listed = recent_runs(state, "warm", limit=4)
        statuses = [row[0] for row in state.execute("SELECT status FROM runs ORDER BY id")]
    assert [(r["status"], r["counts"]) for r in listed] == [
        ("ok", {}),
        ("abandoned", {}),  # left running: the next run of the job marked it
        ("skipped", {}),
        ("problems", {"failed": 2}),
    ]
    assert statuses == ["problems", "skipped", "abandoned", "ok"]
