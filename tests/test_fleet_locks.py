"""Two nodes, one PostgreSQL state: each job runs once per slot, the lock holder is named, kill -9 frees it.

A "node" is a real process with its own NODE_NAME, STATE_DIR and LOCK_DIR (so the local flocks never
meet) and the same STATE_DB on the worker's throwaway PostgreSQL. Slots are fired with EDGECRON_SLOT
and EDGECRON_TRIGGER=scheduler, as `jobs.py schedule` starts a run, so no test waits for real minutes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from edgecron.config import load_settings
from edgecron.lock import JobLockHeld, current_holder, job_lock
from edgecron.outbox import PurgeOutbox
from edgecron.pglock import JOB_LOCK_SPACE, FleetLock, job_key
from edgecron.schedule import slot_text
from edgecron.state import open_state
from pgcluster import PgCluster

from demo.cloudflare_api import CloudflareEmulator
from demo.site import DemoSite

ROOT = Path(__file__).resolve().parent.parent
ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "tok-fleet-5e1d"
SLOT_0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
COVERAGE_ENV = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


@dataclass
class Fleet:
    url: str
    root: Path

    def env(self, node: str, *, slot: str | None, trigger: str | None, extra: dict[str, str]) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / node),
            "LANG": "C.UTF-8",
            "EDGECRON_ENV_FILE": str(self.root / node / ".env"),
            "PYTHONDONTWRITEBYTECODE": "1",
            **{key: os.environ[key] for key in COVERAGE_ENV if key in os.environ},
        }
        if trigger:
            env["EDGECRON_TRIGGER"] = trigger
        if slot:
            env["EDGECRON_SLOT"] = slot
        return {**env, **extra}

    def start(
        self,
        node: str,
        script: str,
        *args: str,
        slot: str | None = None,
        trigger: str | None = "scheduler",
        **extra: str,
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / script), *args],
            env=self.env(node, slot=slot, trigger=trigger, extra=extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(
        self,
        node: str,
        script: str,
        *args: str,
        slot: str | None = None,
        trigger: str | None = "scheduler",
        **extra: str,
    ) -> subprocess.CompletedProcess[str]:
        proc = self.start(node, script, *args, slot=slot, trigger=trigger, **extra)
        out, err = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def runs(self, job: str) -> list[dict[str, object]]:
        with open_state(self.url) as state:
            rows = state.execute(
                "SELECT run_id, node, host, pid, slot, trigger, status, exit_code, error FROM runs WHERE job = ?"
                " ORDER BY id",
                (job,),
            ).fetchall()
            return [dict(zip(row.keys(), row, strict=True)) for row in rows]


# A node's launcher: one process per node that has imported the script once, then forks a fresh
# process per run (the run's own pid, sockets, PostgreSQL session and lock), as a pre-loading server
# does. Each run is the real script through its real edge (`_cli.main`); only the ~0.4 CPU-seconds
# of imports per run are saved, so 100 runs fit in seconds on a shared 2-CPU machine.
NODE_LAUNCHER = """
import importlib.util, json, os, sys, tempfile
root = sys.argv[1]
sys.path[:0] = [root + "/lib", root + "/scripts"]
import _cli
import psycopg, typer, edgecron.pglock, edgecron.schedule  # imported lazily by a run: once here instead
scripts = {}
for name in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location("script_" + name[:-3], root + "/scripts/" + name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    scripts[name] = module
    typer.main.get_command(module.app)  # what building a command imports (pydantic), once
for line in sys.stdin:
    order = json.loads(line)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        os.environ.update(order["env"])
        for key in order["unset"]:
            os.environ.pop(key, None)
        sys.argv = [root + "/scripts/" + order["script"], *order["args"]]
        code = 0
        try:
            _cli.main(scripts[order["script"]].app)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    code = os.waitstatus_to_exitcode(status)
    print(json.dumps({"code": code, "out": out.read().decode(), "err": err.read().decode()}), flush=True)
"""


class Node:
    """A node's launcher process; `fire` starts one run in a fresh forked process, `result` waits for it."""

    def __init__(self, fleet: Fleet, name: str, scripts: tuple[str, ...]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", NODE_LAUNCHER, str(ROOT), *scripts],
            env=fleet.env(name, slot=None, trigger=None, extra={}),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def fire(self, script: str, *args: str, env: dict[str, str]) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        order = {"script": script, "args": list(args), "env": env, "unset": []}
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["pid"])

    def result(self, timeout: float = 60.0) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        watchdog = threading.Timer(timeout, self.proc.kill)  # a hung run ends the launcher: readline gets ""
        watchdog.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            watchdog.cancel()
        assert line, f"{self.name}: no result within {timeout} s"
        answer = json.loads(line)
        return answer["code"], answer["out"], answer["err"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def api() -> Iterator[CloudflareEmulator]:
    with CloudflareEmulator(token=TOKEN, zone=ZONE, plan="enterprise") as emulator:
        yield emulator


@pytest.fixture
def fleet(pg_cluster: PgCluster, tmp_path: Path, api: CloudflareEmulator) -> Fleet:
    """node-a and node-b: own STATE_DIR and LOCK_DIR, one STATE_DB; purges go to the emulator."""
    url = pg_cluster.new_database()
    for node in ("node-a", "node-b"):
        (tmp_path / node).mkdir()
        env_file = tmp_path / node / ".env"
        env_file.write_text(
            f"STATE_DIR={tmp_path / node / 'state'}\nSTATE_DB={url}\nNODE_NAME={node}\n"
            f"SITE_URL=https://www.example.com\nCF_API_TOKEN={TOKEN}\nCF_ZONE_ID={ZONE}\nCF_API_URL={api.base_url}\n"
            # A yearly schedule: a cron-started run's slot (computed from now) cannot change mid-test.
            "SCHEDULE_PURGE=0 0 1 1 *\n"
        )
        env_file.chmod(0o600)
    return Fleet(url, tmp_path)


def purged(api: CloudflareEmulator) -> Counter[str]:
    return Counter(u for p in api.snapshot()["purges"] for u in p["body"].get("files", []))


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_two_nodes_fifty_slots_each_runs_once_and_each_purge_is_sent_once(
    fleet: Fleet, api: CloudflareEmulator
) -> None:
    """The acceptance run: per slot both nodes start the purge job, the second a random moment after
    the first (seeded); per slot exactly one run completes and the other is done-elsewhere, silent."""
    rng = random.Random(13)
    queued: list[str] = []
    nodes = {name: Node(fleet, name, ("purge_cache.py",)) for name in ("node-a", "node-b")}
    try:
        with open_state(fleet.url) as state:
            outbox = PurgeOutbox(state)
            for k in range(50):
                slot = slot_text(SLOT_0 + timedelta(minutes=5 * k))
                urls = [f"https://www.example.com/slot-{k}/{i}" for i in range(3)]
                outbox.enqueue("url", urls, source="test", now=SLOT_0)
                queued += urls
                order = rng.sample(["node-a", "node-b"], 2)
                scheduled = {"EDGECRON_TRIGGER": "scheduler", "EDGECRON_SLOT": slot}
                nodes[order[0]].fire("purge_cache.py", "outbox", "--retry", env=scheduled)
                time.sleep(rng.uniform(0, 0.15))  # from "both at once" to "the first has finished"
                nodes[order[1]].fire("purge_cache.py", "outbox", "--retry", env=scheduled)
                for name in order:
                    assert nodes[name].result() == (0, "", ""), (k, name)
    finally:
        for node in nodes.values():
            node.close()
    by_slot: dict[object, list[tuple[object, object]]] = defaultdict(list)
    for row in fleet.runs("purge"):
        by_slot[row["slot"]].append((row["status"], row["node"]))
    assert len(by_slot) == 50
    for slot, outcomes in by_slot.items():
        assert sorted(status for status, _ in outcomes) == ["done-elsewhere", "ok"], (slot, outcomes)
        assert {node for _, node in outcomes} == {"node-a", "node-b"}, (slot, outcomes)
    assert purged(api) == Counter(queued)  # every item once: none twice, none left behind


def _status_json(fleet: Fleet, node: str) -> dict[str, object]:
    done = fleet.run(node, "jobs.py", "status", "--json", trigger=None)
    assert done.returncode == 0, done.stderr
    [warm] = [j for j in json.loads(done.stdout)["jobs"] if j["job"] == "warm"]
    return warm  # type: ignore[no-any-return]


@pytest.mark.slow
def test_the_holder_is_named_fleet_wide_and_kill_9_frees_the_lock_for_the_next_slot(fleet: Fleet) -> None:
    slot_1, slot_2 = slot_text(SLOT_0), slot_text(SLOT_0 + timedelta(minutes=30))
    with DemoSite(pages=30, latency=5.0) as site:  # the holder would warm for minutes: it is killed first
        warm = {"SITE_URL": site.url, "WARM_RATE": "0", "WARM_CONCURRENCY": "1"}
        holder = fleet.start("node-a", "warm_cache.py", slot=slot_1, **warm)  # the scheduled command: no arguments
        try:
            wait_for(lambda: site.state.stats["requests"] >= 1)  # it holds the lock and is warming
            # A person on node-b is told who holds it: node, pid, start.
            manual = fleet.run("node-b", "warm_cache.py", "--urls-file", "/dev/null", trigger=None)
            assert manual.returncode == 75
            [line] = [x for x in manual.stderr.splitlines() if x.startswith("Error: ")]
            assert f"pid {holder.pid} on node-a ({socket.gethostname()}), started " in line, line
            assert "postgresql://" in line and "no other run of this job on any node" in line
            # jobs.py status on node-b shows node-a's run holding the lock.
            shown = _status_json(fleet, "node-b")["lock_holder"]
            assert isinstance(shown, dict), (holder.poll(), fleet.runs("warm"))
            assert (shown["node"], shown["pid"], shown["slot"]) == ("node-a", holder.pid, slot_1)
            # node-b's scheduler firing the same slot: done elsewhere, silent; an older slot: skipped, 75.
            same = fleet.run("node-b", "warm_cache.py", slot=slot_1, **warm)
            assert (same.returncode, same.stdout, same.stderr) == (0, "", "")
            older = fleet.run("node-b", "warm_cache.py", slot=slot_text(SLOT_0 - timedelta(minutes=30)), **warm)
            assert (older.returncode, older.stdout, older.stderr) == (75, "", "")
            # A person on node-b who waits (--wait) gets the lock once the holder is gone.
            waiting = fleet.start("node-b", "warm_cache.py", "--urls-file", "/dev/null", "--wait", "60", trigger=None)
            local = fleet.root / "node-b" / "state" / "locks"
            wait_for(lambda: getattr(current_holder(local, "warm"), "pid", None) == waiting.pid)  # node-b's flock
            time.sleep(0.3)  # …and it is asking PostgreSQL, every 0.2 s
            os.kill(holder.pid, signal.SIGKILL)
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.communicate(timeout=10)
        assert holder.returncode == -signal.SIGKILL
        waited = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, waited
        site.state.latency = 0.0
        # The server ended the killed run's session, and its lock with it: node-b runs the next slot.
        following = fleet.run("node-b", "warm_cache.py", slot=slot_2, SITE_URL=site.url, WARM_RATE="0")
        assert following.returncode == 0, following.stderr
    rows = fleet.runs("warm")
    assert [(r["node"], r["status"], r["slot"]) for r in rows] == [
        ("node-a", "abandoned", slot_1),  # marked by the next run that took the lock
        ("node-b", "skipped", None),
        ("node-b", "done-elsewhere", slot_1),
        ("node-b", "skipped", slot_text(SLOT_0 - timedelta(minutes=30))),
        ("node-b", "ok", None),  # the run that waited
        ("node-b", "ok", slot_2),
    ]
    assert f"being run on node-a (pid {rows[0]['pid']} on node-a" in str(rows[2]["error"])
    assert _status_json(fleet, "node-a")["lock_holder"] is None
    with open_state(fleet.url) as state:  # the killed run's holder row was cleared by the next holder
        assert state.execute("SELECT count(*) FROM job_locks").fetchone()[0] == 0


@pytest.mark.slow
def test_manual_runs_are_never_done_elsewhere_and_cron_runs_find_their_slot(fleet: Fleet) -> None:
    """Cron-started runs compute the slot from now (SCHEDULE_PURGE is yearly here): the second node's
    run for it is done-elsewhere; a person's run on either node always runs."""
    first = fleet.run("node-a", "purge_cache.py", "outbox", "--retry", trigger="cron")
    assert first.returncode == 0, first.stderr
    second = fleet.run("node-b", "purge_cache.py", "outbox", "--retry", trigger="cron")
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    manual = fleet.run("node-b", "purge_cache.py", "outbox", "--retry", trigger=None)
    assert manual.returncode == 0, manual.stderr
    # A line of one's own in the crontab (EDGECRON_TRIGGER=cron covers it too) is other work: it runs.
    own = fleet.run("node-b", "purge_cache.py", "urls", "/own-line", trigger="cron")
    assert own.returncode == 0, own.stderr
    year = slot_text(datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC))
    assert [(r["node"], r["trigger"], r["status"], r["slot"]) for r in fleet.runs("purge")] == [
        ("node-a", "cron", "ok", year),
        ("node-b", "cron", "done-elsewhere", year),
        ("node-b", "manual", "ok", None),
        ("node-b", "cron", "ok", None),
    ]


def test_job_locks_and_write_transactions_never_block_each_other(pg_cluster: PgCluster) -> None:
    """Job locks use the two-int4 advisory key space, db.py's write transactions the one-bigint space:
    a held job lock never delays a write, and one job's lock never another's."""
    url = pg_cluster.new_database()
    warm = FleetLock(url, "warm", node="node-a")
    warm.acquire(now=SLOT_0)
    try:
        with open_state(url) as state:
            with state.transaction():  # pg_advisory_xact_lock(<state key>) while the job lock is held
                state.execute("INSERT INTO deploys(ref, deployed_at) VALUES ('r1', ?)", (SLOT_0.isoformat(),))
            spaces = state.execute(
                "SELECT objsubid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid::bigint = ? AND objid::bigint = ?",
                (JOB_LOCK_SPACE & 0xFFFFFFFF, job_key("warm") & 0xFFFFFFFF),
            ).fetchall()
            assert [row[0] for row in spaces] == [2]
            purge = FleetLock(url, "purge", node="node-b")
            purge.acquire(now=SLOT_0)  # another job: its own key
            purge.release()
            with pytest.raises(JobLockHeld) as held:
                FleetLock(url, "warm", node="node-b").acquire(now=SLOT_0)
            assert held.value.holder is not None and held.value.holder.node == "node-a"
    finally:
        warm.release()
    again = FleetLock(url, "warm", node="node-b")
    again.acquire(now=SLOT_0)  # released: free again
    again.release()


@pytest.mark.slow
def test_check_logs_runs_on_every_node_in_the_same_slot(fleet: Fleet) -> None:
    """Each node's access logs are its own: check-logs takes only the node's flock (a check running on
    node-a holds nobody up on node-b) and a slot is done only by this node's own completed check."""
    slot = slot_text(SLOT_0)
    logs = {}
    for node in ("node-a", "node-b"):
        logs[node] = fleet.root / node / "access.log"
        logs[node].write_text("")
    node_a = load_settings(environ={}, env_file=fleet.root / "node-a" / ".env")
    held = job_lock(node_a, "check-logs")
    held.acquire(now=SLOT_0, slot=slot)  # node-a's check of this slot, running
    try:
        other = fleet.run("node-b", "check_logs.py", slot=slot, ACCESS_LOGS=str(logs["node-b"]))
    finally:
        held.release()
    assert other.returncode in (0, 1), other.stderr  # ran: 1 = it found breaches (no job has run here)
    ran = fleet.run("node-a", "check_logs.py", slot=slot, ACCESS_LOGS=str(logs["node-a"]))
    assert ran.returncode in (0, 1), ran.stderr
    again = fleet.run("node-a", "check_logs.py", slot=slot, ACCESS_LOGS=str(logs["node-a"]))
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    completed = {"ok": "completed", "problems": "completed"}  # problems: breaches found, work done
    assert [(r["node"], completed.get(str(r["status"]), r["status"]), r["slot"]) for r in fleet.runs("check-logs")] == [
        ("node-b", "completed", slot),
        ("node-a", "completed", slot),
        ("node-a", "done-elsewhere", slot),
    ]
