"""Per node where it must be: log cursors keyed by (node, path), log slots added up across nodes,
findings that name their node, and `jobs.py status` showing the fleet.

Real scripts (check_logs.py, jobs.py) against a real state database on both backends; the "nodes"
are runs with different NODE_NAMEs sharing one STATE_DB.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import RunScript
from edgecron.accesslog import LogReader
from edgecron.config import load_settings
from edgecron.db import Database
from edgecron.errors import InputError
from edgecron.logcursors import UNOWNED
from edgecron.runner import JobRun
from edgecron.state import MIGRATIONS, iso, open_state
from edgecron.status import run_node

STAMP = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
NODE_MIGRATION = "601_log_cursors_node"


class Log:
    """An access log whose lines carry their number, so a line read twice or skipped shows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0

    def write(self, count: int, *, status: int = 200, rt: float = 0.05) -> None:
        with self.path.open("a") as fh:
            for _ in range(count):
                fh.write(
                    f'198.51.100.1 - - [{STAMP}] "GET /p{self.written} HTTP/1.1" {status} 10 "-" "ua" rt={rt:.3f} '
                    f'urt="{rt:.3f}" cs=MISS ray=- cip=- li=0 cc="-"\n'
                )
                self.written += 1


@pytest.fixture
def logs(workdir: Path, env_file: Path) -> tuple[Log, Log]:
    """Two nodes' access logs (web1's, web2's) and LOG_FORMAT; each run names its own with ACCESS_LOGS."""
    with env_file.open("a") as fh:
        fh.write("LOG_FORMAT=edgecron\n")
    return Log(workdir / "web1.access.log"), Log(workdir / "web2.access.log")


def check(run: RunScript, node: str, log: Log, *args: str) -> dict:  # type: ignore[type-arg]
    result = run("check_logs.py", "--json", *args, env={"NODE_NAME": node, "ACCESS_LOGS": str(log.path)})
    assert result.returncode in (0, 1), result.stderr
    doc: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    return doc


def cursor_rows(state_db: Path | str) -> list[tuple[str, str, int]]:
    with open_state(state_db) as state:
        rows = state.execute('SELECT node, path, "offset" FROM log_cursors ORDER BY node, path').fetchall()
    return [(row[0], row[1], int(row[2])) for row in rows]


# --- cursors per node ---------------------------------------------------------------------------------


# An upgrade is of a single-node SQLite file (the default backend).
def test_an_upgrade_keeps_the_cursors_saved_before_nodes(
    run_cli: RunScript, logs: tuple[Log, Log], state_db: Path
) -> None:
    log = logs[0]
    log.write(100)
    old_state(state_db, cursor_after=log)  # what the version before 601 saved, its positions included
    log.write(7)
    first = check(run_cli, "web1", log)
    assert first["summary"]["lines"] == 7  # neither the 100 read before the upgrade, nor fewer
    assert cursor_rows(state_db) == [("web1", str(log.path), log.path.stat().st_size)]  # claimed, not copied
    log.write(3)
    assert check(run_cli, "web1", log)["summary"]["lines"] == 3
    assert check(run_cli, "web1", log)["summary"]["lines"] == 0


@pytest.mark.both_backends
def test_each_node_keeps_its_own_position_for_the_same_path(run_cli: RunScript, logs: tuple[Log, Log]) -> None:
    log = logs[0]  # the same path on two nodes: /var/log/nginx/access.log on each
    log.write(100)
    assert check(run_cli, "web1", log)["summary"]["lines"] == 100
    assert check(run_cli, "web2", log)["summary"]["lines"] == 100  # its first check: its log from the start
    log.write(5)
    assert check(run_cli, "web1", log)["summary"]["lines"] == 5
    log.write(2)
    assert check(run_cli, "web2", log)["summary"]["lines"] == 7
    assert check(run_cli, "web1", log)["summary"]["lines"] == 2


@pytest.mark.both_backends
def test_every_node_checks_its_own_logs_in_the_same_scheduled_slot(
    run_cli: RunScript, logs: tuple[Log, Log], workdir: Path
) -> None:
    """check-logs is per node: cron fires it on every node at the same time and each reads its own log
    (never "done elsewhere": another node's check says nothing about this node's log)."""
    for log, count in zip(logs, (30, 20), strict=True):
        log.write(count)
    for node, log in (("web1", logs[0]), ("web2", logs[1])):
        env = {
            "NODE_NAME": node,
            "ACCESS_LOGS": str(log.path),
            "LOCK_DIR": str(workdir / node),
            "EDGECRON_TRIGGER": "cron",
        }
        result = run_cli("check_logs.py", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["summary"]["lines"] == log.written


# --- log slots: fleet-wide sums -------------------------------------------------------------------------


@pytest.mark.both_backends
def test_two_nodes_add_up_in_the_same_slots(run_cli: RunScript, logs: tuple[Log, Log], state_db: Path | str) -> None:
    """Each node checks its own log; the slots they share hold both nodes' requests (fleet-wide)."""
    web1, web2 = logs
    web1.write(60, rt=0.05)
    web2.write(40, rt=0.5)
    web2.write(4, status=502, rt=0.5)
    check(run_cli, "web1", web1)
    check(run_cli, "web2", web2)
    with open_state(state_db) as state:
        rows = state.execute("SELECT requests, errors_5xx, rt_hist FROM log_slots").fetchall()
    assert sum(int(r[0]) for r in rows) == 104  # neither node's count replaced the other's
    assert sum(int(r[1]) for r in rows) == 4
    hist: dict[str, int] = {}
    for row in rows:
        for key, n in json.loads(row[2]).items():
            hist[key] = hist.get(key, 0) + n
    assert sum(hist.values()) == 104 and hist["0.05"] == 60 and hist["0.50"] == 44  # 10 ms buckets


# --- findings --------------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_log_findings_name_their_node_and_job_health_is_fleet_wide(
    run_cli: RunScript, logs: tuple[Log, Log], env_file: Path, state_backend: str
) -> None:
    log = logs[1]
    log.write(80)
    log.write(20, status=503)
    result = run_cli("check_logs.py", env={"NODE_NAME": "web2", "ACCESS_LOGS": str(log.path)})
    assert result.returncode == 1
    assert "BREACH [critical] 5xx_rate on web2: 20 of 100 responses were 5xx" in result.stderr
    with env_file.open("a") as fh:
        fh.write(f"ACCESS_LOGS={log.path}\n")
    log.write(20, status=503)
    cfg = load_settings(env_file=env_file)
    with pytest.raises(InputError), JobRun(settings=cfg, job="warm", trigger="cron"):  # a scheduled warm failed
        raise InputError("the sitemap is not XML")
    doc = json.loads(run_cli("check_logs.py", "--json").stdout)
    by_check = {f["check"]: f for f in doc["findings"]}
    assert by_check["5xx_rate"]["node"] == socket.gethostname()  # NODE_NAME's default
    assert by_check["outbox_failing"]["node"] is None
    assert by_check["job_last_run:warm"]["status"] == "breach" and by_check["job_last_run:warm"]["node"] is None
    log.write(80)
    log.write(20, status=503)
    text = run_cli("check_logs.py").stderr
    assert "BREACH [critical] 5xx_rate" in text
    # One node on SQLite without NODE_NAME reads as it always did; a shared (PostgreSQL) state names it.
    assert (f"5xx_rate on {socket.gethostname()}: " in text) == (state_backend == "postgresql")


# --- jobs.py status ----------------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_status_shows_the_node_of_each_jobs_last_run_and_each_nodes_log_check(
    run_cli: RunScript, logs: tuple[Log, Log], state_db: Path | str
) -> None:
    web1, web2 = logs
    web1.write(10)
    web2.write(10)
    check(run_cli, "web1", web1)
    check(run_cli, "web2", web2)
    doc = json.loads(run_cli("jobs.py", "status", "--json", env={"NODE_NAME": "web1"}).stdout)
    jobs = {j["job"]: j for j in doc["jobs"]}
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert jobs["check-logs"]["last_status"] == "ok"
    assert jobs["check-logs"]["last_node"] == "web2"
    assert jobs["warm"]["last_node"] is None
    assert set(nodes) == {"web1", "web2"}
    for name in ("web1", "web2"):
        assert nodes[name]["logs"] == 1 and nodes[name]["logs_saved_at"] is not None
        assert nodes[name]["last_check_status"] == "ok" and nodes[name]["last_check_exit_code"] == 0
    assert nodes["web1"]["last_check_started"] < nodes["web2"]["last_check_started"]
    assert nodes["web1"]["logs_saved_at"] <= nodes["web2"]["logs_saved_at"]
    text = run_cli("jobs.py", "status", env={"NODE_NAME": "web1"}).stdout
    assert "log checks per node:" in text
    assert "  web1: " in text and "positions of 1 log(s) saved" in text
    header = next(line for line in text.splitlines() if line.startswith("job "))
    assert header.split()[:6] == ["job", "schedule", "last", "run", "node", "by"]
    on_disk = next(line for line in text.splitlines() if line.startswith("state on disk:"))
    if isinstance(state_db, Path):
        assert "(state.db " in on_disk and "MiB" in on_disk
    else:  # a database on a server has no size on this disk: said, not shown as 0.0 MiB
        assert "state in PostgreSQL" in on_disk and "state.db" not in on_disk


def test_status_of_one_node_reads_as_before(run_cli: RunScript, logs: tuple[Log, Log]) -> None:
    logs[0].write(10)
    check(run_cli, socket.gethostname(), logs[0])
    text = run_cli("jobs.py", "status").stdout
    header = next(line for line in text.splitlines() if line.startswith("job "))
    assert "node" not in header.split() and "log checks per node" not in text
    doc = json.loads(run_cli("jobs.py", "status", "--json").stdout)
    assert [n["node"] for n in doc["nodes"]] == [socket.gethostname()]  # its runs and its cursors: one node


@pytest.mark.both_backends
def test_a_runs_node_is_its_node_column_else_its_host(env_file: Path, state_db: Path | str) -> None:
    with JobRun(settings=load_settings(env_file=env_file), job="warm"):
        pass
    with open_state(state_db) as state:
        assert run_node(state.execute("SELECT * FROM runs").fetchone()) == socket.gethostname()
        if "node" not in {d[0] for d in state.execute("SELECT * FROM runs LIMIT 0").description}:
            state.execute("ALTER TABLE runs ADD COLUMN node TEXT")  # as migration 502 adds it
        state.execute("UPDATE runs SET node = NULL, host = 'old-host'")  # a run recorded before nodes were
        assert run_node(state.execute("SELECT * FROM runs").fetchone()) == "old-host"
        state.execute("UPDATE runs SET node = 'web3'")
        assert run_node(state.execute("SELECT * FROM runs").fetchone()) == "web3"


# --- helpers -----------------------------------------------------------------------------------------------


def old_state(path: Path, *, cursor_after: Log) -> None:
    """A state database as the version before per-node cursors left it: migrations up to 601 and the
    cursor it saved after reading the log to its end, in the old table's columns."""
    db = Database.open_sqlite(path, what="state database")
    db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, sql in MIGRATIONS:
        if name == NODE_MIGRATION:
            break
        db.execute_ddl(sql)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, iso(datetime.now(UTC))))
    reader = LogReader([cursor_after.path])
    assert sum(len(lines) for lines in reader.chunks()) == cursor_after.written
    [c] = reader.cursors()
    db.execute(
        'INSERT INTO log_cursors(path, dev, inode, "offset", head_len, head_sha256, lines, anchor_len, anchor_sha256,'
        " anchor_offset, rotated_sig, updated_at, run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            c.path,
            c.dev,
            c.inode,
            c.offset,
            c.head_len,
            c.head_sha256,
            c.lines,
            c.anchor_len,
            c.anchor_sha256,
            c.anchor_offset,
            c.rotated_sig,
            iso(datetime.now(UTC)),
            "old",
        ),
    )
    db.close()
    assert UNOWNED == ""  # what 601 gives the rows it keeps


@pytest.mark.both_backends
def test_a_check_logs_run_on_another_node_is_neither_abandoned_nor_dead(env_file: Path, state_db: Path | str) -> None:
    """check-logs' lock is per node: node B starting its check must not mark node A's live check
    abandoned, and B's status must not call it dead (B cannot see A's flock). Fails on the fleet-wide
    UPDATE (ops found it with demo-fleet: `job_died:check-logs`)."""
    from edgecron.health import read_job
    from edgecron.runs import RunOrigin, start_run

    now = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    settings = load_settings(env_file=env_file)
    with open_state(state_db) as state:
        start_run(state, run_id="a1", job="check-logs", started=now, origin=RunOrigin("cron", "web1", None, "c"))
        start_run(state, run_id="b1", job="check-logs", started=now, origin=RunOrigin("cron", "web2", None, "c"))
        statuses = dict(state.execute("SELECT run_id, status FROM runs").fetchall())
        assert statuses == {"a1": "running", "b1": "running"}
        health = read_job(state, "check-logs", lock_dir=settings.lock_dir, exclude_run="b1", node="web2")
        assert health.newest is not None and health.newest["run_id"] == "a1"
        assert not health.died
        # On web1 itself, with nobody holding web1's lock, the same row is a run that died.
        assert read_job(state, "check-logs", lock_dir=settings.lock_dir, exclude_run="b1", node="web1").died
        # A later run on web2 marks only web2's own dead row.
        start_run(state, run_id="b2", job="check-logs", started=now, origin=RunOrigin("cron", "web2", None, "c"))
        statuses = dict(state.execute("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {"a1": "running", "b1": "abandoned", "b2": "running"}
