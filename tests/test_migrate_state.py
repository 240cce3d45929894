"""`jobs.py migrate-state`: a populated SQLite state moved into a real PostgreSQL, and `jobs.py status`
shows the same history from there (issue 13's acceptance), through the real scripts.

The SQLite state is filled by real runs (import_stale.py from a feed file, check_logs.py on a log, a
failing import) plus the library's own run frame for a warm run and the outbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import RunScript
from edgecron.config import load_settings
from edgecron.db import Database
from edgecron.errors import InputError
from edgecron.lock import JobLock
from edgecron.migrate import copy_store, tables_of
from edgecron.outbox import PurgeOutbox
from edgecron.runner import JobRun
from edgecron.state import StateDB
from pgcluster import PgCluster

STAMP = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
SECRET = "s3cret-pw"


def with_password(url: str) -> str:
    """The test cluster trusts every connection: a password in the URL is carried, never checked."""
    return url.replace("postgresql://edgecron@", f"postgresql://edgecron:{SECRET}@")


@pytest.fixture
def target(pg_cluster: PgCluster) -> str:
    return with_password(pg_cluster.new_database())


@pytest.fixture
def populated(run_cli: RunScript, env_file: Path, workdir: Path) -> Path:
    """A single-node SQLite install after some real work: runs of every kind, an outbox, log cursors, content."""
    feed = workdir / "feed.jsonl"
    feed.write_text(
        "".join(
            json.dumps(
                {"id": f"k{i}", "url": f"http://www.example.com/a/k{i}", "updated_at": "2026-02-01T00:00:00Z"}
                | {"title": f"k{i}", "body": "b"}
            )
            + "\n"
            for i in range(30)
        )
    )
    log = workdir / "access.log"
    log.write_text(
        "".join(
            f'198.51.100.1 - - [{STAMP}] "GET /p{i} HTTP/1.1" {503 if i < 20 else 200} 10 "-" "ua" rt=0.050 '
            f'urt="0.050" cs=MISS ray=- cip=- li=0 cc="-"\n'
            for i in range(100)
        )
    )
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL=http://www.example.com\nIMPORT_SOURCE={feed}\nACCESS_LOGS={log}\nLOG_FORMAT=edgecron\n")
    assert run_cli("import_stale.py").returncode == 0
    assert run_cli("check_logs.py").returncode == 1  # a breach: a "problems" run
    cfg = load_settings(env_file=env_file)
    for job, error in (("warm", None), ("cache-rules", InputError("rule 2 is not JSON"))):
        with contextlib.suppress(InputError), JobRun(settings=cfg, job=job):
            if error is not None:
                raise error
    with StateDB(cfg.state_db) as state:
        state.execute("UPDATE outbox SET attempts=2, last_error='HTTP 500 from the API' WHERE value LIKE '%/k3'")
        PurgeOutbox(state).enqueue("tag", ["articles"], source="test", now=datetime.now(UTC))
    return workdir / "state"


def status_doc(run_cli: RunScript, **env: str) -> dict[str, Any]:
    result = run_cli("jobs.py", "status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def history(doc: dict[str, Any]) -> dict[str, Any]:
    """What status shows of the history: everything but the next due times (the clock moves on) and the
    bytes on this disk (a PostgreSQL state has none here)."""
    return {
        "jobs": [{k: v for k, v in job.items() if k != "next_due"} for job in doc["jobs"]],
        "nodes": doc["nodes"],
        "outbox": doc["outbox"],
    }


def test_migrate_state_moves_a_populated_sqlite_state_and_status_shows_the_same_history(
    run_cli: RunScript, populated: Path, target: str
) -> None:
    before = status_doc(run_cli)
    assert {j["job"]: j["last_status"] for j in before["jobs"]} == {
        "warm": "ok",
        "purge": None,
        "import": "ok",
        "check-logs": "problems",
        "cache-rules": "usage-error",
    }
    assert before["outbox"]["pending"] == 31 and before["outbox"]["failing"] == 1
    moved = run_cli("jobs.py", "migrate-state", "--to", target)
    assert moved.returncode == 0, moved.stderr
    assert SECRET not in moved.stdout + moved.stderr
    assert f"  STATE_DB={target.replace(SECRET, '***')}" in moved.stdout
    after = status_doc(run_cli, STATE_DB=target)
    assert history(after) == history(before)  # field by field, every job, node and outbox item
    assert (populated / "state.db").exists() and (populated / "content.db").exists()  # the way back stays
    # New rows go on from the copied ids (sequences moved): a run recorded now is the newest.
    log = populated.parent / "access.log"
    with log.open("a") as fh:
        fh.write(log.read_text().splitlines(keepends=True)[-1] * 3)
    checked = run_cli("check_logs.py", "--json", env={"STATE_DB": target})
    assert checked.returncode in (0, 1), checked.stderr
    assert json.loads(checked.stdout)["summary"]["lines"] == 3  # the log cursor moved with the state
    newest = {j["job"]: j for j in status_doc(run_cli, STATE_DB=target)["jobs"]}["check-logs"]
    assert newest["last_started"] > {j["job"]: j for j in before["jobs"]}["check-logs"]["last_started"]


def test_every_row_of_every_table_arrives(run_cli: RunScript, populated: Path, target: str) -> None:
    moved = run_cli("jobs.py", "migrate-state", "--to", target, "--json")
    assert moved.returncode == 0, moved.stderr
    doc = json.loads(moved.stdout)
    assert doc["content_note"] is None
    assert doc["env"] == {"STATE_DB": target.replace(SECRET, "***"), "CONTENT_DB": target.replace(SECRET, "***")}
    stores = {s["store"]: s for s in doc["stores"]}
    assert stores["content"]["tables"]["items"] == 30
    pg = Database.open_postgres(target, what="check")
    try:
        for store, file in (("state", "state.db"), ("content", "content.db")):
            expected = sqlite_rows(populated / file)
            assert stores[store]["tables"] == {name: len(rows) for name, rows in expected.items()}
            for name, rows in expected.items():
                got = [tuple(r) for r in pg.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall()]
                assert got == rows, name
    finally:
        pg.close()
    # The content store goes on from the copy: the same feed again changes nothing.
    again = run_cli("import_stale.py", "--json", env={"STATE_DB": target, "CONTENT_DB": target})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["unchanged"] == 30


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            name: [tuple(r) for r in db.execute(f'SELECT * FROM "{name}" ORDER BY 1')]
            for name in names
            if name != "schema_migrations"
        }


@pytest.fixture
def one_run(env_file: Path) -> None:
    """A SQLite state holding one warm run (what the refusals below need, no more)."""
    with JobRun(settings=load_settings(env_file=env_file), job="warm"):
        pass


def test_a_target_that_holds_rows_is_refused_and_named(run_cli: RunScript, one_run: None, target: str) -> None:
    assert run_cli("jobs.py", "migrate-state", "--to", target).returncode == 0
    again = run_cli("jobs.py", "migrate-state", "--to", target)
    assert again.returncode == 2
    assert "already holds rows in table runs (1)" in again.stderr
    assert "Nothing was changed" in again.stderr and SECRET not in again.stderr


def test_dry_run_counts_and_creates_nothing(run_cli: RunScript, populated: Path, target: str) -> None:
    dry = run_cli("jobs.py", "migrate-state", "--to", target, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    state = next(s for s in doc["stores"] if s["store"] == "state")
    with sqlite3.connect(populated / "state.db") as db:
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert state["tables"]["runs"] == runs and doc["dry_run"] is True
    pg = Database.open_postgres(target, what="check")
    try:
        assert tables_of(pg) == []
    finally:
        pg.close()
    text = run_cli("jobs.py", "migrate-state", "--to", target, "--dry-run").stdout
    assert "to copy (--dry-run: nothing copied)" in text and "STATE_DB=" not in text


def test_refused_while_a_job_holds_its_lock(run_cli: RunScript, one_run: None, target: str, env_file: Path) -> None:
    cfg = load_settings(env_file=env_file)
    # flock locks belong to the open file: one taken here is held against the command run below.
    with JobLock(cfg.lock_dir, "import") as lock:
        lock.acquire(now=datetime.now(UTC))
        refused = run_cli("jobs.py", "migrate-state", "--to", target)
    assert refused.returncode == 75
    assert f"pid {os.getpid()}" in refused.stderr and "stop the scheduler" in refused.stderr
    pg = Database.open_postgres(target, what="check")
    try:
        assert tables_of(pg) == []  # nothing created
    finally:
        pg.close()


def test_a_state_already_on_postgresql_or_missing_is_a_usage_error(run_cli: RunScript, target: str) -> None:
    missing = run_cli("jobs.py", "migrate-state", "--to", target)
    assert missing.returncode == 2 and "no state database to move" in missing.stderr
    on_pg = run_cli("jobs.py", "migrate-state", "--to", target, env={"STATE_DB": target})
    assert on_pg.returncode == 2 and "STATE_DB is already PostgreSQL" in on_pg.stderr
    assert SECRET not in missing.stderr + on_pg.stderr
    not_pg = run_cli("jobs.py", "migrate-state", "--to", "/tmp/state.db")
    assert not_pg.returncode == 2 and "--to is not a PostgreSQL URL" in not_pg.stderr


def test_a_failed_copy_leaves_the_target_empty(workdir: Path, target: str) -> None:
    """One transaction per store: a table the target refuses rolls back the tables copied before it."""
    with StateDB(workdir / "state" / "state.db") as source:
        source.execute(
            "INSERT INTO deploys(ref, deployed_at) VALUES ('v1', '2026-12-01T00:00:00+00:00')"
        )  # copied first (name order)…
        source.execute("INSERT INTO runs(run_id, job, started_at, exit_code) VALUES ('r', 'warm', 'x', 'not a number')")
        StateDB(target).close()
        pg = Database.open_postgres(target, what="target")
        try:
            with pytest.raises(Exception, match="refused a statement"):
                copy_store(source, pg, store="state")
            assert int(pg.execute("SELECT count(*) FROM deploys").fetchone()[0]) == 0  # …and rolled back
        finally:
            pg.close()
