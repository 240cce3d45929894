"""Bounded state (retention.py) on real SQLite files: each rule, rollback inside the window, the
event-log cap, space given back, and a simulated year of the default schedule on a 10k-URL site."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from edgecron.config import Settings, load_settings
from edgecron.content import ContentStore
from edgecron.deploys import record_slots
from edgecron.errors import InputError
from edgecron.feed import Validator
from edgecron.feedfiles import JsonlSource
from edgecron.importer import Importer, ImportOptions, forward_purges
from edgecron.outbox import PurgeOutbox
from edgecron.purge import cached_pages_estimate, read_only
from edgecron.retention import MIB, RetentionPolicy, StateSize, prune_state, reclaim_space, state_size
from edgecron.runner import EventLog, JobRun
from edgecron.runs import last_completed_at
from edgecron.schedule import Cron, load_schedule
from edgecron.state import open_state
from edgecron.warm import WarmResult, WarmResultStore, warmed_urls
from statedb import settings_for as state_settings
from statedb import state_rows, state_tables

SITE = "https://www.example.com"
START = datetime(2027, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = START) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def settings_for(root: Path, state_db: Path | str | None = None, **extra: str) -> Settings:
    """Settings under `root`, the state in `state_db` (the test's backend; default STATE_DIR's file)."""
    return state_settings(root, state_db or root / "state" / "state.db", SITE_URL=SITE, **extra)


def warm_run(settings: Settings, clock: Clock, urls: list[str]) -> str:
    """One warm job run as warm_cache.py records it: the run frame and one result per URL."""
    with JobRun(settings=settings, job="warm", now=clock) as run:
        assert run.state is not None
        store = WarmResultStore(run.state, run_id=run.run_id, now=run.now)
        for url in urls:
            store.add(WarmResult(url, "warm", http_status=200, cache_status="HIT", cf_ray="8d2c4b1a9e3f7a21-FRA"))
        store.flush()
        return run.run_id


# --- warm results ------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_only_the_last_warm_runs_keep_per_url_rows_and_each_url_keeps_its_latest_status(
    tmp_path: Path, state_db: Path | str
) -> None:
    settings = settings_for(tmp_path, state_db, RETAIN_WARM_RUNS="2")
    clock = Clock()
    ids = []
    for n in range(4):
        ids.append(warm_run(settings, clock, [f"{SITE}/p{i}" for i in range(n, n + 3)]))
        clock.at += timedelta(minutes=30)
    assert {r[0] for r in state_rows(state_db, "SELECT DISTINCT run_id FROM warm_results")} == set(ids[-2:])
    latest = dict(state_rows(state_db, "SELECT url, run_id FROM warm_latest"))
    assert latest[f"{SITE}/p0"] == ids[0]  # warmed only by a pruned run: its status is still known
    assert latest[f"{SITE}/p3"] == ids[3]
    assert len(latest) == 6


@pytest.mark.both_backends
def test_a_running_run_keeps_its_rows_while_other_jobs_prune(tmp_path: Path, state_db: Path | str) -> None:
    settings = settings_for(tmp_path, state_db, RETAIN_WARM_RUNS="1")
    clock = Clock()
    with JobRun(settings=settings, job="warm", now=clock) as warm:
        assert warm.state is not None
        store = WarmResultStore(warm.state, run_id=warm.run_id, now=warm.now)
        store.add(WarmResult(f"{SITE}/a", "warm"))
        store.flush()
        warm_run_id = warm.run_id
        # a purge re-warm writes after it, then a third job's end prunes: the warm run is still running
        with JobRun(settings=settings, job="purge", now=clock) as purge:
            assert purge.state is not None
            rewarm = WarmResultStore(purge.state, run_id=purge.run_id, now=purge.now)
            rewarm.add(WarmResult(f"{SITE}/b", "warm"))
            rewarm.flush()
        with JobRun(settings=settings, job="check-logs", now=clock):
            pass
        assert list(warmed_urls(warm.state, warm_run_id)) == [f"{SITE}/a"]


# --- runs, outbox, slots, deploys ----------------------------------------------------------------------


@pytest.mark.both_backends
def test_old_runs_go_but_each_jobs_latest_run_of_each_status_stays(tmp_path: Path, state_db: Path | str) -> None:
    settings = settings_for(tmp_path, state_db, RETAIN_RUNS_DAYS="30")
    clock = Clock()
    with JobRun(settings=settings, job="cache-rules", now=clock) as run:
        run.counts = {"checked": 1}
    clock.at += timedelta(days=1)
    for _ in range(3):
        with JobRun(settings=settings, job="import", now=clock):
            pass
        clock.at += timedelta(days=1)
    clock.at += timedelta(days=60)
    with JobRun(settings=settings, job="import", now=clock):
        pass
    left = state_rows(state_db, "SELECT job, started_at FROM runs ORDER BY id")
    # import: the old ok runs went, the new one stays; cache-rules: its only run stays whatever its age
    assert [job for job, _ in left] == ["cache-rules", "import"]
    assert left[1][0] == "import" and left[1][1].startswith(clock.at.date().isoformat())


@pytest.mark.both_backends
def test_a_newer_manual_run_does_not_prune_the_last_scheduled_success(tmp_path: Path, state_db: Path | str) -> None:
    settings = settings_for(tmp_path, state_db, RETAIN_RUNS_DAYS="30")
    clock = Clock()
    for _ in range(3):
        with JobRun(settings=settings, job="warm", now=clock, trigger="cron"):
            pass
        clock.at += timedelta(days=1)
    last_cron = clock.at - timedelta(days=1)
    clock.at += timedelta(days=40)
    for _ in range(2):
        with JobRun(settings=settings, job="warm", now=clock, trigger="manual"):
            pass
    with open_state(settings.state_db) as state:
        assert last_completed_at(state, "warm", scheduled_only=True) == last_cron.isoformat(timespec="milliseconds")
        triggers = [row[0] for row in state.execute("SELECT trigger FROM runs ORDER BY id")]
        assert triggers == ["cron", "manual", "manual"]  # the two older cron runs went


@pytest.mark.both_backends
def test_sent_purges_age_out_but_pending_and_held_ones_never_do(tmp_path: Path, state_db: Path | str) -> None:
    settings = settings_for(tmp_path, state_db, RETAIN_OUTBOX_DAYS="7")
    clock = Clock()
    with open_state(settings.state_db) as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue("url", [f"{SITE}/sent", f"{SITE}/pending", f"{SITE}/held"], source="test", now=clock())
        sent, pending, held = outbox.claim("url", 3, run_id="r", now=clock())
        outbox.mark_done([sent.id], result_id="x", now=clock())
        outbox.mark_failed([held.id], error="invalid", now=clock(), hold=True)
        outbox.mark_failed([pending.id], error="HTTP 500", now=clock())
    clock.at += timedelta(days=400)
    with JobRun(settings=settings, job="purge", now=clock):
        pass
    left = state_rows(state_db, "SELECT value, status, held FROM outbox ORDER BY id")
    assert left == [(f"{SITE}/pending", "pending", 0), (f"{SITE}/held", "pending", 1)]


@pytest.mark.both_backends
def test_log_slots_and_deploys_keep_the_window_and_the_newest_deploy(tmp_path: Path, state_db: Path | str) -> None:
    settings = settings_for(tmp_path, state_db)
    policy = RetentionPolicy.from_settings(settings)
    now = START + timedelta(days=100)
    with open_state(settings.state_db) as state, state.transaction() as conn:
        for days_ago in (90, 40, 29):
            moment = now - timedelta(days=days_ago)
            record_slots(conn, {int(moment.timestamp()): [10, 0, 0, {b"0.01": 10}]}, now=moment)
            conn.execute("INSERT INTO deploys(ref, deployed_at) VALUES (?, ?)", (f"d{days_ago}", moment.isoformat()))
        dropped = prune_state(conn, policy, now=now)
        assert [r[0] for r in conn.execute("SELECT ref FROM deploys ORDER BY id")] == ["d29"]
        assert conn.execute("SELECT count(*) FROM log_slots").fetchone()[0] == 1
        assert (dropped["log_slots"], dropped["deploys"]) == (2, 2)
        old = now - timedelta(days=90)
        conn.execute("DELETE FROM deploys")
        conn.execute("INSERT INTO deploys(ref, deployed_at) VALUES ('only', ?)", (old.isoformat(),))
        prune_state(conn, policy, now=now)
        assert conn.execute("SELECT ref FROM deploys").fetchall()[0][0] == "only"  # the newest stays


@pytest.mark.both_backends
def test_a_dry_run_prunes_nothing(tmp_path: Path, state_db: Path | str) -> None:
    settings = settings_for(tmp_path, state_db, RETAIN_RUNS_DAYS="1")
    clock = Clock()
    with JobRun(settings=settings, job="import", now=clock):
        pass
    with JobRun(settings=settings, job="import", now=clock):
        pass
    before = stored(state_db)
    clock.at += timedelta(days=10)
    with JobRun(settings=settings, job="import", now=clock, dry_run=True):
        pass
    assert stored(state_db) == before
    assert len(state_rows(state_db, "SELECT * FROM runs")) == 2


def stored(state_db: Path | str) -> object:
    """All a state database holds: the file's bytes, or every row of every table on PostgreSQL."""
    return state_db.read_bytes() if isinstance(state_db, Path) else state_tables(state_db)


# --- content versions -----------------------------------------------------------------------------------


def feed_file(path: Path, stamp: datetime, bodies: dict[str, str]) -> JsonlSource:
    lines = [
        {"id": key, "url": f"{SITE}/{key}", "updated_at": stamp.isoformat(), "title": key, "body": body}
        for key, body in bodies.items()
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return JsonlSource(path)


def import_run(store: ContentStore, source: JsonlSource, *, run_id: str, now: datetime) -> None:
    Importer(
        store=store,
        source=source,
        validator=Validator(allowed_hosts=("www.example.com",), max_body_bytes=MIB),
        options=ImportOptions(overlap=timedelta(0)),
        run_id=run_id,
        now=lambda: now,
    ).run()


def test_every_import_inside_the_window_can_still_be_rolled_back_and_older_ones_say_why_not(tmp_path: Path) -> None:
    policy = RetentionPolicy(versions=timedelta(days=30))
    db = tmp_path / "content.db"
    feed = tmp_path / "feed.jsonl"
    with ContentStore(db, retention=policy) as store:
        for day in range(60):
            now = START + timedelta(days=day)
            import_run(store, feed_file(feed, now, {"a": f"a{day}", f"k{day}": "new"}), run_id=f"run{day:02}", now=now)
        kept = sorted({r[0] for r in store.conn.execute("SELECT run_id FROM versions")})
        assert kept == [f"run{d:02}" for d in range(29, 60)]  # whole runs: 30 days back from the last
        with pytest.raises(InputError, match="rollback window"):
            store.resolve_run_id("run05")
        with pytest.raises(InputError, match="rollback window"):
            store.rollback("run05", run_id="rb0", now=START + timedelta(days=60))
        # roll back newest first down to the oldest run in the window: each restores exactly
        for day in range(59, 29, -1):
            store.rollback(f"run{day:02}", run_id=f"rb{day}", now=START + timedelta(days=60))
            body = store.conn.execute("SELECT body FROM items WHERE key='a'").fetchone()[0]
            assert body == f"a{day - 1}"
            assert store.conn.execute("SELECT 1 FROM items WHERE key=?", (f"k{day}",)).fetchone() is None


def test_an_import_that_changes_nothing_still_leaves_content_db_untouched(tmp_path: Path) -> None:
    db = tmp_path / "content.db"
    feed = tmp_path / "feed.jsonl"
    with ContentStore(db, retention=RetentionPolicy()) as store:
        import_run(store, feed_file(feed, START, {"a": "x"}), run_id="r1", now=START)
    before = db.read_bytes()
    with ContentStore(db, retention=RetentionPolicy()) as store:
        import_run(store, feed_file(feed, START, {"a": "x"}), run_id="r2", now=START + timedelta(days=90))
    assert db.read_bytes() == before


# --- event logs and disk space --------------------------------------------------------------------------


def test_an_event_log_past_its_cap_moves_to_one_old_copy(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "warm.jsonl"
    written = 0
    for run in range(30):
        log = EventLog(path, job="warm", run_id=f"r{run}", dry_run=False, now=Clock(), max_bytes=4096)
        for n in range(10):
            log("event", n=n, pad="x" * 40)
            written += 1
    old = path.with_name("warm.jsonl.1")
    assert path.stat().st_size <= 4096 and old.stat().st_size <= 4096
    assert sorted(p.name for p in path.parent.iterdir()) == ["warm.jsonl", "warm.jsonl.1"]
    lines = old.read_text().splitlines() + path.read_text().splitlines()
    assert json.loads(lines[-1])["run_id"] == "r29"  # newest last, nothing cut mid-line
    assert all(json.loads(line)["event"] == "event" for line in lines)
    assert len(lines) < written


def fill(conn: sqlite3.Connection) -> None:
    conn.executemany("INSERT INTO filler VALUES (hex(randomblob(500)))", [()] * 5000)


def test_a_state_db_from_before_auto_vacuum_is_switched_once_and_gives_space_back(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with sqlite3.connect(db) as legacy:  # as created by earlier versions: auto_vacuum NONE
        legacy.execute("CREATE TABLE filler (x TEXT)")
    with open_state(tmp_path / "state.db") as state:
        assert state.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        fill(state.conn)
    big = db.stat().st_size
    with open_state(tmp_path / "state.db") as state:
        state.execute("DELETE FROM filler")
        assert reclaim_space(state.conn) == "vacuum"
        assert state.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        fill(state.conn)
        state.execute("DELETE FROM filler")
        assert (reclaim_space(state.conn) or "").startswith("incremental_vacuum")
        assert reclaim_space(state.conn) is None  # nothing left to give back
    assert db.stat().st_size < big / 10


# --- a year of the default schedule ---------------------------------------------------------------------


class YearOfCron:
    """The default schedule on a 10k-URL site, through the writers the jobs use, on an injected clock.

    warm: JobRun + WarmResultStore (one result per URL) · purge: JobRun + PurgeOutbox claim/mark_done
    (the sender's calls, without the HTTP) · import: JobRun + Importer over a JSONL feed of the hour's
    changed items + forward_purges · check-logs: JobRun + record_slots · cache-rules: JobRun.
    Not simulated: content-store backups (BACKUP_KEEP copies of content.db, bounded on their own)."""

    def __init__(self, root: Path, *, urls: int, changes_per_import: int, one_in: Mapping[str, int]) -> None:
        self.root = root
        self.settings = settings_for(root)
        self.clock = Clock()
        self.one_in = one_in
        self.urls = [f"{SITE}/articles/{n:05}-a-readable-slug-for-this-page" for n in range(urls)]
        self.changes = changes_per_import
        self.edits = 0
        self.fired = dict.fromkeys(("warm", "purge", "import", "check-logs", "cache-rules"), 0)
        self.ran = dict.fromkeys(self.fired, 0)
        self.crons = {item.name: item.cron for item in load_schedule(self.settings) if item.cron}

    def run_until(self, end: datetime) -> None:
        day = self.clock.at.date()
        while datetime(day.year, day.month, day.day, tzinfo=UTC) < end:
            for moment, job in sorted(fire_times(self.crons, day)):
                if self.clock.at <= moment < end:
                    self.fired[job] += 1
                    if self.fired[job] % self.one_in.get(job, 1) == 0 or (job == "import" and self.fired[job] == 1):
                        self.clock.at = moment
                        self.ran[job] += 1
                        getattr(self, "run_" + job.replace("-", "_"))()
            day += timedelta(days=1)
        self.clock.at = end

    def size(self) -> StateSize:
        return state_size(
            state_db=self.settings.state_db, content_db=self.settings.content_db, state_dir=self.settings.state_dir
        )

    def job(self, name: str) -> JobRun:
        return JobRun(settings=self.settings, job=name, now=self.clock)

    def run_warm(self) -> None:
        with self.job("warm") as run:
            assert run.state is not None
            run.log("sitemap", url=f"{SITE}/sitemap.xml")
            store = WarmResultStore(run.state, run_id=run.run_id, now=run.now)
            for n, url in enumerate(self.urls):
                cache = "HIT" if n % 10 else "MISS"
                store.add(
                    WarmResult(
                        url, "warm" if n % 10 else "filled", 200, cache, 3600, "8d2c4b1a9e3f7a21-FRA", 42.5, 38000
                    )
                )
            store.flush()
            run.counts = {"requested": len(self.urls), "warm": len(self.urls) * 9 // 10}

    def run_purge(self) -> None:
        with self.job("purge") as run:
            assert run.state is not None
            outbox = PurgeOutbox(run.state)
            outbox.recover_claimed()
            sent = 0
            while batch := outbox.claim("url", 30, run_id=run.run_id, now=run.now()):
                outbox.mark_done([item.id for item in batch], result_id="f0e1d2c3b4a5", now=run.now())
                sent += len(batch)
            run.counts = {"sent": sent}

    def run_import(self) -> None:
        first = self.fired["import"] == 1
        keys = (
            range(len(self.urls)) if first else [(self.edits + i) * 7919 % len(self.urls) for i in range(self.changes)]
        )
        self.edits += 0 if first else self.changes
        stamp = self.clock.at.isoformat()
        feed = self.root / "feed.jsonl"
        with feed.open("w") as fh:
            for key in keys:
                body = f"<p>Revision {self.edits} of article {key}.</p>" + "Lorem ipsum dolor sit amet. " * 50
                url = self.urls[key]
                fh.write(json.dumps({"id": f"a{key}", "url": url, "updated_at": stamp, "title": url, "body": body}))
                fh.write("\n")
        policy = RetentionPolicy.from_settings(self.settings)
        with self.job("import") as run, ContentStore(self.settings.content_db, retention=policy) as store:
            assert run.state is not None
            outbox = PurgeOutbox(run.state)
            report = Importer(
                store=store,
                source=JsonlSource(feed),
                validator=Validator(allowed_hosts=("www.example.com",), max_body_bytes=MIB),
                options=ImportOptions(),
                run_id=run.run_id,
                now=run.now,
                forward_purges=lambda: forward_purges(store, outbox, now=run.now()),
            ).run()
            run.counts.update(report.counts)
            run.log("imported", **report.counts)

    def run_check_logs(self) -> None:
        with self.job("check-logs") as run:
            assert run.state is not None
            end = int(run.now().timestamp())
            slots = {
                start: [900, 2, 40, {f"0.{ms:02}".encode(): 30 for ms in range(0, 60, 3)}]
                for start in range(end - 900 - end % 600, end, 600)
            }
            with run.state.transaction() as conn:
                record_slots(conn, slots, now=run.now())
            run.counts = {"requests": 1800, "breaches": 0}
            run.log("checked", **run.counts, events=[])

    def run_cache_rules(self) -> None:
        with self.job("cache-rules") as run:
            run.counts = {"checked": 12, "mismatches": 0}


def fire_times(crons: dict[str, Cron], day: date) -> Iterator[tuple[datetime, str]]:
    for job, cron in crons.items():
        if day.month in cron.months and cron.day_matches(day):
            for hour in cron.hours:
                for minute in cron.minutes:
                    yield datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC), job


@contextmanager
def fast_directory(fallback: Path) -> Iterator[Path]:
    """A directory in /dev/shm when there is one: the same SQLite files, without waiting for the disk's
    fsyncs (most of this test's time on a busy machine)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    root = Path(tempfile.mkdtemp(prefix="edgecron-year-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


MONTHS = (1, 3, 6, 12)
BOUND = 200 * MIB


def simulate_year(root: Path, *, one_in: Mapping[str, int], report: Callable[[str], None]) -> dict[int, StateSize]:
    sim = YearOfCron(root, urls=10_000, changes_per_import=20, one_in=one_in)
    sizes = {}
    for months in MONTHS:
        sim.run_until(START + timedelta(days=round(months * 365 / 12)))
        size = sizes[months] = sim.size()
        report(
            f"{months:>2} months: state.db {size.state_db / MIB:.1f} MiB + logs {size.logs / MIB:.1f} MiB"
            f" = {(size.state_db + size.logs) / MIB:.1f} MiB; content.db {size.content_db / MIB:.1f} MiB"
            f" (runs: {sim.ran})"
        )
    return sizes


@pytest.mark.slow
def test_a_year_of_the_default_schedule_on_a_10k_url_site_levels_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every fire time of the year is 166,805 job runs, 17,520 of them warming 10,000 URLs: hours
    here. The suite keeps the calendar year, the site and the writers, and runs warm at one in 192 of
    its fire times (every 4 days) and the other jobs at one in 48. EDGECRON_FULL_YEAR=1 runs every one."""
    full = bool(os.environ.get("EDGECRON_FULL_YEAR"))
    one_in = {} if full else {"warm": 192, "purge": 48, "check-logs": 48, "import": 48, "cache-rules": 48}
    with capsys.disabled(), fast_directory(tmp_path) as root:
        sizes = simulate_year(root, one_in=one_in, report=print)
    bounded = {months: size.state_db + size.logs for months, size in sizes.items()}
    for months in MONTHS[1:]:
        assert bounded[months] < BOUND
        assert bounded[months] <= 1.1 * bounded[3], bounded
        assert sizes[months].content_db <= 1.1 * sizes[3].content_db, sizes


def test_jobs_status_shows_the_state_size_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs import app
    from typer.testing import CliRunner

    env = tmp_path / ".env"
    env.write_text(f"STATE_DIR={tmp_path / 'state'}\nSITE_URL={SITE}\n")
    settings = load_settings(env_file=env)
    warm_run(settings, Clock(), [f"{SITE}/p{i}" for i in range(2000)])
    (tmp_path / "state" / "content.db").write_bytes(b"x" * 3 * MIB)
    monkeypatch.setenv("EDGECRON_ENV_FILE", str(env))
    as_json = CliRunner().invoke(app, ["status", "--json"])
    as_text = CliRunner().invoke(app, ["status"])
    assert as_json.exit_code == 0 and as_text.exit_code == 0, as_json.output + as_text.output
    on_disk = {
        "state_db": sum(p.stat().st_size for p in (tmp_path / "state").glob("state.db*") if not p.name.endswith("shm")),
        "content_db": 3 * MIB,
        "logs": (tmp_path / "state" / "logs" / "warm.jsonl").stat().st_size,
    }
    assert json.loads(as_json.stdout)["state_bytes"] == {**on_disk, "total": sum(on_disk.values())}
    assert "content.db 3.0 MiB" in as_text.stdout and "state on disk:" in as_text.stdout


def test_an_event_log_whose_first_event_is_older_than_the_window_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "purge.jsonl"
    clock = Clock()
    for day in range(45):
        clock.at = START + timedelta(days=day)
        log = EventLog(path, job="purge", run_id=f"d{day}", dry_run=False, now=clock, max_age=timedelta(days=30))
        log("start")
    current = [json.loads(line)["run_id"] for line in path.read_text().splitlines()]
    old = [json.loads(line)["run_id"] for line in path.with_name("purge.jsonl.1").read_text().splitlines()]
    assert old == [f"d{d}" for d in range(31)] and current == [f"d{d}" for d in range(31, 45)]


@pytest.mark.both_backends
def test_re_warms_by_other_jobs_never_prune_the_warm_jobs_last_run(tmp_path: Path, state_db: Path | str) -> None:
    settings = settings_for(tmp_path, state_db, RETAIN_WARM_RUNS="1")
    clock = Clock()
    warm_id = warm_run(settings, clock, [f"{SITE}/p{i}" for i in range(5)])
    for _ in range(3):
        clock.at += timedelta(minutes=5)
        with JobRun(settings=settings, job="purge", now=clock) as purge:
            assert purge.state is not None
            store = WarmResultStore(purge.state, run_id=purge.run_id, now=purge.now)
            store.add(WarmResult(f"{SITE}/p0", "filled"))
            store.flush()
    conn = read_only(settings.state_db)
    assert cached_pages_estimate(conn) == 5
    assert {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM warm_results")} == {warm_id, purge.run_id}
