"""What `jobs.py status` shows: per job its last run, next due time and lock holder; the outbox.

Read-only apart from creating the state database on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .config import Settings
from .lock import current_holder
from .outbox import PurgeOutbox
from .runs import last_completed_at, last_run
from .schedule import Scheduled, next_fire, schedule_timezone
from .state import StateDB

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
    last_exit_code: int | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    last_ok: str | None = None
    lock_holder: dict[str, Any] | None = None
    stale_running: bool = False  # a run recorded as running while nobody holds the lock


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    failing: int
    failing_items: list[dict[str, Any]] = field(default_factory=list)


def collect_status(
    settings: Settings, state: StateDB, schedule: Sequence[Scheduled], *, now: datetime
) -> tuple[list[JobStatus], OutboxStatus]:
    tz = schedule_timezone(settings)
    jobs = []
    for item in schedule:
        last = last_run(state, item.name)
        last_ok = last_completed_at(state, item.name)
        holder = current_holder(settings.lock_dir, item.name)
        due = next_fire(item.cron, now, tz).isoformat() if item.cron else None
        running = last is not None and last["status"] == "running"
        jobs.append(
            JobStatus(
                job=item.name,
                schedule=item.cron.text if item.cron else None,
                schedule_source=item.source,
                next_due=due,
                last_started=last["started_at"] if last else None,
                last_finished=last["finished_at"] if last else None,
                last_status=last["status"] if last else None,
                last_trigger=last["trigger"] if last else None,
                last_exit_code=last["exit_code"] if last else None,
                last_duration_s=round(last["duration_s"], 1) if last and last["duration_s"] is not None else None,
                last_error=last["error"] if last else None,
                last_ok=last_ok,
                lock_holder=asdict(holder) if holder else None,
                stale_running=running and holder is None,
            )
        )
    outbox = PurgeOutbox(state)
    counts = outbox.counts()
    failing = [
        {"id": i.id, "kind": i.kind, "value": i.value, "attempts": i.attempts, "last_error": i.last_error}
        for i in outbox.open_items()
        if i.attempts > 0
    ][:FAILING_SHOWN]
    return jobs, OutboxStatus(counts["pending"], counts["failing"], failing)
