"""The throwaway PostgreSQL cluster the storage tests will run against: a real server, as a real unprivileged user."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import pytest
from pgcluster import PgCluster, find_pg_bin, server_user, throwaway_cluster


def test_rows_written_over_one_connection_are_read_over_another(pg_cluster: PgCluster) -> None:
    pg_cluster.psql("CREATE TABLE probe_rows (id integer PRIMARY KEY, name text NOT NULL)")
    pg_cluster.psql("INSERT INTO probe_rows VALUES (1, 'alpha'), (2, 'beta')")
    # Each psql call is its own connection; the second one comes in over the unix socket, not TCP.
    assert pg_cluster.psql("SELECT id, name FROM probe_rows ORDER BY id", dsn=pg_cluster.socket_dsn) == (
        "1|alpha\n2|beta\n"
    )
    pg_cluster.psql("UPDATE probe_rows SET name = 'gamma' WHERE id = 2", dsn=pg_cluster.socket_dsn)
    assert pg_cluster.psql("SELECT name FROM probe_rows WHERE id = 2") == "gamma\n"
    with pytest.raises(RuntimeError, match="duplicate key"):
        pg_cluster.psql("INSERT INTO probe_rows VALUES (1, 'again')")


def test_two_connections_are_two_server_backends(pg_cluster: PgCluster) -> None:
    tcp = pg_cluster.psql("SELECT pg_backend_pid(), inet_server_port()").strip()
    unix = pg_cluster.psql("SELECT pg_backend_pid(), inet_server_port()", dsn=pg_cluster.socket_dsn).strip()
    tcp_pid, tcp_port = tcp.split("|")
    unix_pid, unix_port = unix.split("|")
    assert tcp_pid != unix_pid
    assert (tcp_port, unix_port) == (str(pg_cluster.port), "")  # no server port on a unix socket


def test_the_server_runs_as_the_unprivileged_user_from_its_temp_dir(pg_cluster: PgCluster) -> None:
    pid = pg_cluster.server_pid()
    assert pid is not None
    uid = next(
        int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
    )
    expected = pwd.getpwnam(pg_cluster.user).pw_uid if pg_cluster.user is not None else os.geteuid()
    assert uid == expected
    if os.geteuid() == 0:
        assert uid != 0
    data_dir = pg_cluster.psql("SELECT current_setting('data_directory')").strip()
    assert Path(data_dir) == pg_cluster.data_dir
    assert pg_cluster.data_dir.is_relative_to("/tmp")


def running(pid: int) -> bool:
    """Whether `pid` is a live process: an exited server may stay a zombie until init reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_server_user_is_unprivileged_when_root() -> None:
    if os.geteuid() == 0:
        assert server_user() in ("postgres", "nobody")
    else:
        assert server_user() is None


def test_after_stop_the_port_refuses_connections_and_the_directory_can_go() -> None:
    with throwaway_cluster() as cluster:
        pid = cluster.server_pid()
        assert pid is not None
        assert cluster.psql("SELECT 1") == "1\n"
        cluster.stop()
        assert cluster.server_pid() is None
        assert not running(pid)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", cluster.port), timeout=5):
            pass
        with pytest.raises(RuntimeError, match="psql failed"):
            cluster.psql("SELECT 1")
    assert not cluster.root.exists()


def test_find_pg_bin_prefers_the_newest_versioned_dir(tmp_path: Path) -> None:
    for version in ("9.6", "15", "10", "16"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        if version != "16":  # 16 lacks its binaries: skipped, not chosen
            for name in ("initdb", "pg_ctl", "postgres", "psql"):
                (bin_dir / name).write_text("#!/bin/sh\n")
                (bin_dir / name).chmod(0o755)
    assert find_pg_bin(str(tmp_path / "*" / "bin")) == tmp_path / "15" / "bin"


def test_find_pg_bin_is_none_without_server_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_ctl on PATH either: the fixture then skips
    assert find_pg_bin(str(tmp_path / "*" / "bin")) is None
