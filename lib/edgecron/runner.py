"""The frame every job runs in: lock → run record → (work) → metrics → exit code.

SIGTERM/SIGINT set `stop`: the job stops starting new work, finishes what is in flight, and the
run is recorded as interrupted with exit code 143/130. A second SIGINT aborts at once.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import EdgecronError, ExitCode, LockHeld, from_unexpected
from .lock import JobLock
from .runs import finish_run, last_completed_at, record_skipped, start_run
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
    """One JSON line per event in `STATE_DIR/logs/<job>.jsonl`; dry runs are labelled on each line."""

    def __init__(self, path: Path | None, *, job: str, run_id: str, dry_run: bool, now: Callable[[], datetime]) -> None:
        self.path = path
        self.job = job
        self.run_id = run_id
        self.dry_run = dry_run
        self.now = now
        self._lock = threading.Lock()
        self.tail: deque[str] = deque(maxlen=200)  # this run's last events, for the ping body

    def __call__(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        record: dict[str, Any] = {"ts": iso(self.now()), "job": self.job, "run_id": self.run_id, "event": event}
        if self.dry_run:
            record["dry_run"] = True
        record.update(fields)
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        self.tail.append(line)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError:
                pass  # the event log must never break the job


class JobRun:
    """Context manager around one run of one job. Dry runs take no lock and record nothing.

    `trigger` says how the run was started (cron, scheduler, manual; see runs.py). A run that
    finds the lock held is recorded as skipped (exit 75) and raises LockHeld.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        job: str,
        dry_run: bool = False,
        lock_wait: float = 0.0,
        trigger: str = "manual",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.job = job
        self.dry_run = dry_run
        self.trigger = trigger
        self.lock_wait = lock_wait
        self.now = now
        self.run_id = uuid.uuid4().hex
        self.stop = threading.Event()
        self.signal_received: int | None = None
        self.counts: dict[str, Any] = {}
        self.exit_code: ExitCode = ExitCode.OK
        self.state: StateDB | None = None
        self._lock = JobLock(settings.lock_dir, job)
        self._old_handlers: dict[int, Any] = {}
        self._started_wall = 0.0
        self._started_mono = 0.0
        log_path = None if dry_run else settings.state_dir / "logs" / f"{job}.jsonl"
        self.log = EventLog(log_path, job=job, run_id=self.run_id, dry_run=dry_run, now=now)
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
        if not self.dry_run:
            try:
                self._lock.acquire(now=started, wait_seconds=self.lock_wait)
            except LockHeld as held:
                self._record_skipped(started, command=command, reason=held.message)
                raise
            try:
                self.state = open_state(self.settings.state_dir)
                start_run(
                    self.state, run_id=self.run_id, job=self.job, started=started, trigger=self.trigger, command=command
                )
            except BaseException:
                self._lock.release()
                raise
        self._install_signal_handlers()
        self.log("start", command=command, trigger=self.trigger)
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

    def _record_skipped(self, started: datetime, *, command: str, reason: str) -> None:
        """Another run holds the lock: one 'skipped' row and event, so persistent skipping is visible."""
        self.log("skipped", reason=reason, trigger=self.trigger)
        try:
            with open_state(self.settings.state_dir) as state:
                record_skipped(
                    state,
                    run_id=self.run_id,
                    job=self.job,
                    started=started,
                    trigger=self.trigger,
                    command=command,
                    reason=reason,
                )
        except EdgecronError:
            pass  # the lock message is what the operator needs; an unusable state shows on the next run

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
