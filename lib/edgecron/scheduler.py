"""`jobs.py schedule`: one APScheduler BlockingScheduler running each job as a subprocess.

Each run is `python scripts/<script> <args>` in its own process, so it takes its own lock (cron,
manual runs and the scheduler can never overlap), records itself, pings, and a crash stays
isolated. Within the scheduler: max_instances=1 (a run that outlasts its interval makes the next
one skip, with a warning), coalesce (a backlog becomes one run), and a misfire grace time (a
late start still runs; APScheduler's 1 s default silently drops runs).

SIGTERM/SIGINT: no new runs start; running jobs get until the stop grace time to finish; then
they are sent SIGTERM (they finish the item in hand and record themselves as interrupted), and
whatever is still alive at the deadline is killed. Exit code 143/130.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from types import FrameType

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger

from .errors import ExitCode
from .runs import SLOT_ENV, TRIGGER_ENV
from .schedule import Scheduled, slot_text, to_trigger

logger = logging.getLogger("edgecron.scheduler")

OUTPUT_TAIL_LINES = 20


@dataclass(frozen=True)
class Entry:
    """One scheduled command: the job name (APScheduler job id), its argv and its trigger."""

    job: str
    argv: tuple[str, ...]
    trigger: BaseTrigger


def entries_for(schedule: Sequence[Scheduled], *, python: str, scripts_dir: Path, tz: tzinfo) -> list[Entry]:
    """Entries for the enabled jobs of a schedule table."""
    return [
        Entry(
            item.name,
            (python, str(scripts_dir / item.spec.script), *item.spec.args),
            to_trigger(item.cron, tz),
        )
        for item in schedule
        if item.cron is not None
    ]


class FireTimeExecutor(ThreadPoolExecutor):
    """A thread pool that notes the fire time each job is submitted for (coalesced: the latest), so
    the run started for it is told its slot. max_instances=1 refuses a second submission of a job
    before this hook while the first runs, so a noted time is never overwritten under a running job."""

    def __init__(self, max_workers: int, *, fire_times: dict[str, datetime]) -> None:
        super().__init__(max_workers)
        self.fire_times = fire_times

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        self.fire_times[job.id] = run_times[-1]
        super()._do_submit_job(job, run_times)


class JobProcesses:
    """Starts job subprocesses and keeps track of the running ones, so a stop can wait for them."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        fire_times: dict[str, datetime] | None = None,
    ) -> None:
        # The children record trigger 'scheduler' (runs.py), so health judges them as scheduled.
        self.env = {**(os.environ if env is None else env), TRIGGER_ENV: "scheduler"}
        self.env.pop(SLOT_ENV, None)  # each run is told its own slot
        self.fire_times = {} if fire_times is None else fire_times
        self.cwd = cwd
        self.stopping = threading.Event()
        self._running: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()

    def run(self, entry: Entry) -> int | None:
        """Run one job to completion (called in an executor thread); return its exit code."""
        fired = self.fire_times.pop(entry.job, None)
        # The run's slot is the exact fire time, not the child's clock a moment (or a misfire) later.
        env = self.env if fired is None else {**self.env, SLOT_ENV: slot_text(fired)}
        with self._lock:
            if self.stopping.is_set():
                return None
            # Own session: a terminal's Ctrl-C reaches only the scheduler, which decides.
            proc = subprocess.Popen(
                entry.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
            self._running[entry.job] = proc
        started = time.monotonic()
        logger.info("%s started (pid %s)", entry.job, proc.pid)
        try:
            output, _ = proc.communicate()
        finally:
            with self._lock:
                self._running.pop(entry.job, None)
        duration = time.monotonic() - started
        code = proc.returncode
        if code == 0:
            logger.info("%s finished: exit 0 in %.1fs", entry.job, duration)
        elif code == ExitCode.TEMPFAIL:
            logger.warning("%s skipped or deferred: exit 75 in %.1fs: %s", entry.job, duration, _tail(output, 1))
        else:
            logger.warning("%s failed: exit %s in %.1fs\n%s", entry.job, code, duration, _tail(output))
        return code

    def running(self) -> dict[str, int]:
        with self._lock:
            return {job: proc.pid for job, proc in self._running.items()}

    def drain(self, *, grace: float) -> None:
        """Wait for running jobs; near the deadline send them SIGTERM, at the deadline SIGKILL."""
        self.stopping.set()
        deadline = time.monotonic() + grace
        term_at = deadline - min(10.0, grace / 3)
        termed = False
        while True:
            with self._lock:
                procs = list(self._running.items())
            if not procs:
                return
            now = time.monotonic()
            if now >= deadline:
                for job, proc in procs:
                    logger.error("%s still running at the stop deadline: killed (pid %s)", job, proc.pid)
                    proc.kill()
                return
            if now >= term_at and not termed:
                for job, proc in procs:
                    logger.warning("%s still running: sending SIGTERM (pid %s)", job, proc.pid)
                    proc.send_signal(signal.SIGTERM)
                termed = True
            time.sleep(0.05)


def serve(
    entries: Sequence[Entry],
    *,
    timezone: tzinfo,
    misfire_grace: float = 900.0,
    stop_grace: float = 60.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Run the scheduler until SIGTERM/SIGINT; return the exit code (143/130)."""
    fire_times: dict[str, datetime] = {}
    processes = JobProcesses(env=env, cwd=cwd, fire_times=fire_times)
    scheduler = BlockingScheduler(
        timezone=timezone,
        # job_defaults, not constructor kwargs: a misfire_grace_time kwarg is silently ignored
        job_defaults={"misfire_grace_time": misfire_grace, "coalesce": True, "max_instances": 1},
        executors={"default": FireTimeExecutor(max(1, len(entries)), fire_times=fire_times)},
    )
    for entry in entries:
        scheduler.add_job(processes.run, trigger=entry.trigger, args=(entry,), id=entry.job, name=entry.job)
    scheduler.add_listener(_on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)

    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if received:
            return
        received.append(signum)
        processes.stopping.set()
        running = ", ".join(processes.running())
        if running:
            logger.info("%s: no new runs; waiting up to %ss for %s", signal.Signals(signum).name, stop_grace, running)
        else:
            logger.info("%s: no new runs; no job is running", signal.Signals(signum).name)
        # Shut down from a thread: the handler may interrupt the scheduler while it holds its locks.
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}, daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for job in scheduler.get_jobs():
            logger.info("%s scheduled: %s", job.id, job.trigger)
        logger.info("scheduler started: %d jobs, time zone %s", len(entries), timezone)
        scheduler.start()  # blocks until shutdown
        processes.drain(grace=stop_grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("scheduler stopped")
    return int(ExitCode.SIGINT if received and received[0] == signal.SIGINT else ExitCode.SIGTERM)


def _on_event(event: JobEvent) -> None:
    if event.code == EVENT_JOB_MAX_INSTANCES:
        logger.warning("%s is still running: this run is skipped", event.job_id)
    elif event.code == EVENT_JOB_MISSED:
        logger.warning("%s missed its start time by more than the misfire grace time", event.job_id)
    elif isinstance(event, JobExecutionEvent) and event.exception is not None:
        logger.error("%s could not be run: %s", event.job_id, event.exception)


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
