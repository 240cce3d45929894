"""Run slots: `last_fire` against `next_fire` (DST included), EDGECRON_SLOT, and done-elsewhere on one node."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from edgecron.config import load_settings
from edgecron.errors import ConfigError
from edgecron.schedule import last_fire, next_fire, parse_cron, run_slot, slot_text
from edgecron.scheduler import Entry, FireTimeExecutor, JobProcesses
from hypothesis import given, settings
from hypothesis import strategies as st

CRONS = (
    "*/5 * * * *",
    "30 2 * * *",  # fixed time inside the DST hours: moved after a skipped hour, once in a repeated one
    "*/30 1-3 * * *",  # wildcard minutes inside the DST hours: follows the wall clock
    "0 0 29 2 *",  # leap days only
    "15 6 * * 1-5",  # Friday to Monday
    "0 12 1 * 0",  # day-of-month OR day-of-week
)
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe")  # Lord Howe shifts by 30 minutes
# Around 2026's transitions (Mar/Apr and Oct/Nov, both hemispheres), and anywhere in 2024-2028.
DST_DAYS = [datetime(2026, m, d, tzinfo=UTC) for m, d in ((3, 8), (3, 29), (4, 5), (10, 4), (10, 25), (11, 1))]
MOMENTS = st.one_of(
    st.builds(
        lambda day, minutes: day + timedelta(minutes=minutes),
        st.sampled_from(DST_DAYS),
        st.integers(-36 * 60, 36 * 60),
    ),
    st.datetimes(datetime(2024, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC)),
)


@settings(max_examples=300, deadline=None)
@given(text=st.sampled_from(CRONS), zone=st.sampled_from(ZONES), now=MOMENTS)
def test_last_fire_is_the_fire_time_next_fire_leads_to_and_none_is_between(text: str, zone: str, now: datetime) -> None:
    cron, tz = parse_cron(text), ZoneInfo(zone)
    slot = last_fire(cron, now, tz).astimezone(UTC)  # arithmetic in UTC: in `tz` it is wall-clock arithmetic
    assert slot <= now
    # Compared in UTC: == across zones is False for a repeated wall time (PEP 495).
    assert next_fire(cron, slot - timedelta(microseconds=1), tz).astimezone(UTC) == slot  # one of its fire times
    assert next_fire(cron, slot, tz) > now  # and none between it and now


@pytest.mark.parametrize(
    ("text", "now_local", "fold", "expected_utc"),
    [
        # Berlin 2026-03-29: 02:00-02:59 does not exist; a fixed 02:30 job runs at 03:00 CEST (01:00 UTC).
        ("30 2 * * *", datetime(2026, 3, 29, 3, 10), 0, datetime(2026, 3, 29, 1, 0)),
        ("30 2 * * *", datetime(2026, 3, 29, 1, 59), 0, datetime(2026, 3, 28, 1, 30)),  # not yet
        # Berlin 2026-10-25: 02:00-02:59 happens twice; a fixed job runs in the first pass only.
        ("30 2 * * *", datetime(2026, 10, 25, 2, 45), 1, datetime(2026, 10, 25, 0, 30)),
        # A wildcard job runs in both passes: the second pass's 02:30 is its own slot.
        ("*/30 * * * *", datetime(2026, 10, 25, 2, 45), 1, datetime(2026, 10, 25, 1, 30)),
        ("*/30 * * * *", datetime(2026, 10, 25, 2, 45), 0, datetime(2026, 10, 25, 0, 30)),
        # Exactly at a fire time: that fire time is the slot.
        ("*/5 * * * *", datetime(2026, 12, 2, 10, 5), 0, datetime(2026, 12, 2, 9, 5)),
    ],
)
def test_last_fire_across_dst_changes(text: str, now_local: datetime, fold: int, expected_utc: datetime) -> None:
    tz = ZoneInfo("Europe/Berlin")
    now = now_local.replace(tzinfo=tz, fold=fold)
    assert last_fire(parse_cron(text), now, tz).astimezone(UTC) == expected_utc.replace(tzinfo=UTC)


def test_run_slot_takes_the_schedulers_fire_time_else_the_schedule(tmp_path: Path) -> None:
    cfg = load_settings(environ={"STATE_DIR": str(tmp_path), "SCHEDULE_IMPORT": "7 * * * *"}, env_file=None)
    now = datetime(2026, 12, 2, 10, 9, 30, tzinfo=UTC)
    scheduled = ("run",)  # import_stale.py run: the command the crontab and the scheduler start
    assert run_slot(cfg, "import", args=scheduled, now=now, fired=None) == "2026-12-02T10:07:00+00:00"
    # The scheduler's time wins (a late start keeps its slot), written in one form on every node.
    fired = "2026-12-02T11:07:00+01:00"
    assert run_slot(cfg, "import", args=scheduled, now=now, fired=fired) == "2026-12-02T10:07:00+00:00"
    assert slot_text(datetime(2026, 12, 2, 10, 7, 0, 999, tzinfo=UTC)) == "2026-12-02T10:07:00+00:00"
    with pytest.raises(ConfigError, match="EDGECRON_SLOT is not a fire time"):
        run_slot(cfg, "import", args=scheduled, now=now, fired="2026-12-02T10:07:00")  # no offset: whose 10:07?
    # Another command of the same job (an operator's own crontab line) is other work: no slot.
    assert run_slot(cfg, "import", args=("run", "--limit", "5"), now=now, fired=fired) is None
    off = load_settings(environ={"STATE_DIR": str(tmp_path), "SCHEDULE_IMPORT": "off"}, env_file=None)
    assert run_slot(off, "import", args=scheduled, now=now, fired=None) is None


def test_env_file_cannot_set_the_slot(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("EDGECRON_SLOT=2026-12-02T10:00:00+00:00\n")
    env.chmod(0o600)
    with pytest.raises(ConfigError, match=r"EDGECRON_SLOT in .+ is read from the environment only"):
        load_settings(environ={}, env_file=env)


def test_the_scheduler_tells_each_run_its_exact_fire_time(tmp_path: Path) -> None:
    """A real APScheduler with the executor `jobs.py schedule` uses: the child sees the fire time, not its clock."""
    seen = tmp_path / "slot.txt"
    child = "import os, sys; open(sys.argv[1], 'w').write(os.environ.get('EDGECRON_SLOT', 'unset'))"
    fire_at = (datetime.now(UTC) + timedelta(seconds=0.3)).replace(microsecond=0) + timedelta(seconds=1)
    fire_times: dict[str, datetime] = {}
    processes = JobProcesses(env={"PATH": os.environ["PATH"], "EDGECRON_SLOT": "stale"}, fire_times=fire_times)
    entry = Entry("probe", (sys.executable, "-c", child, str(seen)), DateTrigger(run_date=fire_at))
    done = threading.Event()
    scheduler = BackgroundScheduler(executors={"default": FireTimeExecutor(1, fire_times=fire_times)}, timezone=UTC)
    run = lambda: (processes.run(entry), done.set())  # noqa: E731
    scheduler.add_job(run, trigger=entry.trigger, id=entry.job, misfire_grace_time=60)  # a busy machine is late
    scheduler.start()
    try:
        assert done.wait(timeout=20)
    finally:
        scheduler.shutdown(wait=False)
    assert seen.read_text() == slot_text(fire_at)


def _runs(state_dir: Path) -> list[dict[str, object]]:
    with sqlite3.connect(state_dir / "state.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT status, exit_code, trigger, node, slot, error FROM runs")]


def test_a_slot_already_done_is_done_elsewhere_silently_and_manual_runs_still_run(
    run_script, env_file: Path, workdir: Path
) -> None:  # type: ignore[no-untyped-def]
    """SQLite, one node: a second scheduled run for a done slot does nothing, exit 0, no output; a
    person's run always runs; done-elsewhere is never "the last run" in `jobs.py status`."""
    with env_file.open("a") as fh:  # an empty outbox: the API is never called
        fh.write(f"NODE_NAME=web-1\nCF_API_TOKEN=t\nCF_ZONE_ID={'0' * 32}\nCF_API_URL=http://127.0.0.1:9/client/v4\n")
    slot = {"EDGECRON_TRIGGER": "scheduler", "EDGECRON_SLOT": "2026-12-02T10:00:00+00:00"}
    first = run_script("purge_cache.py", "outbox", "--retry", env=slot)
    assert first.returncode == 0, first.stderr
    again = run_script("purge_cache.py", "outbox", "--retry", env=slot)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    manual = run_script("purge_cache.py", "outbox", "--retry")
    assert manual.returncode == 0, manual.stderr
    rows = _runs(workdir / "state")
    assert [(r["status"], r["trigger"], r["slot"]) for r in rows] == [
        ("ok", "scheduler", "2026-12-02T10:00:00+00:00"),
        ("done-elsewhere", "scheduler", "2026-12-02T10:00:00+00:00"),
        ("ok", "manual", None),
    ]
    assert {r["node"] for r in rows} == {"web-1"}
    assert "completed on web-1" in str(rows[1]["error"])
    events = [json.loads(line) for line in (workdir / "state" / "logs" / "purge.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["event"] in ("start", "done-elsewhere")] == [
        "start",
        "done-elsewhere",
        "start",
    ]
    # The done-elsewhere row comes after the scheduled run: status still shows the newest real run.
    run_script("purge_cache.py", "outbox", "--retry", env=slot)
    status = json.loads(run_script("jobs.py", "status", "--json").stdout)
    [purge] = [j for j in status["jobs"] if j["job"] == "purge"]
    assert (purge["last_status"], purge["last_trigger"]) == ("ok", "manual")
