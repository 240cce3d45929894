"""One error edge (issue 10, part 6): system failures that are not bugs end in one `Error:` line.

Real scripts as subprocesses against real files: a garbage state.db, one from a newer edgecron,
`#` and `%` in STATE_DIR, and (as root, where mount works) a read-only and a full filesystem.
Their PostgreSQL counterparts run against a real server: one that does not answer, a wrong
password, a database from a newer edgecron, the server dropping the connection mid-run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ROOT
from edgecron.content import ContentStore
from edgecron.state import open_state
from pgcluster import PgCluster
from statedb import state_rows

from demo.site import DemoSite


def assert_one_error(result: subprocess.CompletedProcess[str], code: int, starts: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(starts), result.stderr


@pytest.mark.parametrize(
    "args",
    [("purge_cache.py", "outbox"), ("purge_cache.py", "everything", "--dry-run"), ("jobs.py", "status")],
)
def test_a_garbage_state_db_is_one_clear_error(run_cli, workdir: Path, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    (workdir / "state" / "state.db").write_bytes(b"this is not a database, just 64 bytes of text padding......\n")
    result = run_cli(*args)
    assert_one_error(result, 2, f"Error: state database {workdir / 'state' / 'state.db'} is unusable")


@pytest.mark.both_backends
def test_a_state_db_from_a_newer_edgecron_is_refused(run_cli, state_db: Path | str) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("jobs.py", "status").returncode == 0  # creates the database
    with open_state(state_db) as db:
        db.execute("INSERT INTO schema_migrations(name, applied_at) VALUES ('999_from_the_future', 'x')")
    for args in (("jobs.py", "status"), ("warm_cache.py", "--urls-file", "/dev/null")):
        result = run_cli(*args)
        assert_one_error(result, 2, "Error: state database")
        assert "was written by a newer edgecron: got 'migrations 999_from_the_future'" in result.stderr


# --- the same failures with STATE_DB on a PostgreSQL server -------------------------------------

PASSWORD = "pw-5e1f-not-for-eyes"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_files(state_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in state_dir.rglob("*") if p.is_file())


@pytest.mark.parametrize("args", [("jobs.py", "status"), ("warm_cache.py", "--urls-file", "/dev/null")])
def test_a_state_server_that_does_not_answer_is_temporary_and_hides_the_password(  # type: ignore[no-untyped-def]
    run_cli, env_file: Path, workdir: Path, args: tuple[str, ...]
) -> None:
    port = closed_port()
    with env_file.open("a") as fh:
        fh.write(f"STATE_DB=postgresql://edgecron:{PASSWORD}@127.0.0.1:{port}/edge\n")
    result = run_cli(*args)
    assert_one_error(
        result, 75, f"Error: state database postgresql://edgecron:***@127.0.0.1:{port}/edge is unreachable"
    )
    assert "Connection refused" in result.stderr
    assert result.stderr.splitlines()[1] == "Nothing was changed; safe to retry once the database answers."
    assert PASSWORD not in result.stdout + result.stderr + private_files(workdir / "state")


@pytest.fixture
def password_role(pg_cluster: PgCluster) -> str:
    """A role of this worker's cluster that must give its password (`right-pw`), ahead of the trust rules."""
    role = f"pw_{os.getpid()}"
    hba = pg_cluster.data_dir / "pg_hba.conf"
    rule = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
    if not hba.read_text().startswith(rule):
        pg_cluster.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'right-pw'")
        hba.write_text(rule + hba.read_text())
        pg_cluster.psql("SELECT pg_reload_conf()")
        wrong = f"postgresql://{role}:wrong@127.0.0.1:{pg_cluster.port}/postgres"
        deadline = time.monotonic() + 10
        while (
            subprocess.run([pg_cluster.bin_dir / "psql", "-X", "-d", wrong, "-c", ""], capture_output=True).returncode
            == 0
        ):
            assert time.monotonic() < deadline, "the server did not load the password rule"
            time.sleep(0.05)  # the reload is asynchronous
    return role


def test_a_wrong_state_db_password_is_a_config_error_that_never_shows_it(  # type: ignore[no-untyped-def]
    run_cli, env_file: Path, workdir: Path, pg_cluster: PgCluster, password_role: str
) -> None:
    url = f"postgresql://{password_role}:{PASSWORD}@127.0.0.1:{pg_cluster.port}/postgres"
    (workdir / "state-db-url").write_text(url + "\n")
    (workdir / "state-db-url").chmod(0o600)
    with env_file.open("a") as fh:
        fh.write(f"STATE_DB_FILE={workdir / 'state-db-url'}\n")
    result = run_cli("warm_cache.py", "--urls-file", "/dev/null")
    shown = f"postgresql://{password_role}:***@127.0.0.1:{pg_cluster.port}/postgres"
    assert_one_error(result, 2, f"Error: state database {shown} refused the login")
    assert "password authentication failed for user" in result.stderr, result.stderr
    assert result.stderr.splitlines()[1] == "Nothing was changed; fix the URL or the role on the server, then rerun."
    assert PASSWORD not in result.stdout + result.stderr + private_files(workdir / "state")


@pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)
def test_a_state_db_role_that_may_only_read_is_one_clear_error(  # type: ignore[no-untyped-def]
    run_cli, env_file: Path, state_db: str, pg_cluster: PgCluster
) -> None:
    """The counterpart of a read-only STATE_DIR: the server refuses the run's first write."""
    with open_state(state_db):
        pass  # migrated by its owner
    role = f"reader_{os.getpid()}"
    if not pg_cluster.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'").strip():
        pg_cluster.psql(f"CREATE ROLE {role} LOGIN")
    pg_cluster.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}", dsn=state_db)
    reader = state_db.replace("postgresql://edgecron@", f"postgresql://{role}@")
    env_file.write_text(env_file.read_text().replace(f"STATE_DB={state_db}", f"STATE_DB={reader}"))
    assert run_cli("jobs.py", "status").returncode == 0  # reading is all it needs
    result = run_cli("warm_cache.py", "--urls-file", "/dev/null")
    assert_one_error(
        result, 2, f"Error: state database {reader} refused a statement: got 'permission denied for table "
    )
    assert result.stderr.splitlines()[1] == (
        "The statement's transaction changed nothing; check the role's privileges, then rerun."
    )
    assert state_rows(state_db, "SELECT count(*) FROM runs") == [(0,)]


@pytest.mark.slow
@pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)
def test_a_state_server_gone_mid_run_is_temporary_and_the_rerun_carries_on(  # type: ignore[no-untyped-def]
    run_script, base_env: dict[str, str], state_db: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    # ~3 s of warming, one request at a time: the cut lands mid-run whatever the machine's load
    with DemoSite(access_log=tmp_path / "site.log", pages=10, latency=0.15) as site:
        env = {**base_env, "SITE_URL": site.url, "WARM_RATE": "0"}
        warm = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "warm_cache.py"), "--concurrency", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while site.state.stats["requests"] < 1:  # it has recorded its start and is warming
            assert time.monotonic() < deadline and warm.poll() is None, warm.stderr
            time.sleep(0.02)
        database = state_db.rsplit("/", 1)[1]
        pg_cluster.psql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
            " AND pid <> pg_backend_pid()"
        )
        _out, err = warm.communicate(timeout=30)
        assert warm.returncode == 75, err
        assert "Traceback" not in err
        assert err.splitlines()[0].startswith(f"Error: state database {state_db} stopped answering: got ")
        assert "safe to retry" in err
        assert [line for line in err.splitlines() if line.startswith("Error:")] == err.splitlines()[:1]
        rerun = run_script("warm_cache.py", "--urls-file", "/dev/null", env={"SITE_URL": site.url})
    assert rerun.returncode == 0, rerun.stderr
    # the cut-off run could not record its end: the rerun marks it, as after a kill -9
    assert state_rows(state_db, "SELECT status FROM runs ORDER BY id") == [("abandoned",), ("ok",)]


def test_hash_and_percent_in_state_dir_open_the_right_file(run_cli, env_file: Path, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    odd = workdir / "st#ate%41 dir"
    env_file.write_text(f"STATE_DIR={odd}\nSITE_URL=https://www.example.com\n")
    assert run_cli("purge_cache.py", "urls", "/a", "--dry-run").returncode == 0  # nothing yet: nothing created
    assert not odd.exists()
    assert run_cli("jobs.py", "status").returncode == 0  # now state.db exists
    before = sorted(p.name for p in workdir.iterdir())
    result = run_cli("purge_cache.py", "outbox")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The outbox is empty: nothing pending.\n"
    assert sorted(p.name for p in workdir.iterdir()) == before  # no stray file from a cut-short URI


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tiny real filesystem of our own (needs root and mount, as on CI)."""
    where = tmp_path / "fs"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount is not allowed here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_state_dir_is_one_clear_error(run_cli, env_file: Path, tmpfs: Path) -> None:  # type: ignore[no-untyped-def]
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    env_file.write_text(f"STATE_DIR={tmpfs / 'state'}\n")
    result = run_cli("warm_cache.py", "--urls-file", "/dev/null")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Read-only file system" in result.stderr.splitlines()[0]


def test_a_full_disk_is_temporary_and_says_so(run_cli, env_file: Path, tmpfs: Path) -> None:  # type: ignore[no-untyped-def]
    env_file.write_text(f"STATE_DIR={tmpfs / 'state'}\n")
    assert run_cli("jobs.py", "status").returncode == 0  # the database fits
    filled = subprocess.run(["dd", "if=/dev/zero", f"of={tmpfs / 'filler'}", "bs=4k"], capture_output=True)
    assert b"No space left on device" in filled.stderr  # really full now
    result = run_cli("warm_cache.py", "--urls-file", "/dev/null")
    assert result.returncode == 75, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith("Error: the disk is full")
    assert "free disk space and rerun" in result.stderr


@pytest.mark.parametrize(
    ("env_line", "token_file_bytes", "message"),
    [
        ("CF_API_TOKEN='abc def'", None, "Error: CF_API_TOKEN with whitespace inside"),
        ('CF_API_TOKEN="abc\\ndef"', None, "Error: CF_API_TOKEN with whitespace inside"),
        ("", b"abc\ndef\n", "Error: CF_API_TOKEN_FILE holds a token with whitespace inside"),
        ("", b"\xff\xfe\x00token", "Error: CF_API_TOKEN_FILE is not text"),
    ],
)
def test_a_malformed_token_is_a_config_error_at_load_time(  # type: ignore[no-untyped-def]
    run_cli, env_file: Path, workdir: Path, env_line: str, token_file_bytes: bytes | None, message: str
) -> None:
    with env_file.open("a") as fh:
        fh.write(env_line + "\n")
        if token_file_bytes is not None:
            (workdir / "token").write_bytes(token_file_bytes)
            fh.write(f"CF_API_TOKEN_FILE={workdir / 'token'}\n")
    result = run_cli("purge_cache.py", "outbox", "--retry")
    assert_one_error(result, 2, message)
    assert "abc" not in result.stderr and "def" not in result.stderr  # no piece of the token is shown


def test_a_backup_taken_after_the_clock_went_back_is_kept(tmp_path: Path) -> None:
    with ContentStore(tmp_path / "content.db") as store:
        for day in (10, 11, 12):
            store.backup(tmp_path / "backups", keep=2, now=datetime(2026, 11, day, tzinfo=UTC), label=f"d{day}")
        taken = store.backup(tmp_path / "backups", keep=2, now=datetime(2026, 11, 1, tzinfo=UTC), label="back")
    assert taken.exists()
    assert sorted(p.name.split("-")[-1] for p in (tmp_path / "backups").glob("content-*.db")) == ["back.db", "d12.db"]


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(run_script, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    target = workdir / "precious.txt"
    target.write_text("keep me\n")
    (workdir / "state" / "locks").mkdir()
    (workdir / "state" / "locks" / "warm.lock").symlink_to(target)
    result = run_script("warm_cache.py", "--urls-file", "/dev/null")
    assert_one_error(result, 2, f"Error: lock file {workdir / 'state' / 'locks' / 'warm.lock'} is a symbolic link")
    assert target.read_text() == "keep me\n"


@pytest.mark.slow
def test_files_under_state_dir_are_private_whatever_the_umask(run_script, env_file: Path, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    with env_file.open("a") as fh:
        fh.write("SITE_URL=https://www.example.com\n")
    old = os.umask(0o022)
    try:
        assert run_script("warm_cache.py", "--urls-file", "/dev/null").returncode == 0
        assert run_script("purge_cache.py", "urls", "/a", "--dry-run").returncode == 0
        assert run_script("jobs.py", "status").returncode == 0
    finally:
        os.umask(old)
    state = workdir / "state"
    leaks = [
        f"{p} {oct(p.stat().st_mode & 0o777)}"
        for p in [*state.rglob("*")]
        if p.stat().st_mode & 0o077 and p != state  # the test made STATE_DIR itself
    ]
    assert leaks == []
    assert {p.name for p in state.rglob("*")} >= {"state.db", "warm.lock", "warm.jsonl"}


def test_a_symlinked_event_log_is_not_followed(run_cli, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    target = workdir / "precious.txt"
    target.write_text("keep me\n")
    (workdir / "state" / "logs").mkdir()
    (workdir / "state" / "logs" / "warm.jsonl").symlink_to(target)
    assert run_cli("warm_cache.py", "--urls-file", "/dev/null").returncode == 0  # the log never breaks a job
    assert target.read_text() == "keep me\n"


def test_a_readable_env_is_a_warning_naming_the_fix(run_cli, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    env_file.chmod(0o644)
    result = run_cli("jobs.py", "next", "warm")
    assert result.returncode == 0
    assert result.stderr == (
        f"Warning: {env_file} (settings with the API token) is readable or writable by others (mode 0644); "
        f"fix: chmod 600 {env_file}\n"
    )


@pytest.mark.parametrize("which", ["env", "state"])
def test_a_world_writable_env_or_state_dir_is_an_error(run_cli, env_file: Path, workdir: Path, which: str) -> None:  # type: ignore[no-untyped-def]
    """Anyone who can write .env can point CF_API_URL elsewhere and receive the token."""
    path = env_file if which == "env" else workdir / "state"
    path.chmod(0o666 if which == "env" else 0o777)
    result = run_cli("warm_cache.py", "--urls-file", "/dev/null")
    assert_one_error(result, 2, f"Error: {path} (")
    assert "is writable by every user" in result.stderr
    assert f"chmod {'600' if which == 'env' else '700'} {path}" in result.stderr
    assert not (workdir / "state" / "state.db").exists()  # refused before anything was written


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file owned by another user needs root")
def test_a_lock_file_planted_by_another_user_is_refused_not_waited_on(run_script, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    """In a shared LOCK_DIR another user could create warm.lock first and hold it forever."""
    lock = workdir / "state" / "locks" / "warm.lock"
    lock.parent.mkdir()
    lock.write_text("")
    os.chown(lock, 65534, 65534)  # nobody
    result = run_script("warm_cache.py", "--urls-file", "/dev/null")
    assert_one_error(result, 2, f"Error: lock file {lock} is not a regular file owned by this user: got 'uid 65534")
