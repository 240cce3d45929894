"""A throwaway PostgreSQL cluster from the installed server binaries: the tests, `make bench` and
`make demo-fleet` run against a real server started here (tests/pgcluster.py adds the pytest skip).

`PgCluster.create(bin_dir)` makes a fresh directory under /tmp (not under pytest's tmp dirs: a clone
may sit under a 0700 `mktemp -d` directory the server's user cannot enter); `start()` runs `initdb`
and `pg_ctl start` there, listening on 127.0.0.1 on a free port and on a unix socket in that
directory; `stop()` is `pg_ctl stop -m immediate` (nothing to keep: fsync is off) and `remove()`
deletes the directory. Run as root, the server runs as `postgres` (or `nobody`): it refuses root.
The cluster's own checks talk to it with the installed `psql`, so they do not depend on the driver under test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres", "psql")
MISSING_REASON = "PostgreSQL server binaries not found (install Debian's postgresql)"
DB_ROLE = "edgecron"  # the superuser initdb creates; trust auth: the cluster lives only for the tests
START_SECONDS = 30
START_ATTEMPTS = 3
STOP_SECONDS = 10
# Durability off: the cluster is thrown away, and fsyncs would be most of its start time.
SERVER_OPTIONS = "-F -c fsync=off -c full_page_writes=off -c synchronous_commit=off"


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine: the caller skips what needs one, saying so."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _has_server(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in SERVER_BINARIES)


def _major(bin_dir: Path) -> tuple[int, ...]:
    """`/usr/lib/postgresql/15/bin` -> (15,): newest first must compare 9.6 < 10 < 15 as numbers."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def find_pg_bin(pattern: str = PG_BIN_GLOB) -> Path | None:
    """Debian's versioned bin dir (newest major first), else the dir of `pg_ctl` on PATH, else None."""
    for bin_dir in sorted(Path("/").glob(pattern.lstrip("/")), key=_major, reverse=True):
        if _has_server(bin_dir):
            return bin_dir
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        bin_dir = Path(on_path).resolve().parent  # /usr/local/bin/pg_ctl may be a link into a versioned dir
        if _has_server(bin_dir):
            return bin_dir
    return None


def server_user() -> str | None:
    """Who runs the server: None = this process's user; as root `postgres` if it exists, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise RuntimeError("running as root, and neither `postgres` nor `nobody` exists to run the server")


@dataclass
class PgCluster:
    bin_dir: Path
    root: Path
    port: int
    user: str | None
    _databases: int = 0

    @classmethod
    def create(cls, bin_dir: Path) -> PgCluster:
        user = server_user()
        root = Path(tempfile.mkdtemp(prefix="edgecron-pg-", dir="/tmp"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        port = free_port()
        return cls(bin_dir=bin_dir, root=root, port=port, user=user)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_ROLE}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_dsn(self) -> str:
        """The same server over its unix socket (libpq: a host that is a directory)."""
        return f"postgresql://{DB_ROLE}@/postgres?host={self.root}&port={self.port}"

    def _as_server_user(self, *command: str | Path) -> list[str]:
        argv = [str(part) for part in command]
        return argv if self.user is None else ["runuser", "-u", self.user, "--", *argv]

    def _run(self, *command: str | Path) -> None:
        # cwd: the server's user may not be able to enter the test's working directory.
        result = subprocess.run(
            self._as_server_user(*command), cwd=self.root, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): {result.stderr}{log}")

    def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                self.bin_dir / "initdb",
                "-D",
                self.data_dir,
                f"--username={DB_ROLE}",
                "--auth=trust",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
            )
        for attempt in range(START_ATTEMPTS):
            options = (
                f"{SERVER_OPTIONS} -c listen_addresses=127.0.0.1 -c port={self.port}"
                f" -c unix_socket_directories={self.root}"
            )
            try:
                self._run(
                    self.bin_dir / "pg_ctl", "start", "-D", self.data_dir, "-l", self.log_file, "-w",
                    "-t", str(START_SECONDS), "-o", options,
                )  # fmt: skip
                return
            except RuntimeError as error:
                # The free port taken by another process in between: try a new one.
                if "could not bind" not in str(error) or attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()

    def server_pid(self) -> int | None:
        """The postmaster's pid from its pid file, None when the server is not running."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def stop(self) -> None:
        """Stop at once; a server that survived `pg_ctl` is killed, so no postgres outlives the tests."""
        pid = self.server_pid()
        if pid is None:
            return
        with contextlib.suppress(RuntimeError):
            self._run(self.bin_dir / "pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", "-w")
        # The postmaster removes its pid file a moment before it exits: wait for the process itself.
        deadline = time.monotonic() + STOP_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty database in this cluster (one per test): its URL."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        self.psql(f"CREATE DATABASE {name}")
        return f"postgresql://{DB_ROLE}@127.0.0.1:{self.port}/{name}"

    def psql(self, sql: str, *, dsn: str | None = None) -> str:
        """Run `sql` in one new connection; rows unaligned, `|`-separated, without headers."""
        result = subprocess.run(
            [self.bin_dir / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn or self.dsn, "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}) on {sql!r}: {result.stderr.strip()}")
        return result.stdout


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped and its directory removed on the way out (failed or not).

    Raises ServerUnavailable (MISSING_REASON) when no server binaries are installed.
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise ServerUnavailable(MISSING_REASON)
    cluster = PgCluster.create(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.remove()
