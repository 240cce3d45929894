"""The `runs` table: one row per run of a job, and the questions health and status ask of it.

One vocabulary for `jobs.py status`, the job-health checks of `check_logs.py` and the metrics:

- **trigger**: how the run was started: `cron` or `scheduler` (scheduled) or `manual` (a person
  over SSH, a deploy script). Health judges scheduled runs: a typo in a manual run is shown in
  `jobs.py status` but never breaches the schedule. Rows from before triggers were recorded
  (NULL) count as scheduled, as every run did then.
- **completed**: the run did its work: `ok` (nothing wrong) or `problems` (it found problems and
  reported them itself: URLs failed, a check breached, items rejected). Exit 1 is a completed run,
  so a log check that finds a breach does not make its own job look stale.
- **skipped**: another run held the lock (exit 75); nothing was done, so a skipped row is never
  "the last run". Persistent skipping shows as a lock held too long or a stale job.
- **slot**: a scheduled run's fire time (UTC, `schedule.slot_text`): the scheduler's, or the
  schedule's latest fire time at or before the start. Manual runs have none.
- **done-elsewhere**: a scheduled run whose slot a run on some node already completed, or whose
  lock another node holds for the same slot (exit 0, silent): the work was done (or is being done)
  there, so, like skipped, it is never "the last run". `node` (NODE_NAME) is on every row.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .db import DbRow
from .redact import redact
from .state import StateDB, iso

TRIGGER_ENV = "EDGECRON_TRIGGER"  # set to cron by the crontab, to scheduler by `jobs.py schedule`
SLOT_ENV = "EDGECRON_SLOT"  # the fire time `jobs.py schedule` started a run for (ISO 8601, UTC)
DONE_ELSEWHERE = "done-elsewhere"
# Jobs whose work is the node's own (check-logs reads this node's access logs): every node runs each
# slot, so their lock stays the node's flock and only this node's completed run makes a slot done.
PER_NODE_JOBS = frozenset({"check-logs"})
TRIGGERS = ("cron", "scheduler", "manual")
SCHEDULED = ("cron", "scheduler")
COMPLETED = ("ok", "problems")
_SCHEDULED_SQL = "(trigger IS NULL OR trigger IN ('cron', 'scheduler'))"
_COMPLETED_SQL = "status IN ('ok', 'problems')"


@dataclass(frozen=True)
class RunOrigin:
    """Where and why a run runs: its trigger, node (NODE_NAME), slot (None: manual) and command line."""

    trigger: str
    node: str
    slot: str | None
    command: str


def start_run(state: StateDB, *, run_id: str, job: str, started: datetime, origin: RunOrigin) -> None:
    """Record a run as running; a 'running' row of this job left by a run that died is marked first.

    The caller holds the job's lock, so any other 'running' row of this job belongs to a run that
    ended (kill -9, power loss) before it could record its end. A PER_NODE_JOBS lock is this node's
    only: another node's run of it may be alive, so only this node's rows (or rows from before nodes
    were recorded) are marked.
    """
    own, params = ("", ()) if job not in PER_NODE_JOBS else (" AND (node = ? OR node IS NULL)", (origin.node,))
    with state.transaction():
        state.execute(
            "UPDATE runs SET status='abandoned', error=? WHERE job=? AND status='running'" + own,
            ("the process ended without recording a result (killed?)", job, *params),
        )
        state.execute(
            "INSERT INTO runs(run_id, job, started_at, host, pid, command, trigger, node, slot)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (run_id, job, iso(started), *_where_from(origin)),
        )


def record_not_run(
    state: StateDB, *, run_id: str, job: str, started: datetime, origin: RunOrigin, status: str, reason: str
) -> None:
    """A run that did no work: `skipped` (the lock was held: exit 75, the holder named) or
    `done-elsewhere` (exit 0, who did it named); recorded as done at once."""
    exit_code = 75 if status == "skipped" else 0
    state.execute(
        "INSERT INTO runs(run_id, job, started_at, finished_at, status, exit_code, duration_s, error,"
        " host, pid, command, trigger, node, slot) VALUES (?,?,?,?,?,?, 0, ?, ?,?,?,?,?,?)",
        (
            run_id,
            job,
            iso(started),
            iso(started),
            status,
            exit_code,
            redact(reason),
            *_where_from(origin),
        ),
    )


def _where_from(origin: RunOrigin) -> tuple[object, ...]:
    """host, pid, command, trigger, node, slot: the columns every run row starts with."""
    return (socket.gethostname(), os.getpid(), redact(origin.command), origin.trigger, origin.node, origin.slot)


def completed_in_slot(state: StateDB, job: str, slot: str, *, node: str) -> DbRow | None:
    """The first run of `job` that completed `slot` (ok or problems) on any node (on `node` for a
    PER_NODE_JOBS job), or None."""
    own = " AND node = ?" if job in PER_NODE_JOBS else ""
    row: DbRow | None = state.execute(
        f"SELECT run_id, node, host, finished_at FROM runs WHERE job = ? AND slot = ?{own} AND {_COMPLETED_SQL}"
        " ORDER BY id LIMIT 1",
        (job, slot, node) if own else (job, slot),
    ).fetchone()
    return row


def finish_run(
    state: StateDB,
    *,
    run_id: str,
    finished: datetime,
    status: str,
    exit_code: int,
    duration_s: float,
    counts: Mapping[str, Any],
    error: str | None,
) -> None:
    state.execute(
        "UPDATE runs SET finished_at=?, status=?, exit_code=?, duration_s=?, counts=?, error=? WHERE run_id=?",
        (
            iso(finished),
            status,
            exit_code,
            duration_s,
            json.dumps(dict(counts), default=str),
            None if error is None else redact(error),  # error texts quote API answers and URLs
            run_id,
        ),
    )


def last_run(
    state: StateDB,
    job: str,
    *,
    scheduled_only: bool = False,
    finished_only: bool = False,
    exclude_run: str | None = None,
) -> DbRow | None:
    """The newest run of `job` that tried to do its work (skipped and done-elsewhere runs did none)."""
    where = ["job = ?", "status NOT IN ('skipped', 'done-elsewhere')", "run_id != ?"]
    if scheduled_only:
        where.append(_SCHEDULED_SQL)
    if finished_only:
        where.append("finished_at IS NOT NULL")
    row: DbRow | None = state.execute(
        # Newest by insertion (id), not by clock: a clock set back must not resurrect an old run.
        f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT 1",
        (job, exclude_run or ""),
    ).fetchone()
    return row


def last_completed_at(state: StateDB, job: str, *, scheduled_only: bool = False) -> str | None:
    """When the newest completed run (ok or problems) of `job` finished, or None."""
    where = f"job = ? AND {_COMPLETED_SQL}" + (f" AND {_SCHEDULED_SQL}" if scheduled_only else "")
    value: str | None = state.execute(f"SELECT max(finished_at) FROM runs WHERE {where}", (job,)).fetchone()[0]
    return value


def is_scheduled(trigger: str | None) -> bool:
    return trigger is None or trigger in SCHEDULED


def recent_runs(state: StateDB, job: str, *, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` runs of `job` by start time (run_id, started_at, status, counts decoded)."""
    rows = state.execute(
        "SELECT run_id, started_at, status, counts FROM runs WHERE job = ? ORDER BY started_at DESC LIMIT ?",
        (job, limit),
    ).fetchall()
    return [dict(row, counts=json.loads(row["counts"]) if isinstance(row["counts"], str) else {}) for row in rows]
