"""Storage bench (issue 13): the state operations the jobs do, timed on SQLite and on PostgreSQL in one run.

SQLite is what a single VPS runs: WAL mode, a fresh `state.db` in a temp dir. PostgreSQL is a throwaway
cluster from the installed server binaries (demo/pgcluster.py), reached over loopback TCP, a fresh
database each; without server binaries that half is skipped, saying so. Both sides run the library's
real code (outbox, runs, warm results, log cursors, import), so every write transaction pays what it
pays in production: `BEGIN IMMEDIATE` on SQLite, a transaction plus the store's advisory lock on PostgreSQL.
Neither side syncs to disk on each commit (SQLite's synchronous=NORMAL in WAL mode; the cluster runs
with fsync off), so the ratio is the engines' and the round trips', not the disk's.
Each engine runs the whole set 3 times, alternating, each time on a fresh database, and each
operation's fastest run is printed: one run on a shared 2-CPU machine swings by a factor of two.

`python bench/bench_storage.py --sqlite-only` times the SQLite half alone: copied into an older
checkout's bench/, it measures that checkout's library (the before/after of the storage layer).
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]

from edgecron import runs  # noqa: E402
from edgecron.content import ContentStore  # noqa: E402
from edgecron.errors import StateError  # noqa: E402
from edgecron.feed import Validator  # noqa: E402
from edgecron.feedfiles import JsonlSource  # noqa: E402
from edgecron.importer import Importer, ImportOptions, forward_purges  # noqa: E402
from edgecron.logcursors import Cursor, save_cursors  # noqa: E402
from edgecron.outbox import PurgeOutbox  # noqa: E402
from edgecron.runs import finish_run, start_run  # noqa: E402
from edgecron.state import StateDB  # noqa: E402
from edgecron.warm import WarmResult, WarmResultStore  # noqa: E402

N_URLS = 10_000
CLAIM_BATCH = 30  # the Free plan's URLs per purge call
N_RUNS = 1_000
N_CURSOR_SAVES = 1_000
N_ITEMS = 10_000
HOST = "www.example.com"
NODE = "bench-node"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REPEATS = 3


@dataclass(frozen=True)
class Figure:
    operation: str
    unit: str
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def urls(n: int) -> list[str]:
    return [f"https://{HOST}/post/{i}" for i in range(n)]


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def outbox_figures(state: StateDB) -> list[Figure]:
    outbox = PurgeOutbox(state)
    enqueue = timed(lambda: outbox.enqueue("url", urls(N_URLS), source="bench", now=NOW))

    def drain() -> None:
        left = N_URLS  # counted down, never a claim of nothing: on PostgreSQL that one fails (`IN ()`)
        while left:
            batch = outbox.claim("url", CLAIM_BATCH, run_id="bench", now=NOW)
            outbox.mark_done([item.id for item in batch], result_id="bench", now=NOW)
            left -= len(batch)

    drained = timed(drain)
    assert int(outbox.counts()["pending"]) == 0
    return [
        Figure(f"outbox enqueue {N_URLS:,} URLs (one transaction)", "URL/s", N_URLS, enqueue),
        Figure(f"outbox claim + mark done, batches of {CLAIM_BATCH}", "URL/s", N_URLS, drained),
    ]


def start_scheduled_run(state: StateDB, run_id: str) -> None:
    """runs.start_run for a cron run; an older checkout (before/after) takes trigger and command alone."""
    if hasattr(runs, "RunOrigin"):
        origin = runs.RunOrigin(trigger="cron", node=NODE, slot=NOW.isoformat(), command="warm_cache.py")
        start_run(state, run_id=run_id, job="warm", started=NOW, origin=origin)
    else:
        start_run(state, run_id=run_id, job="warm", started=NOW, trigger="cron", command="warm_cache.py")  # type: ignore[call-arg]


def runs_figure(state: StateDB) -> Figure:
    def start_and_finish() -> None:
        for i in range(N_RUNS):
            run_id = f"bench-{i}"
            start_scheduled_run(state, run_id)
            finish_run(
                state, run_id=run_id, finished=NOW, status="ok", exit_code=0, duration_s=1.0, counts={}, error=None
            )

    return Figure(f"runs: {N_RUNS:,} start + finish (runs.py)", "run/s", N_RUNS, timed(start_and_finish))


def warm_figure(state: StateDB) -> Figure:
    store = WarmResultStore(state, run_id="bench-warm", now=lambda: NOW)

    def record() -> None:
        for url in urls(N_URLS):
            store.add(WarmResult(url=url, outcome="filled", http_status=200, cache_status="MISS", elapsed_ms=5.0))
        store.flush()

    return Figure(f"warm results for {N_URLS:,} URLs (WarmResultStore)", "URL/s", N_URLS, timed(record))


def cursor_figure(state: StateDB) -> Figure:
    # Cursors are kept per node since 601_log_cursors_node; an older checkout's save_cursors has no node.
    per_node = {"node": NODE} if "node" in inspect.signature(save_cursors).parameters else {}

    def save() -> None:
        for i in range(N_CURSOR_SAVES):
            cursor = Cursor(path=f"/var/log/nginx/access{i % 4}.log", dev=2049, inode=1000 + i % 4, offset=i * 4096)
            with state.transaction() as conn:
                save_cursors(conn, [cursor], now=NOW, run_id=f"bench-{i}", **per_node)

    return Figure(f"log cursor saves ({N_CURSOR_SAVES:,}, one transaction each)", "save/s", N_CURSOR_SAVES, timed(save))


def write_feed(path: Path) -> None:
    with path.open("w") as fh:
        for i in range(N_ITEMS):
            stamp = (NOW - timedelta(days=1, seconds=-i)).isoformat().replace("+00:00", "Z")
            doc = {"id": f"item-{i}", "url": f"https://{HOST}/articles/item-{i}", "updated_at": stamp,
                   "title": f"Article {i}", "body": f"<p>Body of article {i}.</p>", "tags": ["news"]}  # fmt: skip
            fh.write(json.dumps(doc) + "\n")


def import_figure(state: StateDB, content: Path | str, feed: Path) -> Figure:
    with ContentStore(content) as store:  # type: ignore[arg-type]  # a URL once CONTENT_DB on PostgreSQL lands
        importer = Importer(
            store=store,
            source=JsonlSource(feed),
            validator=Validator(allowed_hosts=(HOST,), max_body_bytes=1 << 20),
            options=ImportOptions(batch_size=500),
            run_id="bench-import",
            now=lambda: NOW,
            forward_purges=lambda: forward_purges(store, PurgeOutbox(state), now=NOW),
        )
        seconds = timed(importer.run)
    return Figure(f"content import, {N_ITEMS:,} new items + purge relay", "item/s", N_ITEMS, seconds)


def measure(state_db: Path | str, content: Path | str, feed: Path) -> tuple[list[Figure], str | None]:
    """Every operation on one backend; the content import's absence (with why) instead of its figure."""
    with StateDB(state_db) as state:
        figures = [*outbox_figures(state), runs_figure(state), warm_figure(state), cursor_figure(state)]
        try:
            figures.append(import_figure(state, content, feed))
            missing = None
        except StateError as exc:
            missing = exc.what
    return figures, missing


@contextmanager
def postgres_databases(say: Callable[[str], None]) -> Iterator[Callable[[], str] | None]:
    """A throwaway cluster's `new_database` (a fresh database's URL per call), or None without a server."""
    from demo.pgcluster import ServerUnavailable, throwaway_cluster

    try:
        with throwaway_cluster() as cluster:
            version = cluster.psql("SHOW server_version").strip()
            say(f"PostgreSQL {version}: throwaway cluster on 127.0.0.1:{cluster.port} (TCP loopback, fsync off)")
            yield cluster.new_database
    except ServerUnavailable as missing:
        say(f"PostgreSQL half skipped: {missing}")
        yield None


def compare(sqlite: list[Figure], postgres: list[Figure] | None) -> list[str]:
    lines = []
    for index, lite in enumerate(sqlite):
        line = f"{lite.operation}: SQLite {lite.rate:,.0f} {lite.unit}"
        if postgres is not None and index < len(postgres):
            pg = postgres[index]
            line += f", PostgreSQL {pg.rate:,.0f} {pg.unit} (PG/SQLite {pg.rate / lite.rate:.2f})"
        lines.append(line)
    return lines


def fastest(runs: list[list[Figure]]) -> list[Figure]:
    """Per operation, the fastest of the repeated runs: what the code can do when the machine lets it."""
    return [min(same, key=lambda figure: figure.seconds) for same in zip(*runs, strict=True)]


def main(*, sqlite_only: bool = False) -> list[str]:
    report: list[str] = []

    def say(line: str) -> None:
        report.append(line)
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="edgecron-bench-storage-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        feed = base / "feed.jsonl"
        write_feed(feed)
        new_database = None
        if sqlite_only:
            say("PostgreSQL half not measured (--sqlite-only)")
        else:
            new_database = stack.enter_context(postgres_databases(say))
        sqlite_runs: list[list[Figure]] = []
        postgres_runs: list[list[Figure]] = []
        missing: dict[str, str | None] = {}
        for repeat in range(REPEATS):  # alternating, so both engines meet the same load on a shared machine
            state_dir = base / f"state-{repeat}"
            figures, missing["SQLite"] = measure(state_dir / "state.db", state_dir / "content.db", feed)
            sqlite_runs.append(figures)
            if new_database is not None:
                figures, missing["PostgreSQL"] = measure(new_database(), new_database(), feed)
                postgres_runs.append(figures)
        say(f"fastest of {REPEATS} alternating runs per engine, each on a fresh database")
        for engine, why in missing.items():
            if why:
                say(f"content import on {engine} not measured: {why}")
        for line in compare(fastest(sqlite_runs), fastest(postgres_runs) if postgres_runs else None):
            say(line)
    return report


if __name__ == "__main__":
    main(sqlite_only="--sqlite-only" in sys.argv[1:])
