"""Rotation matrix: over several runs, every line written is counted exactly once.

Real files, a real state database, and the same save order as the script (results, then cursor).
Each line carries a unique id, so a loss or a double count shows up by id, not only as a total.
"""

from __future__ import annotations

import gzip
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from edgecron.accesslog import LogReader
from edgecron.logcursors import load_cursors, save_cursors
from edgecron.logfiles import expand_paths, is_rotated_name, rotated_candidates
from edgecron.state import StateDB, open_state

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.both_backends  # the tests with a `state` keep their cursors in it


class Log:
    """Writes numbered nginx-like lines the way nginx does (append, one write per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.next_id = 0
        self.written: list[str] = []

    def write(self, count: int, *, to: Path | None = None) -> None:
        with open(to or self.path, "a", encoding="ascii") as fh:
            for _ in range(count):
                ident = f"id{self.next_id:06d}"
                self.next_id += 1
                self.written.append(ident)
                fh.write(f'203.0.113.9 - - [28/Nov/2026:12:00:00 +0000] "GET /{ident} HTTP/1.1" 200 5 "-" "t"\n')


def run_once(state: StateDB, paths: list[Path]) -> tuple[list[str], LogReader]:
    reader = LogReader(paths, cursors_before=load_cursors(state, node="test"))
    seen: list[str] = []
    for lines in reader.chunks():
        seen += [line.split(b"GET /")[1].split(b" ")[0].decode() for line in lines]
    with state.transaction() as conn:
        save_cursors(conn, reader.cursors(), node="test", now=NOW, run_id="test")
    return seen, reader


@pytest.fixture
def state(state_db: Path | str) -> StateDB:
    db = open_state(state_db)
    yield db
    db.close()


@pytest.fixture
def log(tmp_path: Path) -> Log:
    (tmp_path / "logs").mkdir()
    return Log(tmp_path / "logs" / "access.log")


def rotate_rename(log: Log) -> None:
    """logrotate with delaycompress: .1 → .2.gz, log → .1, a new empty log."""
    one = log.path.with_name("access.log.1")
    if one.exists():
        with open(one, "rb") as src, gzip.open(log.path.with_name("access.log.2.gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        one.unlink()
    log.path.rename(one)
    log.path.touch()


def gzip_in_place(path: Path) -> None:
    with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


def copytruncate(log: Log) -> None:
    shutil.copyfile(log.path, log.path.with_name("access.log.1"))
    with open(log.path, "r+b") as fh:
        fh.truncate(0)


def test_rename_with_delaycompress_and_late_writes(state: StateDB, log: Log) -> None:
    seen: list[str] = []
    log.write(10)
    seen += run_once(state, [log.path])[0]
    log.write(5)
    rotate_rename(log)
    log.write(2, to=log.path.with_name("access.log.1"))  # nginx writes to .1 until it gets USR1
    log.write(7)
    got, reader = run_once(state, [log.path])
    seen += got
    assert [e.kind for e in reader.events] == ["rotated"]
    log.write(3)
    rotate_rename(log)  # .1 becomes .2.gz, the log becomes .1
    log.write(4)
    seen += run_once(state, [log.path])[0]
    seen += run_once(state, [log.path])[0]
    assert seen == log.written  # every line once, in order


def test_rotated_file_gzipped_before_the_next_run(state: StateDB, log: Log) -> None:
    seen: list[str] = []
    log.write(10)
    seen += run_once(state, [log.path])[0]
    log.write(5)  # not read yet when rotation happens
    rotate_rename(log)
    gzip_in_place(log.path.with_name("access.log.1"))  # no delaycompress: the inode is gone
    log.write(3)
    got, reader = run_once(state, [log.path])
    seen += got
    assert "gap" not in [e.kind for e in reader.events]
    assert seen == log.written


def test_two_rotations_between_runs(state: StateDB, log: Log) -> None:
    seen: list[str] = []
    log.write(10)
    seen += run_once(state, [log.path])[0]
    log.write(4)
    rotate_rename(log)
    log.write(6)
    rotate_rename(log)  # first old file now .2.gz, the second .1
    log.write(2)
    seen += run_once(state, [log.path])[0]
    assert seen == log.written


@pytest.mark.parametrize("grow_past_old_offset", [False, True])
def test_copytruncate(state: StateDB, log: Log, grow_past_old_offset: bool) -> None:
    seen: list[str] = []
    log.write(10)
    seen += run_once(state, [log.path])[0]
    log.write(5)
    copytruncate(log)
    log.write(40 if grow_past_old_offset else 4)  # same inode; bigger than before or not
    got, reader = run_once(state, [log.path])
    seen += got
    assert [e.kind for e in reader.events] == ["truncated"]
    assert not any(e.problem for e in reader.events)  # the copy was found: nothing lost
    log.write(3)
    seen += run_once(state, [log.path])[0]
    assert seen == log.written


def test_copytruncate_copy_gzipped_later(state: StateDB, log: Log) -> None:
    seen: list[str] = []
    log.write(10)
    seen += run_once(state, [log.path])[0]
    log.write(5)
    copytruncate(log)
    gzip_in_place(log.path.with_name("access.log.1"))
    log.write(2)
    seen += run_once(state, [log.path])[0]
    assert seen == log.written


def test_truncation_without_a_copy_warns_and_restarts(state: StateDB, log: Log) -> None:
    log.write(10)
    first = run_once(state, [log.path])[0]
    with open(log.path, "r+b") as fh:
        fh.truncate(0)
    log.write(3)
    second, reader = run_once(state, [log.path])
    assert first + second == log.written
    assert [(e.kind, e.problem) for e in reader.events] == [("truncated", True)]


def test_file_disappears_then_comes_back(state: StateDB, log: Log) -> None:
    seen: list[str] = []
    log.write(10)
    seen += run_once(state, [log.path])[0]
    log.write(5)
    log.path.rename(log.path.with_name("access.log.1"))  # rotated, not recreated yet
    got, reader = run_once(state, [log.path])
    seen += got
    assert [e.kind for e in reader.events] == ["missing"]
    got, reader = run_once(state, [log.path])  # still missing: nothing read twice
    assert got == []
    assert [e.kind for e in reader.events] == ["missing"]
    log.path.touch()
    log.write(4)
    seen += run_once(state, [log.path])[0]
    assert seen == log.written


def test_missing_file_without_history_is_reported(state: StateDB, tmp_path: Path) -> None:
    got, reader = run_once(state, [tmp_path / "nope.log"])
    assert got == []
    assert [(e.kind, e.problem) for e in reader.events] == [("missing", True)]


def test_partial_last_line_waits_until_complete(state: StateDB, log: Log) -> None:
    log.write(3)
    with open(log.path, "a") as fh:
        fh.write('203.0.113.9 - - [28/Nov/2026:12:00:00 +0000] "GET /idpartial HTT')
    first = run_once(state, [log.path])[0]
    assert first == log.written
    with open(log.path, "a") as fh:
        fh.write('P/1.1" 200 5 "-" "t"\n')
    second = run_once(state, [log.path])[0]
    assert second == ["idpartial"]


def test_rerun_without_new_lines_reads_no_old_bytes(state: StateDB, log: Log) -> None:
    log.write(20_000)
    size = log.path.stat().st_size
    first, reader = run_once(state, [log.path])
    assert len(first) == 20_000
    assert reader.stats.bytes_read == size
    again, reader = run_once(state, [log.path])
    assert again == []
    assert reader.stats.bytes_read == 0
    assert reader.stats.probe_bytes == 0
    log.write(1)
    one, reader = run_once(state, [log.path])
    assert len(one) == 1
    assert reader.stats.bytes_read == log.path.stat().st_size - size  # only the new line


def test_glob_reads_live_logs_and_skips_rotated_names(state: StateDB, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    a, b = Log(logs / "a.access.log"), Log(logs / "b.access.log")
    a.write(3)
    b.write(4)
    (logs / "a.access.log.1").write_text("old\n")
    paths, unmatched, _refused = expand_paths([str(logs / "*.access.log*"), str(logs / "none-*.log")])
    assert [p.name for p in paths] == ["a.access.log", "b.access.log"]
    assert unmatched == [str(logs / "none-*.log")]
    got = run_once(state, paths)[0]
    assert len(got) == 7


def test_overlong_and_binary_lines(state: StateDB, log: Log) -> None:
    log.write(2)
    with open(log.path, "ab") as fh:
        fh.write(b"x" * (70 * 1024) + b"\n")  # over 64 KiB: skipped and counted
        fh.write(b"\xff\xfe\x00garbage\x80\n")
    log.write(1)
    reader = LogReader([log.path], chunk_bytes=8192)
    lines = [line for chunk in reader.chunks() for line in chunk]
    assert reader.stats.overlong == 1
    assert b"\xff\xfe\x00garbage\x80" in lines
    assert len(lines) == 4


def test_rotated_candidates_order(tmp_path: Path) -> None:
    base = tmp_path / "access.log"
    for name in (
        "access.log.2.gz",
        "access.log.1",
        "access.log.10.gz",
        "access.log-20261127",
        "access.log-20261128.gz",
        "other.log.1",
    ):
        (tmp_path / name).write_text("")
    names = [p.name for p in rotated_candidates(base)]
    assert names[:2] == ["access.log-20261128.gz", "access.log-20261127"]
    assert names[2:] == ["access.log.1", "access.log.2.gz", "access.log.10.gz"]


@pytest.mark.parametrize(
    "newest_first",
    [
        # dateformat -%Y%m%d-%s: several a day, ordered by the epoch too (not by the date only)
        ["access.log-20261201-1796140000", "access.log-20261201-1796136309.gz", "access.log-20261130-1796050000.gz"],
        # dateformat -%Y%m%d%H%M%S: 14 digits are a rotated name
        ["access.log-20261201143005", "access.log-20261201143004.gz", "access.log-20261130235959.gz"],
        ["access.log.2026-12-01", "access.log.2026-11-30.gz"],
    ],
)
def test_dated_names_are_ordered_by_their_whole_stamp(tmp_path: Path, newest_first: list[str]) -> None:
    for name in reversed(newest_first):
        (tmp_path / name).write_text("")
    assert [p.name for p in rotated_candidates(tmp_path / "access.log")] == newest_first
    assert all(is_rotated_name(tmp_path / name) for name in newest_first)
    assert not is_rotated_name(tmp_path / "access.log")


def test_cursor_on_an_empty_log_survives_copytruncate(state: StateDB, log: Log) -> None:
    log.write(4)
    copytruncate(log)
    run_once(state, [log.path])  # the log is empty now: no head to recognise it by
    log.write(5)
    log.path.with_name("access.log.1").rename(log.path.with_name("access.log.2"))
    copytruncate(log)  # access.log.1 now holds the 5 new lines; the log is empty again
    got, reader = run_once(state, [log.path])
    assert got == log.written[4:]
    assert not any(e.problem for e in reader.events)


def test_file_deleted_before_it_was_read_is_reported_once(state: StateDB, log: Log) -> None:
    log.write(5)
    run_once(state, [log.path])
    log.write(3)  # never read: the file is deleted below
    rotate_rename(log)
    log.write(2)
    rotate_rename(log)  # the first file is access.log.2.gz now
    log.path.with_name("access.log.2.gz").unlink()  # rotate 1
    got, reader = run_once(state, [log.path])
    assert got == log.written[8:]
    assert [(e.kind, e.problem) for e in reader.events] == [("gap", True)]
    assert "lines may be missing" in reader.events[0].message
    assert "up to byte" in reader.events[0].message


def test_cursor_saved_before_anchors_reads_on(state: StateDB, log: Log) -> None:
    log.write(3)
    run_once(state, [log.path])
    state.execute("UPDATE log_cursors SET anchor_len=0, anchor_sha256='', anchor_offset=0, rotated_sig=''")
    log.write(2)
    got, _ = run_once(state, [log.path])
    assert got == log.written[3:]
    assert load_cursors(state, node="test")[str(log.path)].rotated_sig != ""  # upgraded on the way


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_names_the_group(state: StateDB, log: Log) -> None:
    log.write(1)
    log.path.chmod(0o000)
    try:
        got, reader = run_once(state, [log.path])
    finally:
        log.path.chmod(0o640)
    assert got == []
    assert reader.events[0].kind == "unreadable"
    assert "group" in reader.events[0].message


def test_log_replaced_by_a_copy_of_itself_reads_on_from_the_offset(state: StateDB, log: Log) -> None:
    log.write(5)
    run_once(state, [log.path])
    log.write(2)
    copy = log.path.with_name("access.log.tmp")
    shutil.copyfile(log.path, copy)
    copy.replace(log.path)  # a new inode with the same lines: recognised by its head, not read twice
    log.write(1)
    got, reader = run_once(state, [log.path])
    assert got == log.written[5:]
    assert not any(e.problem for e in reader.events)


def test_old_cursor_on_an_empty_log_says_a_rotation_may_have_lost_lines(state: StateDB, log: Log) -> None:
    log.path.touch()
    run_once(state, [log.path])  # empty log
    state.execute("UPDATE log_cursors SET rotated_sig=''")  # as saved before rotated files were tracked
    log.write(3)
    rotate_rename(log)
    log.write(1)
    got, reader = run_once(state, [log.path])
    assert got == log.written[3:]  # what an old cursor cannot place is not guessed at…
    assert [(e.kind, e.problem) for e in reader.events] == [("gap", True)]  # …it is said
    assert "may be missing" in reader.events[0].message
