"""Bounded state: what each store keeps, and the one place that drops the rest.

Before this, one warm of 10,000 URLs added ~2 MB to state.db and nothing ever left (issue 9): ~35 GB
a year on the default schedule, until a full disk broke every job. The rules, each with its key:

- `warm_results`: the per-URL rows of the last RETAIN_WARM_RUNS runs that wrote any (the warm job's,
  and the re-warms of purge and import), and of the warm job's last run (purge's page estimate reads
  it); a run still running is never touched. `warm_latest` keeps
  each URL's latest result until RETAIN_RUNS_DAYS after it was last warmed (a URL gone from the
  sitemap ages out).
- `runs`: RETAIN_RUNS_DAYS, but the newest run of each job, status and trigger stays whatever its
  age, so job health (runs.py: scheduled runs, completed ones) can still say "has not succeeded for
  45 days" and `jobs.py status` still shows a last run.
- `log_slots`, `deploys`: RETAIN_RUNS_DAYS; the newest deploy stays (purge and the deploy check
  compare with it).
- `outbox`: items sent more than RETAIN_OUTBOX_DAYS ago. Pending, sending and held items are never
  dropped, whatever their age: they are work not yet done.
- content.db `versions`, `rejects`, `import_runs`: runs started more than RETAIN_VERSIONS_DAYS ago,
  whole runs at a time, so every run inside the window can still be rolled back completely.
- `logs/<job>.jsonl`: moved to `<job>.jsonl.1` past EVENT_LOG_MAX_MB (one old copy; runner.EventLog).
- Not pruned, because the site bounds them: `sitemap_lastmod` (forgetting a URL's lastmod would purge
  it again), `log_cursors`, `checkpoints`, content `items` and `removed_keys`.

Pruning happens at the end of every real run of every job (runner.JobRun) and of every import that
writes (ContentStore.finish_run), so no separate job is needed; dry runs prune nothing. Time is the
caller's `now`. Freed pages go back to the filesystem with `PRAGMA incremental_vacuum`
(auto_vacuum=INCREMENTAL: a new file gets it at creation; an older file is switched with one VACUUM,
right after its first prune, when it is smallest).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .db import Database
from .state import iso

MIB = 1024 * 1024
AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
RECLAIM_MIN_FREE_PAGES = 256  # below ~1 MiB free, giving pages back is not worth the next run regrowing the file


@dataclass(frozen=True)
class RetentionPolicy:
    warm_runs: int = 3
    runs: timedelta = timedelta(days=30)
    outbox: timedelta = timedelta(days=7)
    versions: timedelta = timedelta(days=30)
    event_log_bytes: int = 8 * MIB

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RetentionPolicy:
        return cls(
            warm_runs=settings["RETAIN_WARM_RUNS"],
            runs=timedelta(days=settings["RETAIN_RUNS_DAYS"]),
            outbox=timedelta(days=settings["RETAIN_OUTBOX_DAYS"]),
            versions=timedelta(days=settings["RETAIN_VERSIONS_DAYS"]),
            event_log_bytes=settings["EVENT_LOG_MAX_MB"] * MIB,
        )


def prune_state(conn: Database, policy: RetentionPolicy, *, now: datetime) -> dict[str, int]:
    """Drop from state.db what `policy` no longer keeps, in the caller's transaction; rows dropped per table."""
    runs_before = iso(now - policy.runs)
    return {
        "warm_results": _prune_warm_results(conn, keep_runs=policy.warm_runs),
        "warm_latest": conn.execute("DELETE FROM warm_latest WHERE at < ?", (runs_before,)).rowcount,
        "runs": conn.execute(
            "DELETE FROM runs WHERE started_at < ? AND status != 'running' AND EXISTS "
            "(SELECT 1 FROM runs AS newer WHERE newer.job = runs.job AND newer.status = runs.status"
            " AND (newer.trigger = runs.trigger OR (newer.trigger IS NULL AND runs.trigger IS NULL))"
            " AND newer.id > runs.id)",
            (runs_before,),
        ).rowcount,
        "log_slots": conn.execute(
            "DELETE FROM log_slots WHERE slot_start < ?", (int((now - policy.runs).timestamp()),)
        ).rowcount,
        "deploys": conn.execute(
            "DELETE FROM deploys WHERE deployed_at < ? AND id != (SELECT max(id) FROM deploys)"
            " AND id != (SELECT id FROM deploys ORDER BY deployed_at DESC LIMIT 1)",
            (runs_before,),
        ).rowcount,
        "outbox": conn.execute(
            "DELETE FROM outbox WHERE status = 'done' AND sent_at < ?", (iso(now - policy.outbox),)
        ).rowcount,
    }


def _prune_warm_results(conn: Database, *, keep_runs: int) -> int:
    """Keep the newest `keep_runs` runs' rows, walking back from the newest row by run (ids only grow)."""
    kept: list[str] = []
    below: int | None = None
    for _ in range(keep_runs):
        row = conn.execute(
            "SELECT run_id FROM warm_results WHERE id < ? ORDER BY id DESC LIMIT 1",
            (below if below is not None else 1 << 62,),
        ).fetchone()
        if row is None:
            return 0
        kept.append(row[0])
        # A run's first row is a pass-1 row; the (run_id, pass) index finds it without reading the run's rows.
        below = conn.execute(
            "SELECT id FROM warm_results WHERE run_id = ? AND pass = 1 ORDER BY id LIMIT 1", (row[0],)
        ).fetchone()[0]
    # The warm job's own last run stays even after several re-warms: it is the site's page count.
    last_warm = conn.execute(
        "SELECT run_id FROM runs WHERE job = 'warm' AND status IN ('ok', 'problems') ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    if last_warm is not None:
        kept.append(last_warm[0])
    marks = ",".join("?" * len(kept))
    # Rows of a run that interleaved with a kept one above `below` wait for a later prune: harmless.
    return conn.execute(
        f"DELETE FROM warm_results WHERE id < ? AND run_id NOT IN ({marks})"
        " AND run_id NOT IN (SELECT run_id FROM runs WHERE status = 'running')",
        (below, *kept),
    ).rowcount


def prune_content(conn: Database | sqlite3.Connection, policy: RetentionPolicy, *, now: datetime) -> dict[str, int]:
    """Drop content.db history of import runs that left the rollback window, in the caller's transaction."""
    old = [
        row[0]
        for row in conn.execute(
            "SELECT run_id FROM import_runs WHERE started_at < ? AND status != 'running'", (iso(now - policy.versions),)
        )
    ]
    dropped = {"versions": 0, "rejects": 0, "import_runs": 0}
    for run_id in old:
        dropped["versions"] += conn.execute("DELETE FROM versions WHERE run_id = ?", (run_id,)).rowcount
        dropped["rejects"] += conn.execute("DELETE FROM rejects WHERE run_id = ?", (run_id,)).rowcount
        dropped["import_runs"] += conn.execute("DELETE FROM import_runs WHERE run_id = ?", (run_id,)).rowcount
    return dropped


def reclaim_space(conn: sqlite3.Connection) -> str | None:
    """Give free pages back to the filesystem, outside any transaction; what was done, or None.

    A file created before auto_vacuum=INCREMENTAL is switched with one VACUUM (it rewrites the file:
    done once, after a prune). A busy database is left for the next run rather than waited for."""
    try:
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
            return "vacuum"
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        if free < RECLAIM_MIN_FREE_PAGES or free * 4 < pages:
            return None
        conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
        return f"incremental_vacuum {free} pages"
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None
        raise


@dataclass(frozen=True)
class StateSize:
    """Bytes on disk: state.db with its WAL, content.db with its WAL, the event logs."""

    state_db: int
    content_db: int
    logs: int

    @property
    def total(self) -> int:
        return self.state_db + self.content_db + self.logs


def state_size(*, state_db: Path | str, content_db: Path | str, state_dir: Path) -> StateSize:
    """Bytes on this disk: a database in PostgreSQL counts 0 here (its server keeps it)."""
    return StateSize(
        state_db=_db_bytes(state_db) if isinstance(state_db, Path) else 0,
        content_db=_db_bytes(content_db) if isinstance(content_db, Path) else 0,
        logs=sum(_bytes(p) for p in (state_dir / "logs").glob("*") if p.is_file()),
    )


def _db_bytes(path: Path) -> int:
    return _bytes(path) + _bytes(path.with_name(path.name + "-wal"))


def _bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
