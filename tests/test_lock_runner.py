"""Locks, run records, signals and metrics: real processes, real flock, real SQLite files."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from edgecron.config import load_settings
from edgecron.errors import ExitCode, InputError, LockHeld
from edgecron.lock import JobLock, current_holder
from edgecron.runner import JobRun
from prometheus_client.parser import text_string_to_metric_families

from demo.site import DemoSite

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

HOLD_LOCK = """
import sys, time
from datetime import datetime, UTC
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from edgecron.lock import JobLock
JobLock(Path(sys.argv[2]), "warm").acquire(now=datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
print("locked", flush=True)
time.sleep(60)
"""


def runs(state_dir: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(state_dir / "state.db")
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
    conn.close()
    return rows


def count_results(state_dir: Path) -> int:
    conn = sqlite3.connect(state_dir / "state.db")
    (n,) = conn.execute("SELECT count(*) FROM warm_results").fetchone()
    conn.close()
    return n


def wait_for(predicate, *, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def settings_for(workdir: Path, **extra: str):  # type: ignore[no-untyped-def]
    return load_settings(environ={"STATE_DIR": str(workdir / "state"), **extra}, env_file=None)


def clock(*moments: datetime):  # type: ignore[no-untyped-def]
    """now() returning the given moments in turn (the last one repeats)."""
    items = list(moments)
    return lambda: items.pop(0) if len(items) > 1 else items[0]


@pytest.fixture
def slow_site(tmp_path: Path) -> Iterator[DemoSite]:
    with DemoSite(access_log=tmp_path / "access.log", pages=40, latency=0.1) as site:
        yield site


@pytest.fixture
def start_warm(base_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Start warm_cache.py in the background (a real process); all are killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "warm_cache.py"), *args],
            env={**base_env, "WARM_RATE": "0", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


# --- locks -------------------------------------------------------------------------------------


@pytest.fixture
def held_warm_lock(workdir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the warm lock (started 2026-11-28T12:00:00+00:00)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(ROOT / "lib"), str(workdir / "state" / "locks")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()
    assert current_holder(workdir / "state" / "locks", "warm") is None  # the kernel freed it


def test_second_run_on_a_terminal_exits_75_and_names_the_holder(
    run_in_terminal, workdir: Path, held_warm_lock: subprocess.Popen[str]
) -> None:  # type: ignore[no-untyped-def]
    code, shown = run_in_terminal("warm_cache.py", "--urls-file", "/dev/null")
    assert code == 75
    assert "Traceback" not in shown
    [line] = [x for x in shown.splitlines() if x.startswith("Error: ")]
    assert f"pid {held_warm_lock.pid} on {socket.gethostname()}, started 2026-11-28T12:00:00+00:00" in line
    assert "warm.lock" in line and "expected no other run of this job" in line
    assert "safe to retry" in shown
    [skipped] = runs(workdir / "state")
    assert (skipped["status"], skipped["exit_code"], skipped["trigger"]) == ("skipped", 75, "manual")
    found = current_holder(workdir / "state" / "locks", "warm")
    assert found is not None and found.pid == held_warm_lock.pid


def test_overlap_under_cron_exits_75_silently_and_is_recorded_as_skipped(
    run_script, workdir: Path, held_warm_lock: subprocess.Popen[str]
) -> None:  # type: ignore[no-untyped-def]
    proc = run_script("warm_cache.py", "--urls-file", "/dev/null", env={"EDGECRON_TRIGGER": "cron"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (75, "", "")
    [skipped] = runs(workdir / "state")
    assert (skipped["status"], skipped["exit_code"], skipped["trigger"]) == ("skipped", 75, "cron")
    assert f"pid {held_warm_lock.pid}" in skipped["error"]
    assert skipped["finished_at"] == skipped["started_at"]


@pytest.mark.slow
def test_lock_of_a_running_warm_then_kill_9_frees_it(
    run_script, run_in_terminal, start_warm, workdir: Path, slow_site: DemoSite
) -> None:  # type: ignore[no-untyped-def]
    first = start_warm("--concurrency", "1", env={"SITE_URL": slow_site.url})
    wait_for(lambda: slow_site.state.stats["requests"] >= 4)  # it holds the lock and is warming
    code, shown = run_in_terminal("warm_cache.py", env={"SITE_URL": slow_site.url, "WARM_RATE": "0"})
    assert code == 75, shown
    assert f"pid {first.pid} on {socket.gethostname()}" in shown
    lock_file = workdir / "state" / "locks" / "warm.lock"
    assert json.loads(lock_file.read_text())["pid"] == first.pid

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    third = run_script("warm_cache.py", "--json", env={"SITE_URL": slow_site.url, "WARM_RATE": "0"})
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["summary"]["requested"] > 0
    assert lock_file.exists()  # never deleted, only unlocked
    statuses = [row["status"] for row in runs(workdir / "state")]
    # the killed run recorded nothing; the next one marks it abandoned (the overlap was a skip)
    assert statuses == ["abandoned", "skipped", "ok"]


@pytest.mark.parametrize("signum,exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_signal_during_a_warm_keeps_finished_results(  # type: ignore[no-untyped-def]
    start_warm, workdir: Path, slow_site: DemoSite, signum: int, exit_code: int
) -> None:
    proc = start_warm("--concurrency", "2", env={"SITE_URL": slow_site.url})
    wait_for(lambda: slow_site.state.stats["requests"] >= 6)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == exit_code, err
    assert "Traceback" not in err
    assert "finished items are kept" in err
    [run] = runs(workdir / "state")
    assert (run["status"], run["exit_code"]) == ("interrupted", exit_code)
    stored = count_results(workdir / "state")
    total = 40 + 5 + 4 - 1  # posts + fixed pages + assets - /account (bypass path)
    assert 0 < stored < total
    assert json.loads(run["counts"])["requested"] == stored
    assert (workdir / "state" / "locks" / "warm.lock").exists()


def test_lock_file_survives_release_and_is_emptied(workdir: Path) -> None:
    lock_dir = workdir / "locks"
    lock = JobLock(lock_dir, "warm")
    lock.acquire(now=T0)
    record = json.loads((lock_dir / "warm.lock").read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["started"] == "2026-11-28T12:00:00+00:00"
    lock.release()
    assert (lock_dir / "warm.lock").read_text() == ""
    assert current_holder(lock_dir, "warm") is None


def test_lock_wait_gets_the_lock_once_the_holder_lets_go(workdir: Path) -> None:
    lock_dir = workdir / "locks"
    holder = JobLock(lock_dir, "warm")
    holder.acquire(now=T0)
    with pytest.raises(LockHeld) as caught:
        JobLock(lock_dir, "warm").acquire(now=T0)
    assert caught.value.exit_code == ExitCode.TEMPFAIL and caught.value.retry_safe
    threading.Timer(0.2, holder.release).start()
    waiter = JobLock(lock_dir, "warm")
    waiter.acquire(now=T0, wait_seconds=10)
    waiter.release()


def test_unwritable_lock_dir_is_a_state_error(workdir: Path) -> None:
    blocker = workdir / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(Exception) as caught:
        JobLock(blocker / "locks", "warm").acquire(now=T0)
    assert type(caught.value).__name__ == "StateError"
    assert "writable LOCK_DIR" in str(caught.value)


# --- runner: run records and metrics -----------------------------------------------------------


def test_run_row_records_status_exit_code_and_counts(workdir: Path) -> None:
    cfg = settings_for(workdir)
    with JobRun(settings=cfg, job="warm", now=clock(T0, T0 + timedelta(seconds=5))) as run:
        run.counts = {"requested": 3, "warm": 2, "failed": 1}
        run.exit_code = ExitCode.PROBLEMS
    [row] = runs(workdir / "state")
    assert (row["job"], row["status"], row["exit_code"]) == ("warm", "problems", 1)
    assert row["started_at"] == "2026-11-28T12:00:00.000+00:00"
    assert row["finished_at"] == "2026-11-28T12:00:05.000+00:00"
    assert json.loads(row["counts"]) == {"requested": 3, "warm": 2, "failed": 1}
    assert row["pid"] == os.getpid() and row["host"] == socket.gethostname()
    assert row["error"] is None


@pytest.mark.parametrize(
    "raised,status,exit_code",
    [(InputError("bad sitemap", expected="XML"), "usage-error", 2), (RuntimeError("boom"), "failed", 1)],
)
def test_run_row_on_errors(workdir: Path, raised: Exception, status: str, exit_code: int) -> None:
    with pytest.raises(type(raised)), JobRun(settings=settings_for(workdir), job="warm", now=clock(T0)):
        raise raised
    [row] = runs(workdir / "state")
    assert (row["status"], row["exit_code"]) == (status, exit_code)
    assert row["error"]
    assert current_holder(workdir / "state" / "locks", "warm") is None


def test_dry_run_records_nothing_and_takes_no_lock(workdir: Path) -> None:
    with JobRun(settings=settings_for(workdir), job="warm", dry_run=True, now=clock(T0)) as run:
        assert run.state is None
        run.counts = {"would_request": 3}
    assert not (workdir / "state" / "state.db").exists()
    assert not (workdir / "state" / "locks" / "warm.lock").exists()
    assert not (workdir / "state" / "logs").exists()


def test_event_log_has_one_json_line_per_event(workdir: Path) -> None:
    with JobRun(settings=settings_for(workdir), job="warm", now=clock(T0)) as run:
        run.log("sitemap", url="https://www.example.com/sitemap.xml")
    lines = (workdir / "state" / "logs" / "warm.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["start", "sitemap", "finish"]
    assert {e["run_id"] for e in events} == {run.run_id}
    assert events[-1]["status"] == "ok"


def metrics(path: Path) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            key = sample.name + ("" if "result" not in sample.labels else f"[{sample.labels['result']}]")
            assert sample.labels["job"] == "warm"
            values[key] = sample.value
    return values


def test_metrics_only_when_metrics_dir_is_set(workdir: Path) -> None:
    with JobRun(settings=settings_for(workdir), job="warm", now=clock(T0)):
        pass
    assert list(workdir.rglob("*.prom")) == []


def test_metrics_textfile_and_last_success_carried_over(workdir: Path) -> None:
    metrics_dir = workdir / "metrics"
    cfg = settings_for(workdir, METRICS_DIR=str(metrics_dir))
    ok_finished = T0 + timedelta(seconds=7)
    with JobRun(settings=cfg, job="warm", now=clock(T0, ok_finished)) as run:
        run.counts = {"requested": 5, "warm": 5, "note": "text is not a gauge"}
    first = metrics(metrics_dir / "edgecron_warm.prom")
    assert first["edgecron_job_last_exit_code"] == 0
    assert first["edgecron_job_last_success_timestamp_seconds"] == ok_finished.timestamp()
    assert first["edgecron_job_last_start_timestamp_seconds"] == T0.timestamp()
    assert first["edgecron_job_items[requested]"] == 5
    assert "edgecron_job_items[note]" not in first

    later = T0 + timedelta(hours=1)
    with pytest.raises(InputError), JobRun(settings=cfg, job="warm", now=clock(later)) as run:
        run.counts = {"requested": 0}
        raise InputError("sitemap is not XML", expected="XML")
    second = metrics(metrics_dir / "edgecron_warm.prom")
    assert second["edgecron_job_last_exit_code"] == 2
    assert second["edgecron_job_last_start_timestamp_seconds"] == later.timestamp()
    assert second["edgecron_job_last_success_timestamp_seconds"] == ok_finished.timestamp()


def test_metrics_from_the_real_script(run_cli, workdir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with DemoSite(pages=2) as site:
        proc = run_cli("warm_cache.py", env={"SITE_URL": site.url, "WARM_RATE": "0", "METRICS_DIR": str(workdir / "m")})
    assert proc.returncode == 0, proc.stderr
    values = metrics(workdir / "m" / "edgecron_warm.prom")
    assert values["edgecron_job_last_exit_code"] == 0
    assert values["edgecron_job_items[requested]"] == 10  # 2 posts + 5 fixed + 4 assets - /account
