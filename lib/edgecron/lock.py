"""One lock per job: `LOCK_DIR/<job>.lock`, held with fcntl.flock.

The holder writes its pid, host, start time and command into the file so a second run (and
`jobs.py status`) can name it. The file is never deleted: deleting a flock'ed file lets two
processes hold "the" lock on two different inodes. The kernel frees the lock when the holder dies,
so a `kill -9` leaves nothing to clean up.
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

from .errors import LockHeld, StateError
from .redact import redact


@dataclass(frozen=True)
class LockHolder:
    pid: int | None
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


class JobLock:
    """Non-blocking (or bounded-wait) exclusive lock for one job."""

    def __init__(self, lock_dir: Path, job: str) -> None:
        self.path = lock_dir / f"{job}.lock"
        self.job = job
        self._fd: int | None = None

    def acquire(
        self,
        *,
        now: datetime,
        wait_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
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
                    raise LockHeld(
                        f"another {self.job} run holds {self.path} ({who})",
                        expected="no other run of this job",
                        hint="Nothing was changed; safe to retry when it ends "
                        "(or pass --wait SECONDS). The lock frees itself if that process dies.",
                    ) from None
                sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now.isoformat(timespec="seconds"),
            "command": redact(" ".join(sys.argv)),  # --source URLs may carry a key
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
    )


def current_holder(lock_dir: Path, job: str) -> LockHolder | None:
    """Who holds the job's lock now, or None. Probes with a non-blocking flock."""
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
