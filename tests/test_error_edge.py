"""One error edge (issue 10, part 6): system failures that are not bugs end in one `Error:` line.

Real scripts as subprocesses against real files: a garbage state.db, one from a newer edgecron,
`#` and `%` in STATE_DIR, and (as root, where mount works) a read-only and a full filesystem.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from edgecron.content import ContentStore


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


def test_a_state_db_from_a_newer_edgecron_is_refused(run_cli, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("jobs.py", "status").returncode == 0  # creates the database
    with sqlite3.connect(workdir / "state" / "state.db") as db:
        db.execute("INSERT INTO schema_migrations(name, applied_at) VALUES ('999_from_the_future', 'x')")
    for args in (("jobs.py", "status"), ("warm_cache.py", "--urls-file", "/dev/null")):
        result = run_cli(*args)
        assert_one_error(result, 2, "Error: state database")
        assert "was written by a newer edgecron: got 'migrations 999_from_the_future'" in result.stderr


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
