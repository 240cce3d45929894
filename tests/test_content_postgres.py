"""The content store on a real PostgreSQL (CONTENT_DB): the same import gives the same rows as on
SQLite, a kill -9 anywhere then a rerun equals an uninterrupted run, a rollback restores and purges
as on SQLite, and the schema rules (version, read-only, check-db) hold there too."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from content_stores import item_rows, kill_import_at, tables_in, written
from edgecron.content import ContentStore
from edgecron.contentschema import CONTENT_TABLES, SCHEMA, VERSION_TABLE
from edgecron.errors import StateError
from edgecron.feed import Validator
from edgecron.feedfiles import JsonlSource
from edgecron.importer import Importer, ImportOptions, forward_purges
from edgecron.outbox import PurgeOutbox
from edgecron.retention import RetentionPolicy
from edgecron.state import open_state
from pgcluster import PgCluster

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "import_stale.py"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOST = "www.example.com"


def item(key: str, body: str = "b", *, stamp: str = "2026-02-01T00:00:00Z") -> dict[str, object]:
    return {"id": key, "url": f"https://{HOST}/a/{key}", "updated_at": stamp, "title": key, "body": body}


def write_feed(path: Path, items: list[object]) -> Path:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return path


def run_import(store: ContentStore, feed: Path, *, run_id: str, now: datetime = NOW) -> dict[str, int]:
    importer = Importer(
        store=store,
        source=JsonlSource(feed),
        validator=Validator(allowed_hosts=(HOST,), max_body_bytes=1000),
        options=ImportOptions(batch_size=4, max_reject_rate=0.5),
        run_id=run_id,
        now=lambda: now,
    )
    return importer.run().counts


# Keys whose order differs between byte order and a language collation, duplicates, a tombstone, a reject.
FIRST = [item(k) for k in ("Zeta", "alpha", "Ärger", "b_1", "b-2", "émile", "x")] + ['{"id": 1}']
SECOND = [
    item("alpha", "edited", stamp="2026-02-02T00:00:00Z"),
    {"id": "b_1", "deleted": True},
    item("new", stamp="2026-02-02T00:00:00Z"),
    item("Zeta", "first", stamp="2026-02-02T00:00:00Z"),
    item("Zeta", "last", stamp="2026-02-03T00:00:00Z"),
    item("x"),
]


def history(store: ContentStore) -> dict[str, Any]:
    """Everything a run leaves besides the items, without ids (each engine numbers its own)."""
    columns = "run_id, key, action, prev_url, prev_updated_at, prev_title, prev_body, prev_extra, prev_hash, new_hash"
    return {
        "runs": sorted(tuple(r) for r in store.execute("SELECT * FROM import_runs")),
        "versions": sorted(tuple(r) for r in store.execute(f"SELECT {columns} FROM versions")),
        "checkpoints": [tuple(r) for r in store.execute("SELECT * FROM checkpoints")],
        "removed": sorted(tuple(r) for r in store.execute("SELECT * FROM removed_keys")),
        "rejects": sorted(tuple(r)[1:] for r in store.execute("SELECT * FROM rejects")),
    }


def test_the_same_feeds_give_the_same_rows_on_sqlite_and_postgresql_and_a_rerun_writes_nothing(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    first, second = write_feed(tmp_path / "1.jsonl", FIRST), write_feed(tmp_path / "2.jsonl", SECOND)
    results = {}
    for location in (tmp_path / "content.db", pg_cluster.new_database()):
        with ContentStore(location) as store:
            counts = [run_import(store, first, run_id="r1"), run_import(store, second, run_id="r2")]
            before = written(location)
            again = run_import(store, second, run_id="r3")
            assert written(location) == before  # not one row written (on PostgreSQL: not one rewritten)
            assert (again["inserted"], again["updated"], again["removed"]) == (0, 0, 0)
            results[store.dialect] = (item_rows(location), store.snapshot(), counts, history(store))
    assert results["postgresql"] == results["sqlite"]
    rows, snapshot, counts, _ = results["postgresql"]
    assert [r[0] for r in rows] == ["Zeta", "alpha", "b-2", "new", "x", "Ärger", "émile"]  # byte order
    assert snapshot == rows
    assert (counts[1]["updated"], counts[1]["removed"], counts[1]["inserted"], counts[0]["rejected"]) == (3, 1, 1, 1)


def test_a_rollback_on_postgresql_restores_and_queues_purges_as_on_sqlite(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    first, second = write_feed(tmp_path / "1.jsonl", FIRST), write_feed(tmp_path / "2.jsonl", SECOND)
    url = pg_cluster.new_database()
    outcomes = {}
    # On PostgreSQL, state and content share one database: their table names do not collide.
    for content, state_at in ((tmp_path / "content.db", tmp_path / "state.db"), (url, url)):
        with open_state(state_at) as state, ContentStore(content) as store:
            run_import(store, first, run_id="r1")
            before = store.snapshot()
            run_import(store, second, run_id="r2")
            forward_purges(store, PurgeOutbox(state), now=NOW)
            state.execute("UPDATE outbox SET status = 'done'")  # as if the purge job had sent them
            copy = store.backup(tmp_path / "backups", keep=2, now=NOW, label=store.dialect)
            assert (copy is None) == store.is_postgres  # PostgreSQL: no file copy, its own backups cover it
            result = store.rollback("r2", run_id="rb", now=NOW)
            forward_purges(store, PurgeOutbox(state), now=NOW)
            assert store.snapshot() == before
            queued = sorted((i.value, i.source) for i in PurgeOutbox(state).open_items())
            outcomes[store.dialect] = (result.restored, result.removed, sorted(result.urls), queued, history(store))
    assert outcomes["postgresql"] == outcomes["sqlite"]
    restored, removed, urls, queued, _ = outcomes["postgresql"]
    assert (restored, removed) == (3, 1)  # alpha, b_1, Zeta back; new gone
    assert queued == [(u, "import:rb") for u in urls] and len(urls) == 4


def test_history_older_than_the_rollback_window_is_pruned_on_postgresql(tmp_path: Path, pg_cluster: PgCluster) -> None:
    with ContentStore(pg_cluster.new_database(), retention=RetentionPolicy(versions=timedelta(days=30))) as store:
        for day in (0, 40, 70):
            now = NOW + timedelta(days=day)
            feed = write_feed(tmp_path / f"{day}.jsonl", [item("a", f"day {day}", stamp=now.isoformat())])
            run_import(store, feed, run_id=f"day{day}", now=now)
        kept = {row[0] for row in store.execute("SELECT run_id FROM versions")}
        runs = {row["run_id"] for row in store.runs()}
    assert kept == runs == {"day40", "day70"}  # day 0 left the window when day 70 finished


def test_a_commit_the_server_never_answers_is_a_typed_error_not_a_traceback(pg_cluster: PgCluster) -> None:
    url = pg_cluster.new_database()
    with (
        ContentStore(url) as store,
        psycopg.connect(url, autocommit=True) as admin,
        pytest.raises(StateError, match="stopped answering"),
        store.transaction(),
    ):
        store.execute("DELETE FROM items")
        sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        (pid,) = admin.execute(sql).fetchone()
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            time.sleep(0.01)  # gone before the COMMIT is sent


def test_what_psycopg_logs_while_closing_a_broken_connection_stays_off_a_cron_runs_stderr() -> None:
    # psycopg warns "error ignored terminating <Pipeline [BAD]>" when a server vanishes mid-batch; a
    # script sets up no logging, so Python printed it above the script's own Error line.
    code = "from edgecron.db import import_psycopg; import logging; import_psycopg(); logging.getLogger('psycopg').warning('x')"
    done = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT / "lib")}, capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_state_and_content_tables_do_not_collide_in_one_database(pg_cluster: PgCluster) -> None:
    url = pg_cluster.new_database()
    with open_state(url):
        state_tables = set(tables_in(url))
    with ContentStore(url):
        pass
    assert set(tables_in(url)) == state_tables | {*CONTENT_TABLES, VERSION_TABLE}
    assert state_tables & {*CONTENT_TABLES, VERSION_TABLE} == set()


def test_the_schema_version_rules_hold_on_postgresql(pg_cluster: PgCluster) -> None:
    url = pg_cluster.new_database()
    with ContentStore(url, readonly=True) as empty:  # no schema yet: an empty store, nothing created
        assert (empty.exists, empty.count("items")) == (False, 0)
    assert tables_in(url) == []
    with ContentStore(url), ContentStore(url) as again:  # a second open migrates nothing
        assert again.exists and again.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall() == [(2,)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE removed_keys; UPDATE {VERSION_TABLE} SET version = 1")  # a schema 1 store
    with pytest.raises(StateError, match="needs a schema upgrade"):
        ContentStore(url, readonly=True)
    with ContentStore(url) as upgraded:  # version 1 lacked removed_keys: the upgrade adds it
        assert upgraded.removed_by_feed(["a"]) == {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = 99")
    with pytest.raises(StateError, match="newer schema"):
        ContentStore(url)


def test_check_db_on_postgresql_reads_the_plans_and_flags_a_missing_key_index(
    run_cli, env_file: Path, pg_cluster: PgCluster
) -> None:
    url = pg_cluster.new_database()
    missing = run_cli(SCRIPT, "check-db", env={"CONTENT_DB": url})
    assert (missing.returncode, missing.stderr.splitlines()[0]) == (2, f"Error: there is no content store yet: got '{url}', expected an import run first.")  # fmt: skip
    ContentStore(url).close()
    good = run_cli(SCRIPT, "check-db", "--json", env={"CONTENT_DB": url})
    assert good.returncode == 0, good.stderr
    doc = json.loads(good.stdout)
    assert doc["full_scans"] == [] and "Index Scan using items_pkey on items" in doc["plans"]["item by key"][0]
    assert {"table": "items", "name": "items_pkey", "unique": True, "columns": ["key"]} in doc["indexes"]
    broken = pg_cluster.new_database()
    with psycopg.connect(broken, autocommit=True) as conn:  # a store whose items lost their key index
        conn.execute(SCHEMA.replace("key TEXT PRIMARY KEY NOT NULL", "key TEXT NOT NULL").replace("INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY"))  # fmt: skip
        conn.execute(f"CREATE TABLE {VERSION_TABLE} (version BIGINT NOT NULL); INSERT INTO {VERSION_TABLE} VALUES (2)")
    bad = run_cli(SCRIPT, "check-db", env={"CONTENT_DB": broken})
    assert bad.returncode == 1 and "full table scan for item by key" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


# --- kill -9 at random points, then a rerun ------------------------------------------------------------

BASE = [item(f"k{i:04d}", stamp=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(600)]
CHANGED = [
    {"id": f"k{i:04d}", "deleted": True}
    if i % 7 == 3
    else item(f"k{(i * 13) % 1200:04d}", f"dup {i}", stamp="2026-02-03T00:00:00Z")
    if i % 11 == 5
    else item(f"k{i:04d}", f"v2 {i}", stamp=f"2026-02-02T00:{i // 60 % 60:02d}:{i % 60:02d}Z")
    for i in range(1200)
]


def prepared(home: Path, url: str, base_env: dict[str, str], run_cli: Any) -> dict[str, str]:
    """A home whose PostgreSQL store holds BASE imported, its feed now CHANGED: the run environment."""
    (home / "state").mkdir(parents=True)
    env_file = home / ".env"
    env_file.write_text(
        f"STATE_DIR={home / 'state'}\nCONTENT_DB={url}\nSITE_URL=https://{HOST}\n"
        f"IMPORT_SOURCE={home / 'feed.jsonl'}\nIMPORT_BATCH=20\n"
    )
    env_file.chmod(0o600)
    env = {**base_env, "EDGECRON_ENV_FILE": str(env_file), "HOME": str(home)}
    write_feed(home / "feed.jsonl", BASE)
    assert run_cli(SCRIPT, env=env).returncode == 0
    write_feed(home / "feed.jsonl", CHANGED)
    return env


def resume_index(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT resume_index FROM checkpoints").fetchone()
    return int(row[0] or 0) if row else 0


def net_changes(url: str) -> dict[str, tuple[str | None, str | None]]:
    """Per key, what the runs after the first (BASE) changed: the hash before the first change and
    the hash after the last, each change continuing from the previous one's result."""
    with psycopg.connect(url) as conn:
        (base_run,) = conn.execute("SELECT run_id FROM import_runs ORDER BY started_at LIMIT 1").fetchone()
        rows = conn.execute(
            "SELECT key, prev_hash, new_hash FROM versions WHERE run_id != %s ORDER BY id", (base_run,)
        ).fetchall()
    chains: dict[str, tuple[str | None, str | None]] = {}
    for key, prev, new in rows:
        if key in chains:
            assert chains[key][1] == prev, f"{key}: a change that does not continue from the previous one"
            chains[key] = (chains[key][0], new)
        else:
            chains[key] = (prev, new)
    return chains


def checkpoint_of(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        sql = "SELECT source, cursor_updated_at, cursor_key, resume_index, high_updated_at FROM checkpoints"
        return [(Path(row[0]).name, *row[1:]) for row in conn.execute(sql)]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_random_points_on_postgresql_then_rerun_equals_an_uninterrupted_run(
    seed: int, run_cli, base_env: dict[str, str], tmp_path: Path, pg_cluster: PgCluster
) -> None:
    reference_url, victim_url = pg_cluster.new_database(), pg_cluster.new_database()
    reference_env = prepared(tmp_path / "reference", reference_url, base_env, run_cli)
    assert run_cli(SCRIPT, env=reference_env).returncode == 0

    victim_env = prepared(tmp_path / "victim", victim_url, base_env, run_cli)
    rng = random.Random(seed)
    with psycopg.connect(victim_url, autocommit=True) as watch:
        targets = sorted(rng.sample(range(40, 1160), 3))  # kill after this many lines are committed
        killed_mid_run = kill_import_at(targets, env=victim_env, progress=lambda: resume_index(watch), rng=rng)
        unfinished = resume_index(watch)
    final = run_cli(SCRIPT, "--json", env=victim_env)
    assert final.returncode == 0, final.stderr
    assert (json.loads(final.stdout)["resumed_from"] is not None) == bool(unfinished)
    assert killed_mid_run >= 2, f"only {killed_mid_run} kills landed mid-run"

    again = json.loads(run_cli(SCRIPT, "--json", env=victim_env).stdout)["counts"]
    assert (again["inserted"], again["updated"], again["removed"]) == (0, 0, 0)
    assert item_rows(victim_url) == item_rows(reference_url)
    assert net_changes(victim_url) == net_changes(reference_url)
    assert checkpoint_of(victim_url) == checkpoint_of(reference_url)


def test_a_server_that_drops_the_import_mid_run_keeps_the_committed_batches_and_the_rerun_continues(
    run_cli, base_env: dict[str, str], tmp_path: Path, pg_cluster: PgCluster
) -> None:
    url = pg_cluster.new_database()
    env = prepared(tmp_path / "home", url, base_env, run_cli)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    with psycopg.connect(url, autocommit=True) as admin:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and resume_index(admin) < 100:
            time.sleep(0.002)
        admin.execute(  # what a restarted server or a failover does to the run's session
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        _, stderr = proc.communicate(timeout=60)
        kept_at = resume_index(admin)
    assert proc.returncode != 0 and kept_at >= 100
    lines = stderr.decode().splitlines()
    assert lines[0].startswith(f"Error: content store {url} stopped answering"), stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert lines[-1].startswith("Kept from this run: ") and f"checkpoint after line {kept_at}." in lines[-1]
    rerun = run_cli(SCRIPT, "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["resumed_from"] == f"line {kept_at}"
