"""`make demo-fleet`: two nodes sharing one PostgreSQL state, each job run once per slot.

Starts a throwaway PostgreSQL cluster (demo/pgcluster.py), the demo site and the Cloudflare API
emulator on loopback, and two "nodes": node-a and node-b, each with its own STATE_DIR and LOCK_DIR
and the same STATE_DB URL, as two VPSes with the same crontab would be. For a few slots of the
schedule both nodes fire the same jobs at nearly the same moment (random offsets, as unsynchronised
clocks and cron start-up give), as the scheduler would: EDGECRON_TRIGGER=scheduler and EDGECRON_SLOT
set to the slot. Then it shows `jobs.py status` and, per slot and job, which node ran it and that the
other recorded `done-elsewhere`; every purged URL must have reached the Cloudflare emulator once.

Everything runs in a temporary directory; the cluster, the servers and any node still running are
stopped and the directory removed at exit, also on Ctrl-C or SIGTERM. Exit 0 when every slot ran once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]

from edgecron import runs  # noqa: E402
from edgecron.db import Database  # noqa: E402
from edgecron.outbox import PurgeOutbox  # noqa: E402
from edgecron.state import StateDB  # noqa: E402

from demo.pgcluster import ServerUnavailable, throwaway_cluster  # noqa: E402
from demo.run_demo import DEMO_TOKEN, DEMO_ZONE, Demo  # noqa: E402

PYTHON = sys.executable
NODES = ("node-a", "node-b")
SLOTS = 3  # consecutive 5-minute slots: every job below is scheduled */5 on both nodes
# (job, script and arguments exactly as the crontab runs them: only that command has a slot).
JOBS = (
    ("warm", ("warm_cache.py",)),
    ("purge", ("purge_cache.py", "outbox", "--retry")),
)
MAX_OFFSET_S = 0.3  # how far apart the two nodes start the same slot
URLS_PER_SLOT = 5  # purges a deploy queues before each slot


@dataclass
class Node:
    name: str
    env_file: Path

    def env(self, slot: str | None) -> dict[str, str]:
        """A scheduled run's environment for `slot` (as `jobs.py schedule` sets it), or a person's (None)."""
        env = {"EDGECRON_ENV_FILE": str(self.env_file), "PATH": "/usr/bin:/bin", "HOME": str(self.env_file.parent)}
        if slot is not None:
            env |= {runs.TRIGGER_ENV: "scheduler", runs.SLOT_ENV: slot}
        return env


@dataclass
class Fired:
    """One node's process for one job and slot."""

    node: str
    pid: int
    exit_code: int
    output: str


def slots(now: datetime, count: int) -> list[str]:
    """The latest `count` 5-minute fire times at or before now, oldest first (UTC, whole seconds)."""
    latest = now.astimezone(UTC).replace(second=0, microsecond=0)
    latest -= timedelta(minutes=latest.minute % 5)
    return [(latest - timedelta(minutes=5 * i)).isoformat() for i in reversed(range(count))]


def write_node(workdir: Path, name: str, *, state_db: str, common: dict[str, str]) -> Node:
    home = workdir / name
    (home / "state").mkdir(parents=True, exist_ok=True)
    env_file = home / ".env"
    env_file.touch(mode=0o600)  # it holds the (demo) token and the database URL: private
    lines = {**common, "NODE_NAME": name, "STATE_DIR": str(home / "state"), "LOCK_DIR": str(home / "locks"),
             "ACCESS_LOGS": str(home / "access.log"), "LOG_FORMAT": "edgecron"}  # fmt: skip
    (home / "access.log").touch()
    lines["STATE_DB"] = state_db
    env_file.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
    return Node(name=name, env_file=env_file)


def fire(nodes: list[Node], script: tuple[str, ...], slot: str, rng: random.Random) -> list[Fired]:
    """Start the job on every node for `slot`, each after its own random delay; wait for all."""
    procs: list[tuple[Node, subprocess.Popen[str]]] = []
    delays = sorted((rng.uniform(0, MAX_OFFSET_S), i) for i in range(len(nodes)))
    started = time.monotonic()
    try:
        for delay, index in delays:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            node = nodes[index]
            argv = [PYTHON, str(ROOT / "scripts" / script[0]), *script[1:]]
            proc = subprocess.Popen(
                argv,
                env=node.env(slot),
                cwd=node.env_file.parent,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append((node, proc))
        return [
            Fired(node=node.name, pid=proc.pid, output=proc.communicate(timeout=120)[0], exit_code=proc.returncode)
            for node, proc in procs
        ]
    finally:
        for _, proc in procs:  # Ctrl-C or a timeout: no node outlives the demo
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def runs_since(state: Database, after_id: int) -> list[dict[str, object]]:
    rows = state.execute("SELECT * FROM runs WHERE id > ? ORDER BY id", (after_id,)).fetchall()
    return [dict(zip(row.keys(), row, strict=True)) for row in rows]


def last_run_id(state: Database) -> int:
    return int(state.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0])


def describe(job: str, slot: str, fired: list[Fired], rows: list[dict[str, object]]) -> tuple[str, bool]:
    """One summary line for a job's slot, and whether exactly one node did the work."""
    node_of_pid = {f.pid: f.node for f in fired}
    parts = []
    done = 0
    for row in rows:
        node = str(row.get("node") or node_of_pid.get(int(str(row["pid"])), "?"))
        parts.append(f"{node} {row['status']}")
        done += row["status"] in ("ok", "problems")
    others = [row["status"] for row in rows if row["status"] not in ("ok", "problems")]
    once = done == 1 and others == ["done-elsewhere"] * (len(fired) - 1)
    return f"slot {slot[11:16]} UTC  {job:<6} " + ", ".join(parts) + ("" if once else "  <- not once"), once


def emulator_purged(api_url: str) -> Counter[str]:
    with urllib.request.urlopen(api_url + "/__emulator/purges", timeout=10) as response:
        record = json.loads(response.read())
    return Counter(url for p in record.get("purges", []) for url in p.get("body", {}).get("files", []))


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM ends the demo as Ctrl-C does: through every `finally`, so nothing is left running."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_fleet(workdir: Path, state_db: str, rng: random.Random) -> bool:
    demo = Demo(workdir)
    try:
        site_env = {"PATH": "/usr/bin:/bin", "EDGECRON_DEMO_CONTENT_DB": str(workdir / "site-content.db")}
        (workdir / NODES[0] / "state").mkdir(parents=True)  # the demo site is node-a's origin: its log is node-a's
        site = demo.start("site", "demo/site.py", "--port", "0", "--access-log", str(workdir / NODES[0] / "access.log"),
                          env=site_env)  # fmt: skip
        api = demo.start("cloudflare-api", "demo/cloudflare_api.py", "--port", "0", "--token", DEMO_TOKEN,
                         "--zone", DEMO_ZONE, "--plan", "free", "--site-purge-url", site + "/__edgecron/purge")  # fmt: skip
        common = {"SITE_URL": site, "CF_API_URL": api + "/client/v4", "CF_API_TOKEN": DEMO_TOKEN,
                  "CF_ZONE_ID": DEMO_ZONE, "CF_PLAN": "free", "WARM_RATE": "0",
                  "SCHEDULE_WARM": "*/5 * * * *"}  # fmt: skip
        nodes = [write_node(workdir, name, state_db=state_db, common=common) for name in NODES]
        print(f"demo site {site}, Cloudflare emulator {api}")
        print(f"nodes: {', '.join(NODES)}, each with its own STATE_DIR and LOCK_DIR under {workdir}")
        print(f"shared STATE_DB: {state_db}\n", flush=True)
        summary: list[str] = []
        all_once = True
        queued: list[str] = []
        with StateDB(state_db) as state:
            for slot in slots(datetime.now(UTC), SLOTS):
                urls = [f"{site}/blog/post-{len(queued) + i + 1}" for i in range(URLS_PER_SLOT)]
                PurgeOutbox(state).enqueue("url", urls, source="deploy", now=datetime.now(UTC))
                queued += urls
                print(
                    f"slot {slot}: a deploy queued {len(urls)} purges; both nodes fire warm, then purge",
                    flush=True,
                )
                for job, script in JOBS:
                    mark = last_run_id(state)
                    fired = fire(nodes, script, slot, rng)
                    for f in fired:
                        if f.exit_code != 0:
                            print(f"  {f.node} {job}: exit {f.exit_code}\n" + f.output[-2000:])
                    line, once = describe(job, slot, fired, runs_since(state, mark))
                    summary.append(line)
                    all_once &= once and all(f.exit_code == 0 for f in fired)
        print("\n=== jobs.py status (node-a's view of the fleet)", flush=True)
        subprocess.run([PYTHON, str(ROOT / "scripts" / "jobs.py"), "status"], env=nodes[0].env(None), cwd=workdir)
        purged = emulator_purged(api)
        twice = sorted(url for url, count in purged.items() if count > 1)
        missing = sorted(set(queued) - set(purged))
        print("\n=== per slot: who ran each job (the other node recorded done-elsewhere)")
        print("\n".join(summary))
        print(
            f"Cloudflare emulator: {len(purged)} of {len(queued)} queued URLs purged, "
            f"{len(twice)} purged more than once, {len(missing)} never"
        )
        return all_once and not twice and not missing
    finally:
        demo.stop_all()


def main() -> int:
    started = time.monotonic()
    rng = random.Random(int(os.environ.get("EDGECRON_DEMO_SEED", "13")))
    with stopped_by_sigterm():
        try:
            with tempfile.TemporaryDirectory(prefix="edgecron-fleet-") as tmp, throwaway_cluster() as cluster:
                version = cluster.psql("SHOW server_version").strip()
                print(f"PostgreSQL {version}: a throwaway cluster in {cluster.root}", flush=True)
                ok = run_fleet(Path(tmp), cluster.new_database(), rng)
        except ServerUnavailable as missing:
            print(f"demo-fleet: {missing}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ndemo-fleet interrupted: every demo process stopped, temp files removed.", file=sys.stderr)
            return 130
    print(f"\ndemo-fleet finished in {time.monotonic() - started:.1f} s; cluster, servers and nodes stopped.")
    if not ok:
        print("demo-fleet: some job did not run as it must in some slot (see above)", file=sys.stderr)
        return 1
    print("Every job ran exactly once per slot across the two nodes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
