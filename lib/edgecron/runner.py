"""The frame every job runs in: lock → run record → (work) → metrics → exit code.

SIGTERM/SIGINT set `stop`: the job stops starting new work, finishes what is in flight, and the
run is recorded as interrupted with exit code 143/130. A second SIGINT aborts at once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import EdgecronError, ExitCode, LockHeld, StateError, from_unexpected
from .lock import JobLockHeld, job_lock
from .redact import redact_value
from .retention import RetentionPolicy, prune_state, reclaim_space
from .runs import DONE_ELSEWHERE, RunOrigin, completed_in_slot, finish_run, last_completed_at, record_not_run, start_run
from .safetext import json_visible
from .state import StateDB, iso, open_state

if TYPE_CHECKING:
    from .monitor import Pinger

STATUS_BY_EXIT = {
    ExitCode.OK: "ok",
    ExitCode.PROBLEMS: "problems",
    ExitCode.USAGE: "usage-error",
    ExitCode.TEMPFAIL: "tempfail",
    ExitCode.SIGINT: "interrupted",
    ExitCode.SIGTERM: "interrupted",
}


class EventLog:
    """One JSON line per event in `STATE_DIR/logs/<job>.jsonl`; dry runs are labelled on each line.

    The file moves to `<job>.jsonl.1` (replacing the older copy) past `max_bytes`, or at a run's first
    event once its first event is older than `max_age`: a log holds a bounded size and span of time."""

    def __init__(
        self,
        path: Path | None,
        *,
        job: str,
        run_id: str,
        dry_run: bool,
        now: Callable[[], datetime],
        max_bytes: int | None = None,
        max_age: timedelta | None = None,
    ) -> None:
        self.path = path
        self.job = job
        self.run_id = run_id
        self.dry_run = dry_run
        self.now = now
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._size: int | None = None  # bytes in the file, read once then counted
        self._lock = threading.Lock()
        self.tail: deque[str] = deque(maxlen=200)  # this run's last events, for the ping body

    def __call__(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        record: dict[str, Any] = {"ts": iso(self.now()), "job": self.job, "run_id": self.run_id, "event": event}
        if self.dry_run:
            record["dry_run"] = True
        record.update(redact_value(fields))  # fields carry remote text: API errors, URLs, what was said
        line = json_visible(record) + "\n"  # an operator may `tail -f` it on a terminal
        self.tail.append(line)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                data = line.encode("utf-8")
                self._rotate_before(len(data))
                # Never through a symlink: someone else's file must not receive our events.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self._size = (self._size or 0) + len(data)
            except OSError:
                pass  # the event log must never break the job

    def _rotate_before(self, adding: int) -> None:
        if self.path is None:
            return
        if self._size is None:  # this run's first event: look at the file once
            self._size = self.path.stat().st_size if self.path.exists() else 0
            if self._size and self.max_age is not None:
                first = _first_event_time(self.path)
                if first is not None and first < self.now() - self.max_age:
                    self._move_aside()
        if self._size and self.max_bytes is not None and self._size + adding > self.max_bytes:
            self._move_aside()

    def _move_aside(self) -> None:
        assert self.path is not None
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._size = 0


def _first_event_time(path: Path) -> datetime | None:
    """The time of a log's first event (None when unreadable: then only the size cap applies)."""
    try:
        with path.open("rb") as fh:
            return datetime.fromisoformat(json.loads(fh.readline(65536))["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DoneElsewhere(Exception):
    """This scheduled run's slot was done (or is being done) by another run: nothing to do, exit 0."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class JobRun:
    """Context manager around one run of one job. Dry runs take no lock and record nothing.

    `trigger` says how the run was started (cron, scheduler, manual; see runs.py); `slot` is a
    scheduled run's fire time (schedule.run_slot). A run that finds the lock held is recorded as
    skipped (exit 75) and raises LockHeld; a scheduled run whose slot is already done, or whose lock
    another node holds for the same slot, is recorded as done-elsewhere and raises DoneElsewhere.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        job: str,
        dry_run: bool = False,
        lock_wait: float = 0.0,
        trigger: str = "manual",
        slot: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.job = job
        self.dry_run = dry_run
        self.trigger = trigger
        self.slot = None if trigger == "manual" else slot  # manual runs are never done-elsewhere
        self.lock_wait = lock_wait
        self.now = now
        self.run_id = uuid.uuid4().hex
        self.stop = threading.Event()
        self.signal_received: int | None = None
        self.counts: dict[str, Any] = {}
        self.exit_code: ExitCode = ExitCode.OK
        self.state: StateDB | None = None
        self._lock = job_lock(settings, job)
        self._old_handlers: dict[int, Any] = {}
        self._started_wall = 0.0
        self._started_mono = 0.0
        log_path = None if dry_run else settings.state_dir / "logs" / f"{job}.jsonl"
        self.retention = RetentionPolicy.from_settings(settings)
        self.log = EventLog(
            log_path,
            job=job,
            run_id=self.run_id,
            dry_run=dry_run,
            now=now,
            max_bytes=self.retention.event_log_bytes,
            max_age=self.retention.runs,
        )
        self._pinger: Pinger | None = None
        # The monitor watches the schedule: a person's run (a typo over SSH) must not page anyone.
        if not dry_run and trigger != "manual" and settings.get("HEALTHCHECKS_URL"):
            from .monitor import pinger_for  # requests is imported only when pings are configured

            self._pinger = pinger_for(settings, job)

    def __enter__(self) -> JobRun:
        started = self.now()
        self._started_wall = started.timestamp()
        self._started_mono = time.monotonic()
        command = " ".join(sys.argv)
        origin = RunOrigin(trigger=self.trigger, node=self.settings.node_name, slot=self.slot, command=command)
        if not self.dry_run:
            try:
                self._lock.acquire(now=started, wait_seconds=self.lock_wait, slot=self.slot)
            except LockHeld as held:
                holder = held.holder if isinstance(held, JobLockHeld) else None
                if (
                    self.slot is not None
                    and holder is not None
                    and holder.slot == self.slot
                    and holder.node != origin.node
                ):
                    reason = f"slot {self.slot} is being run on {holder.node} ({holder.describe()})"
                    self._record_not_run(started, origin=origin, status=DONE_ELSEWHERE, reason=reason)
                    raise DoneElsewhere(reason) from None
                self._record_not_run(started, origin=origin, status="skipped", reason=held.message)
                raise
            try:
                self.state = open_state(self.settings.state_db)
                done = completed_in_slot(self.state, self.job, self.slot, node=origin.node) if self.slot else None
                if done is not None:
                    reason = f"slot {self.slot} was completed on {done['node'] or done['host']} (run {done['run_id']})"
                    self._record_not_run(started, origin=origin, status=DONE_ELSEWHERE, reason=reason)
                    raise DoneElsewhere(reason)
                start_run(self.state, run_id=self.run_id, job=self.job, started=started, origin=origin)
            except BaseException:
                if self.state is not None:
                    self.state.close()
                    self.state = None
                self._lock.release()
                raise
        self._install_signal_handlers()
        self.log("start", command=command, trigger=self.trigger, node=origin.node, slot=self.slot)
        self._ping("start")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            error_text = None
            if isinstance(exc, EdgecronError):
                self.exit_code = exc.exit_code
                error_text = exc.message
            elif isinstance(exc, KeyboardInterrupt):
                self.exit_code = ExitCode.SIGINT
                error_text = "aborted by a second SIGINT"
            elif (mapped := from_unexpected(exc) if exc is not None else None) is not None:
                self.exit_code = mapped.exit_code  # disk full, read-only: what the script's edge will say
                error_text = mapped.message
            elif exc is not None:
                self.exit_code = ExitCode.PROBLEMS
                error_text = f"{type(exc).__name__}: {exc}"
            if self.signal_received is not None:
                self.exit_code = ExitCode.SIGINT if self.signal_received == signal.SIGINT else ExitCode.SIGTERM
            self._record(error_text)
            self._ping("finish")
            self._prune()
        finally:
            self._restore_signal_handlers()
            if self.state is not None:
                self.state.close()
            self._lock.release()

    def _record(self, error_text: str | None) -> None:
        finished = self.now()
        duration = time.monotonic() - self._started_mono
        status = STATUS_BY_EXIT.get(self.exit_code, "failed")
        if error_text and self.exit_code == ExitCode.PROBLEMS and status == "problems":
            status = "failed"
        self.log(
            "finish",
            status=status,
            exit_code=int(self.exit_code),
            duration_s=round(duration, 3),
            counts=self.counts,
            error=error_text,
        )
        if self.state is None:
            return
        finish_run(
            self.state,
            run_id=self.run_id,
            finished=finished,
            status=status,
            exit_code=int(self.exit_code),
            duration_s=duration,
            counts=self.counts,
            error=error_text,
        )
        metrics_dir = self.settings.metrics_dir
        if metrics_dir is not None:
            from .metrics import write_job_metrics  # prometheus_client only when METRICS_DIR is set

            completed = last_completed_at(self.state, self.job)
            last_ok = datetime.fromisoformat(completed).timestamp() if completed else None
            try:
                write_job_metrics(
                    metrics_dir,
                    self.job,
                    started=self._started_wall,
                    duration=duration,
                    exit_code=int(self.exit_code),
                    last_success=last_ok,
                    counts={k: v for k, v in self.counts.items() if isinstance(v, int | float)},
                )
            except OSError as exc:
                self.log("metrics-failed", error=str(exc))  # metrics must never change the result

    def _record_not_run(self, started: datetime, *, origin: RunOrigin, status: str, reason: str) -> None:
        """No work done: one row and event ('skipped': another run holds the lock, so persistent
        skipping is visible; 'done-elsewhere': the slot is another run's), and no ping."""
        self.log(status, reason=reason, trigger=self.trigger, node=origin.node, slot=origin.slot)
        try:
            opened = nullcontext(self.state) if self.state is not None else open_state(self.settings.state_db)
            with opened as state:
                record_not_run(
                    state,
                    run_id=self.run_id,
                    job=self.job,
                    started=started,
                    origin=origin,
                    status=status,
                    reason=reason,
                )
        except EdgecronError:
            pass  # the lock message is what the operator needs; an unusable state shows on the next run

    def _prune(self) -> None:
        """Every real run drops what the retention policy no longer keeps, so no job is needed for it.
        A failure is a warning event and never changes the exit code."""
        if self.state is None:
            return
        try:
            with self.state.transaction() as conn:
                dropped = prune_state(conn, self.retention, now=self.now())
            reclaimed = None if self.state.is_postgres else reclaim_space(self.state.conn)  # autovacuum's job
        except (sqlite3.Error, StateError) as exc:
            self.log("prune-failed", level="warning", error=str(exc))
            return
        if any(dropped.values()) or reclaimed:
            self.log("pruned", dropped={k: v for k, v in dropped.items() if v}, reclaimed=reclaimed)

    def _ping(self, stage: str) -> None:
        """Healthchecks ping; a failure is a warning event and never changes the exit code."""
        if self._pinger is None:
            return
        if stage == "start":
            result = self._pinger.start(self.run_id)
        else:
            body = "".join(self.log.tail)
            result = self._pinger.finish(self.run_id, int(self.exit_code), body=body)
        if not result.sent:
            self.log("ping-failed", level="warning", stage=stage, error=result.error, attempts=result.attempts)

    # --- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop waiting for in-flight work
        self.signal_received = signum
        self.stop.set()
        self.log("signal", signal=signal.Signals(signum).name)
