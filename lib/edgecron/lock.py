"""One lock per job: `LOCK_DIR/<job>.lock`, held with fcntl.flock.

The holder writes its pid, host, start time and command into the file so a second run (and
`jobs.py status`) can name it. The file is never deleted: deleting a flock'ed file lets two
processes hold "the" lock on two different inodes. The kernel frees the lock when the holder dies,
so a `kill -9` leaves nothing to clean up.

With a PostgreSQL STATE_DB the job also takes its fleet-wide lock (pglock.py) after this one:
`job_lock` gives both, and `current_holder` asks PostgreSQL first. The local flock stays: it is
cheap, and a second run on the same node gets today's message naming the lock file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .db import is_postgres_url
from .errors import LockHeld, StateError
from .redact import redact
from .runs import PER_NODE_JOBS

if TYPE_CHECKING:
    from .config import Settings
    from .db import Database


@dataclass(frozen=True)
class LockHolder:
    pid: int | None
    host: str
    started: str
    command: str
    node: str | None = None  # NODE_NAME of the holder (None: a lock file from before nodes were recorded)
    slot: str | None = None  # the slot its scheduled run is for (None: a manual run)

    def describe(self) -> str:
        where = self.host if not self.node or self.node == self.host else f"{self.node} ({self.host})"
        return f"pid {self.pid} on {where}, started {self.started}"


class JobLockHeld(LockHeld):
    """LockHeld with the holder as read (None when it could not be read)."""

    def __init__(self, what: str, *, holder: LockHolder | None, **kwargs: object) -> None:
        self.holder = holder
        super().__init__(what, **kwargs)


class Lock(Protocol):
    def acquire(
        self, *, now: datetime, wait_seconds: float = 0.0, sleep: Callable[[float], None] = ..., slot: str | None = None
    ) -> None: ...

    def release(self) -> None: ...


class JobLock:
    """Non-blocking (or bounded-wait) exclusive lock for one job."""

    def __init__(self, lock_dir: Path, job: str, *, node: str | None = None) -> None:
        self.path = lock_dir / f"{job}.lock"
        self.job = job
        self.node = node
        self._fd: int | None = None

    def acquire(
        self,
        *,
        now: datetime,
        wait_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        slot: str | None = None,
    ) -> None:
        fd = open_private_file(self.path, os.O_RDWR | os.O_CREAT, what="lock file", expected="a writable LOCK_DIR")
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = read_holder_fd(fd)
                    os.close(fd)
                    who = holder.describe() if holder else "an unknown process"
                    raise JobLockHeld(
                        f"another {self.job} run holds {self.path} ({who})",
                        expected="no other run of this job",
                        hint="Nothing was changed; safe to retry when it ends "
                        "(or pass --wait SECONDS). The lock frees itself if that process dies.",
                        holder=holder,
                    ) from None
                sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now.isoformat(timespec="seconds"),
            "command": redact(" ".join(sys.argv)),  # --source URLs may carry a key
            "node": self.node,
            "slot": slot,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            # Truncate so status shows no stale holder; the file itself stays (see module doc).
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_private_file(path: Path, flags: int, *, what: str, expected: str) -> int:
    """Open (creating 0600, in a 0700 directory) a file only we should write: never through a symlink.

    In a shared or world-writable directory another user could plant a symlink (we would overwrite
    its target) or create the file first (and hold our lock forever): both are refused, named.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"{what} {path} is a symbolic link", expected="a regular file (remove the link)") from None
        raise StateError(f"cannot open {what} {path}", got=exc.strerror, expected=expected) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise StateError(
            f"{what} {path} is not a regular file owned by this user",
            got=f"uid {info.st_uid}, mode {stat.filemode(info.st_mode)}",
            expected=f"a file owned by uid {os.geteuid()} (remove it; the job recreates it)",
        )
    return fd


def read_holder_fd(fd: int) -> LockHolder | None:
    try:
        data = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        record = json.loads(data) if data else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    return LockHolder(
        pid=record.get("pid"),
        host=str(record.get("host", "?")),
        started=str(record.get("started", "?")),
        command=str(record.get("command", "")),
        node=_text_or_none(record.get("node")),
        slot=_text_or_none(record.get("slot")),
    )


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


class JobLocks:
    """Locks taken in order (the node's flock, then the fleet's) and released in reverse; a --wait
    deadline covers them all."""

    def __init__(self, locks: list[Lock]) -> None:
        self.locks = locks

    def acquire(
        self,
        *,
        now: datetime,
        wait_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        slot: str | None = None,
    ) -> None:
        deadline = time.monotonic() + wait_seconds
        taken: list[Lock] = []
        try:
            for lock in self.locks:
                left = max(0.0, deadline - time.monotonic())
                lock.acquire(now=now, wait_seconds=left, sleep=sleep, slot=slot)
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()


def job_lock(settings: Settings, job: str) -> JobLocks:
    """The locks a run of `job` takes: LOCK_DIR's flock, and with a PostgreSQL STATE_DB the fleet's
    (not for PER_NODE_JOBS: every node checks its own logs in the same slot)."""
    locks: list[Lock] = [JobLock(settings.lock_dir, job, node=settings.node_name)]
    if is_postgres_url(settings.state_db) and job not in PER_NODE_JOBS:  # a node's own work: its own lock
        from .pglock import FleetLock  # psycopg only when STATE_DB is PostgreSQL

        locks.append(FleetLock(str(settings.state_db), job, node=settings.node_name))
    return JobLocks(locks)


def current_holder(lock_dir: Path, job: str, *, state: Database | None = None) -> LockHolder | None:
    """Who holds the job's lock now, or None: on a PostgreSQL `state`, the fleet's holder (any
    node) first; then this node's flock, probed without blocking."""
    if state is not None and state.is_postgres:
        from .pglock import fleet_holder

        holder = fleet_holder(state, job)
        if holder is not None:
            return holder
    path = lock_dir / f"{job}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder_fd(fd) or LockHolder(None, "?", "?", "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
