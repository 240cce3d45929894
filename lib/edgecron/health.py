"""Job health: the one reading of the runs table, the job locks and the purge outbox.

`jobs.py status` shows it and `check_logs.py` judges it, both through `read_job`/`read_outbox` and
`job_breaches`/`outbox_finding`, so the two cannot disagree. The words (see also runs.py):

- **newest run**: the newest run of a job that tried to do its work, whatever started it.
- **last scheduled run**: the newest finished run started by cron or the scheduler; only it is
  judged, so a typo in a manual run is shown but is no breach (`job_last_run:<job>` when it failed).
- **died**: the newest run never recorded its end and nobody holds the job's lock: kill -9, OOM,
  reboot (`job_died:<job>`; `died` in `jobs.py status --json`).
- **overdue**: no scheduled run completed within the job's max age (`job_stale:<job>`).
- **stuck**: an open purge outbox item that failed CHECK_OUTBOX_MAX_ATTEMPTS times or more
  (`outbox_failing`); **failing**: one that failed at least once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from .db import DbRow
from .findings import Finding, Thresholds
from .lock import LockHolder, current_holder
from .outbox import OutboxItem, PurgeOutbox
from .runs import PER_NODE_JOBS, last_completed_at, last_run
from .schedule import JOBS, Cron, Scheduled, longest_gap
from .state import StateDB

FAILED = ("failed", "usage-error")  # "problems" is a completed run: it reported them itself


@dataclass(frozen=True)
class JobHealth:
    """What the runs table and the job's lock say about one job."""

    job: str
    newest: DbRow | None  # the newest run that tried to work, any trigger
    last_scheduled: DbRow | None  # the newest finished run started by cron or the scheduler
    last_ok: str | None  # when the newest completed run (ok or problems) finished, any trigger
    last_scheduled_ok: str | None  # the same among scheduled runs
    holder: LockHolder | None
    node: str | None = None  # the asking node: a PER_NODE_JOBS lock is visible on its own node only

    @property
    def died(self) -> bool:
        """The newest run never recorded its end (abandoned, or running with nobody holding the lock)."""
        newest = self.newest
        if newest is None or newest["status"] == "abandoned":
            return newest is not None
        lock_visible = self.job not in PER_NODE_JOBS or newest["node"] in (None, self.node)
        return newest["status"] == "running" and self.holder is None and lock_visible


@dataclass(frozen=True)
class OutboxHealth:
    pending: int  # open items: pending, or claimed by a run that died
    failing: list[OutboxItem]  # open items that failed at least once, oldest first

    def stuck(self, max_attempts: int) -> list[OutboxItem]:
        """Open items that failed `max_attempts` times or more, most attempts first."""
        return sorted((i for i in self.failing if i.attempts >= max_attempts), key=lambda i: -i.attempts)


def read_job(
    state: StateDB, job: str, *, lock_dir: Path, exclude_run: str | None = None, node: str | None = None
) -> JobHealth:
    """`exclude_run`: the asking run itself (check-logs judging its own job), never its own verdict;
    `node`: the asking node (NODE_NAME)."""
    return JobHealth(
        job=job,
        newest=last_run(state, job, exclude_run=exclude_run),
        last_scheduled=last_run(state, job, scheduled_only=True, finished_only=True, exclude_run=exclude_run),
        last_ok=last_completed_at(state, job),
        last_scheduled_ok=last_completed_at(state, job, scheduled_only=True),
        holder=current_holder(lock_dir, job, state=state),
        node=node,
    )


def read_outbox(state: StateDB) -> OutboxHealth:
    items = PurgeOutbox(state).open_items()
    return OutboxHealth(pending=len(items), failing=[i for i in items if i.attempts > 0])


def job_breaches(health: JobHealth, *, now: datetime, max_age: timedelta | None, limits: Thresholds) -> list[Finding]:
    """Last scheduled run failed; overdue; the newest run died; its lock held too long."""
    job, last = health.job, health.last_scheduled
    found: list[Finding] = []
    if last is not None and last["status"] in FAILED:
        found.append(
            Finding.judged(
                f"job_last_run:{job}",
                breach=True,
                severity="critical",
                summary=f"last {job} run ended {last['status']} at {last['finished_at']}",
                value=last["status"],
                threshold="ok",
                examples=[last["error"]] if last["error"] else [],
            )
        )
    if max_age is not None and last is not None:
        # Completed = ok or problems: a check that found a breach still did its work.
        completed = health.last_scheduled_ok
        age = now - datetime.fromisoformat(completed) if completed else None
        if age is None or age > max_age:
            found.append(
                Finding.judged(
                    f"job_stale:{job}",
                    breach=True,
                    severity="critical",
                    summary=f"{job} has not succeeded " + (f"for {_human(age)}" if age else "yet"),
                    value=_human(age) if age else "never",
                    threshold=_human(max_age),
                )
            )
    newest = health.newest
    if newest is not None and health.died:
        found.append(
            Finding.judged(
                f"job_died:{job}",
                breach=True,
                severity="warning",
                summary=f"the {job} run started {newest['started_at']} ended without recording a result (killed?)",
                value=newest["status"],
                threshold="ok",
            )
        )
    holder = health.holder
    # check-logs holds its own lock while it judges: its holder is the asking run.
    held = _held_for(holder, now=now) if job != "check-logs" else None
    if holder is not None and held is not None and held.total_seconds() > limits.lock_max_seconds:
        found.append(
            Finding.judged(
                f"lock_held:{job}",
                breach=True,
                severity="warning",
                summary=f"{job} lock held for {_human(held)} by {holder.describe()}",
                value=int(held.total_seconds()),
                threshold=limits.lock_max_seconds,
                examples=[holder.command],
            )
        )
    return found


def outbox_finding(outbox: OutboxHealth, limits: Thresholds) -> Finding:
    stuck = outbox.stuck(limits.outbox_max_attempts)
    return Finding.judged(
        "outbox_failing",
        breach=bool(stuck),
        severity="warning",
        summary=f"{len(stuck)} purge outbox items failed {limits.outbox_max_attempts}+ times"
        if stuck
        else "no purge is failing repeatedly",
        value=len(stuck),
        threshold=limits.outbox_max_attempts,
        examples=[f"{i.kind} {i.value} ×{i.attempts}: {i.last_error}" for i in stuck[:5]],
    )


def job_findings(
    state: StateDB,
    *,
    lock_dir: Path,
    now: datetime,
    limits: Thresholds,
    max_ages: Mapping[str, timedelta],
    exclude_run: str | None = None,
    node: str | None = None,
) -> list[Finding]:
    """Every job's breaches, then the outbox finding (ok or breach): what `check_logs.py` reports."""
    findings: list[Finding] = []
    for job in (spec.name for spec in JOBS):
        health = read_job(state, job, lock_dir=lock_dir, exclude_run=exclude_run, node=node)
        findings += job_breaches(health, now=now, max_age=max_ages.get(job), limits=limits)
    findings.append(outbox_finding(read_outbox(state), limits))
    return findings


def max_ages(schedule: Iterable[Scheduled], *, now: datetime, tz: tzinfo) -> dict[str, timedelta]:
    """Per enabled job, how old its last success may be (disabled jobs are not expected to run)."""
    return {item.name: max_age_from_schedule(item.cron, now=now, tz=tz) for item in schedule if item.cron is not None}


def max_age_from_schedule(cron: Cron, *, now: datetime, tz: tzinfo) -> timedelta:
    """How old a job's last success may be: twice the longest gap between its fire times, plus 5 minutes.

    The longest gap, not the next one, so `0 3 * * 1-5` allows Friday → Monday; the cron semantics
    are the schedule module's (Sunday as 0 or 7, day-of-month OR day-of-week).
    """
    return 2 * longest_gap(cron, now=now, tz=tz) + timedelta(minutes=5)


def _held_for(holder: LockHolder | None, *, now: datetime) -> timedelta | None:
    """How long the holder has held the lock; None when nobody does or its start time is unreadable."""
    if holder is None:
        return None
    try:
        return now - datetime.fromisoformat(holder.started)
    except ValueError:
        return None


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds // 60}m"
