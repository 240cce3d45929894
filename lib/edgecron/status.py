"""What `jobs.py status` shows: per job its last run (and the node that ran it), next due time and
lock holder; per node its last log check; the outbox.

Job health is fleet-wide: one row per job whichever node ran it. Access logs are per node, so the
log checks are shown per node. Read-only apart from creating the state database on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .config import Settings
from .db import Database, DbRow
from .findings import Thresholds
from .health import job_breaches, max_ages, outbox_finding, read_job, read_outbox
from .logcursors import logs_by_node
from .schedule import Scheduled, next_fire, schedule_timezone
from .state import StateDB

LOG_CHECK_JOB = "check-logs"

FAILING_SHOWN = 5


@dataclass(frozen=True)
class JobStatus:
    job: str
    schedule: str | None  # None: disabled
    schedule_source: str
    next_due: str | None
    last_started: str | None = None
    last_finished: str | None = None
    last_status: str | None = None  # ok, problems, failed, usage-error, tempfail, interrupted, running
    last_trigger: str | None = None  # cron, scheduler, manual (None: recorded before triggers were)
    last_node: str | None = None  # the node that ran it (its host name for runs recorded before nodes were)
    last_exit_code: int | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    last_ok: str | None = None
    lock_holder: dict[str, Any] | None = None
    died: bool = False  # the newest run never recorded its end and nobody holds the lock
    breaches: list[dict[str, Any]] = field(default_factory=list)  # as check_logs.py reports them


@dataclass(frozen=True)
class NodeStatus:
    """One node's access-log checks: its newest check-logs run and when it last saved log positions."""

    node: str
    last_check_started: str | None = None
    last_check_status: str | None = None
    last_check_exit_code: int | None = None
    logs: int = 0  # access logs it keeps a position for
    logs_saved_at: str | None = None  # when it last saved them (a completed, non-dry check)


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    failing: int
    failing_items: list[dict[str, Any]] = field(default_factory=list)
    breaches: list[dict[str, Any]] = field(default_factory=list)  # as check_logs.py reports them


def collect_status(
    settings: Settings, state: StateDB, schedule: Sequence[Scheduled], *, now: datetime
) -> tuple[list[JobStatus], OutboxStatus]:
    tz = schedule_timezone(settings)
    limits = Thresholds.from_settings(settings)
    ages = max_ages(schedule, now=now, tz=tz)
    jobs = []
    for item in schedule:
        health = read_job(state, item.name, lock_dir=settings.lock_dir, node=settings.node_name)
        last, holder = health.newest, health.holder
        breaches = job_breaches(health, now=now, max_age=ages.get(item.name), limits=limits)
        jobs.append(
            JobStatus(
                job=item.name,
                schedule=item.cron.text if item.cron else None,
                schedule_source=item.source,
                next_due=next_fire(item.cron, now, tz).isoformat() if item.cron else None,
                last_started=last["started_at"] if last else None,
                last_finished=last["finished_at"] if last else None,
                last_status=last["status"] if last else None,
                last_trigger=last["trigger"] if last else None,
                last_node=run_node(last) if last else None,
                last_exit_code=last["exit_code"] if last else None,
                last_duration_s=round(last["duration_s"], 1) if last and last["duration_s"] is not None else None,
                last_error=last["error"] if last else None,
                last_ok=health.last_ok,
                lock_holder=asdict(holder) if holder else None,
                died=health.died,
                breaches=[b.as_dict() for b in breaches],
            )
        )
    outbox = read_outbox(state)
    failing = [
        {"id": i.id, "kind": i.kind, "value": i.value, "attempts": i.attempts, "last_error": i.last_error}
        for i in outbox.failing[:FAILING_SHOWN]
    ]
    finding = outbox_finding(outbox, limits)
    breached = [finding.as_dict()] if finding.breached else []
    return jobs, OutboxStatus(outbox.pending, len(outbox.failing), failing, breached)


def run_node(row: DbRow) -> str | None:
    """The node a run was recorded on: its `node` column where runs have one, else the host name."""
    columns = row.keys()  # a row's `in` looks at its values, not its column names
    node = row["node"] if "node" in columns else None
    return node or row["host"]


def node_status(state: Database) -> list[NodeStatus]:
    """Per node (by name) its newest log check and saved log positions, in name order."""
    columns = {d[0] for d in state.execute("SELECT * FROM runs LIMIT 0").description}
    by = "coalesce(node, host)" if "node" in columns else "host"
    newest = state.execute(
        "SELECT * FROM runs WHERE id IN"
        f" (SELECT max(id) FROM runs WHERE job = ? AND status NOT IN ('skipped', 'done-elsewhere') GROUP BY {by})",
        (LOG_CHECK_JOB,),
    ).fetchall()
    runs = {run_node(row) or "?": row for row in newest}
    logs = {entry.node: entry for entry in logs_by_node(state)}
    nodes = []
    for name in sorted(runs.keys() | logs.keys()):
        run, saved = runs.get(name), logs.get(name)
        nodes.append(
            NodeStatus(
                node=name,
                last_check_started=run["started_at"] if run else None,
                last_check_status=run["status"] if run else None,
                last_check_exit_code=run["exit_code"] if run else None,
                logs=saved.logs if saved else 0,
                logs_saved_at=saved.saved_at if saved else None,
            )
        )
    return nodes
