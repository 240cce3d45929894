"""A job's lock across nodes: a PostgreSQL session-level advisory lock, when STATE_DB is PostgreSQL.

The lock lives on a connection of its own, opened for the run and closed at its end: the server
frees it when that session ends, and a `kill -9` (or a crash) ends the session as the socket
closes, as the kernel frees a flock. A node that vanishes without closing its socket (power loss,
a partition) holds it until TCP keepalive gives up on the connection (db.py sets the client side;
the server side is in notes/scaling.md). The connection is idle by design while the job works, so
the role must not have `idle_session_timeout` set: the server would end the session and free the lock.

Key space: advisory locks taken with two int4 keys never collide with those taken with one bigint
key (PostgreSQL keeps the two key spaces apart; pg_locks shows objsubid 2 and 1). db.py's write
transactions use the one-bigint form (`pg_advisory_xact_lock(crc32(store))`); job locks use the
two-int form (JOB_LOCK_SPACE, crc32(job)), so neither can block the other. Two job names with the
same crc32 would share a lock (one would wait for the other): the five job names do not.

The holder (node, host, pid, start, command, slot) is a row in `job_locks` keyed by job and the
lock session's backend pid, written before the lock is tried: a row is believed only while its
session holds the key (pg_locks), so a contender's row or one left by a killed run names nobody.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable
from datetime import datetime

from .db import Database
from .errors import StateError
from .lock import JobLockHeld, LockHolder
from .redact import redact
from .state import StateDB

JOB_LOCK_SPACE = -0x5EDC_0001  # the first int4 key of every job lock: "edgecron jobs"


def job_key(job: str) -> int:
    """The second int4 key: crc32 of the job name, as a signed 32-bit integer."""
    value = zlib.crc32(job.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def _oid(key: int) -> int:
    """How pg_locks shows an int4 key (an unsigned oid)."""
    return key & 0xFFFFFFFF


_HOLDER_SQL = """
SELECT h.node, h.host, h.pid, h.started, h.command, h.slot
FROM pg_locks AS l JOIN job_locks AS h ON h.backend_pid = l.pid AND h.job = ?
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid::bigint = ? AND l.objid::bigint = ?
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_HELD_SQL = """
SELECT 1 FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid::bigint = ? AND l.objid::bigint = ?
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
UNKNOWN = LockHolder(None, "?", "?", "")


def fleet_holder(db: Database, job: str) -> LockHolder | None:
    """Who holds `job`'s advisory lock now (any node), UNKNOWN when its row is not there yet, or None."""
    key = (_oid(JOB_LOCK_SPACE), _oid(job_key(job)))
    row = db.execute(_HOLDER_SQL, (job, *key)).fetchone()
    if row is not None:
        return LockHolder(
            pid=row["pid"],
            host=row["host"],
            started=row["started"],
            command=row["command"],
            node=row["node"],
            slot=row["slot"],
        )
    return UNKNOWN if db.execute(_HELD_SQL, key).fetchone() is not None else None


class FleetLock:
    """The advisory lock of one job on a dedicated session; `release` (or the session's end) frees it."""

    def __init__(self, dsn: str, job: str, *, node: str) -> None:
        self.dsn = dsn
        self.job = job
        self.node = node
        self._db: StateDB | None = None

    def acquire(
        self,
        *,
        now: datetime,
        wait_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        slot: str | None = None,
    ) -> None:
        db = StateDB(self.dsn)  # its own session (migrated: job_locks exists), never the run's state connection
        try:
            # The holder row is written BEFORE the lock is tried: whoever finds the lock held finds its
            # holder too (a row is believed only while its session holds the key; a loser deletes its own).
            self._write_row(db, now=now, slot=slot)
            self._take(db, wait_seconds=wait_seconds, sleep=sleep)
        except BaseException:
            self._delete_row(db)
            db.close()
            raise
        # Rows of sessions that ended without deleting theirs (kill -9): cleared by the next holder.
        db.execute(
            "DELETE FROM job_locks WHERE job = ? AND backend_pid NOT IN (SELECT pid FROM pg_stat_activity)",
            (self.job,),
        )
        self._db = db

    def _write_row(self, db: Database, *, now: datetime, slot: str | None) -> None:
        db.execute(
            "INSERT INTO job_locks(job, backend_pid, node, host, pid, started, command, slot)"
            " VALUES (?, pg_backend_pid(), ?,?,?,?,?,?) ON CONFLICT (job, backend_pid) DO UPDATE SET"
            " node = excluded.node, host = excluded.host, pid = excluded.pid, started = excluded.started,"
            " command = excluded.command, slot = excluded.slot",
            (
                self.job,
                self.node,
                socket.gethostname(),
                os.getpid(),
                now.isoformat(timespec="seconds"),
                redact(" ".join(sys.argv)),  # --source URLs may carry a key
                slot,
            ),
        )

    def _delete_row(self, db: Database) -> None:
        # A session that is gone leaves a dead session's row: the next holder clears it.
        with contextlib.suppress(StateError):
            db.execute("DELETE FROM job_locks WHERE job = ? AND backend_pid = pg_backend_pid()", (self.job,))

    def _take(self, db: StateDB, *, wait_seconds: float, sleep: Callable[[float], None]) -> None:
        deadline = time.monotonic() + wait_seconds
        while not self._try(db):
            if time.monotonic() < deadline:
                sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                continue
            holder = fleet_holder(db, self.job)  # UNKNOWN: a holder without a row (an older edgecron)
            if holder is None:  # released between the two questions: ask for it again
                continue
            raise JobLockHeld(
                f"another {self.job} run holds its lock in {db.name} ({holder.describe()})",
                expected="no other run of this job on any node",
                hint="Nothing was changed; safe to retry when it ends (or pass --wait SECONDS). "
                "The lock frees itself if that process dies or its connection drops.",
                holder=holder,
            )

    def _try(self, db: Database) -> bool:
        return bool(
            db.execute(
                "SELECT pg_try_advisory_lock(?::integer, ?::integer)", (JOB_LOCK_SPACE, job_key(self.job))
            ).fetchone()[0]
        )

    def release(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            self._delete_row(db)
            db.execute("SELECT pg_advisory_unlock(?::integer, ?::integer)", (JOB_LOCK_SPACE, job_key(self.job)))
        except StateError:
            pass  # the session is gone, and the lock with it: closing is all that is left
        finally:
            db.close()
