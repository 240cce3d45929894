"""The log reader under the REAL Debian `logrotate`, with a writer that behaves like nginx.

The writer keeps the log open with O_APPEND and reopens the path only when told (SIGUSR1 from the
config's postrotate, like nginx's `kill -USR1`), so lines written between the rename and the
reopen land in the rotated file. `logrotate -f -s STATE CONF` rotates; the checker is the library
reader against a real state.db, with the script's save order (results, then cursors). Every line
carries a unique id: after every check the ids counted so far must be exactly the ids written,
each once, except lines whose file logrotate deleted before they were read; for those ONE
problem event must say that lines may be missing.

`python tests/test_logrotate_real.py` prints the matrix as a table (config × sequence → written /
counted) for change notes.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from edgecron.accesslog import LogEvent, LogReader
from edgecron.logcursors import load_cursors, save_cursors
from edgecron.state import open_state

LOGROTATE = shutil.which("logrotate", path="/usr/sbin:/usr/bin:/sbin:/bin")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STAMP = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")  # recent: the script's checks look at recent traffic

pytestmark = [
    pytest.mark.skipif(
        LOGROTATE is None, reason="the logrotate binary is not installed (Debian: apt-get install -y logrotate)"
    ),
    pytest.mark.slow,  # the real logrotate binary, many times over
]

# Reads "ID ID …" lines on stdin, appends one log line per id with one write() each, answers "ok".
# SIGUSR1 stays blocked and pending until the next command, so a reopen asked for by logrotate's
# postrotate always happens before the next write, as nginx's would (nginx reopens on its own
# schedule; the tests need it to be deterministic).
WRITER = r"""
import os, signal, sys
path = sys.argv[1]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
def open_log():
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
fd = open_log()
for command in sys.stdin:
    if signal.SIGUSR1 in signal.sigpending():
        signal.sigwait({signal.SIGUSR1})
        os.close(fd)
        fd = open_log()
    for ident in command.split():
        os.write(fd, f'203.0.113.9 - - [01/Dec/2026:12:00:00 +0000] "GET /{ident} HTTP/1.1" 200 5 "-" "t"\n'.encode())
    sys.stdout.write(f"ok {os.fstat(fd).st_ino}\n")
    sys.stdout.flush()
"""


@dataclass(frozen=True)
class Config:
    name: str
    options: str
    rename: bool = True  # create mode (rename + new file) rather than copytruncate
    dateext: str = ""  # a dateformat, when the rotated names carry a date
    plain_renamed: bool = False  # the renamed log stays plain until the next rotation (no compress, or delaycompress)


CONFIGS = [
    Config("create", "create\nrotate 5", plain_renamed=True),
    Config("create+compress", "create\ncompress\nrotate 5"),
    Config("create+delaycompress+compress", "create\ncompress\ndelaycompress\nrotate 5", plain_renamed=True),
    Config(
        "debian-nginx (notifempty)",
        "daily\nrotate 14\ncompress\ndelaycompress\nnotifempty\ncreate 0640",
        plain_renamed=True,
    ),
    Config("copytruncate", "copytruncate\nrotate 5", rename=False),
    Config("copytruncate+compress", "copytruncate\ncompress\nrotate 5", rename=False),
    Config("copytruncate+compress+delaycompress", "copytruncate\ncompress\ndelaycompress\nrotate 5", rename=False),
    Config(
        "dateext -%Y%m%d (default)",
        "create\ncompress\ndelaycompress\ndateext\nrotate 8",
        dateext="-%Y%m%d",
        plain_renamed=True,
    ),
    Config("dateext -%Y%m%d-%s", "create\ncompress\ndateext\ndateformat -%Y%m%d-%s\nrotate 8", dateext="-%Y%m%d-%s"),
    Config(
        "dateext -%Y%m%d%H%M%S",
        "create\ncompress\ndelaycompress\ndateext\ndateformat -%Y%m%d%H%M%S\nrotate 8",
        dateext="-%Y%m%d%H%M%S",
        plain_renamed=True,
    ),
    Config("rotate 2 + maxage 1", "create\ncompress\ndelaycompress\nrotate 2\nmaxage 1", plain_renamed=True),
]

# Steps: wN write N lines · r rotate · c check · age make the rotated files 3 days old (maxage) ·
# hold rotate without the reopen (the writer goes on writing to the renamed file) · reopen ·
# reuse the new log has the inode of an earlier log file that logrotate deleted or gzipped.
SEQUENCES = {
    "basic": "w5 c w3 r w4 c r c w2 c",
    "check on empty log, then rotation": "c w4 r c w5 r w3 c w2 c",
    "check on empty log, two rotations": "c w3 r c w4 r r c w1 c",
    "two rotations between checks": "w5 c w3 r w4 r w2 c",
    "three rotations between checks": "w5 c w3 r w4 r w2 r w1 c",
    "growth past the old offset": "w3 c w2 r w40 c w1 r w60 c",
    "inode reuse after an empty check": "c w3 r c w4 r reuse c w30 c w2 r reuse w50 c",
    "late writes before the reopen": "w3 c w2 hold w3 reopen w4 c hold w2 c w3 reopen w1 c",
    "deleted before read (rotate 2)": "w5 c w3 r w2 r w2 r w2 r c w1 c",
    "aged out before read (maxage 1)": "w5 c w3 r w2 r age r c w1 c",
}


def applicable(config: Config, sequence: str) -> bool:
    steps = SEQUENCES[sequence].split()
    if ("reuse" in steps or "hold" in steps) and not config.plain_renamed:
        # copytruncate never renames; compress without delaycompress gzips the renamed file at
        # once (nginx's late lines are lost by logrotate itself, and its inode is gone)
        return False
    return sequence.startswith(("deleted", "aged")) == config.name.startswith("rotate 2")


@dataclass
class Row:
    config: str
    sequence: str
    written: int = 0
    counted: int = 0
    lost: int = 0  # lines whose file logrotate deleted before a check could read them
    reported: list[str] = field(default_factory=list)  # problem events, one line each
    lost_ids: set[str] = field(default_factory=set)


class Bench:
    """One log directory, one nginx-like writer, one logrotate config and state, one state.db."""

    def __init__(self, root: Path, config: Config) -> None:
        self.root, self.config = root, config
        self.logs = root / "logs"
        self.logs.mkdir(mode=0o700)
        self.log = self.logs / "access.log"
        self.hold_file = root / "hold-reopen"
        self.writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(self.log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.conf = root / "logrotate.conf"
        self.conf.write_text(
            f"{self.log} {{\n{config.options}\n"
            + ("ifempty\n" if "notifempty" not in config.options else "")
            + "missingok\n"
            + (
                f"postrotate\n  [ -e {self.hold_file} ] || kill -USR1 {self.writer.pid}\nendscript\n"
                if config.rename
                else ""
            )
            + "}\n"
        )
        self.conf.chmod(0o600)
        self.state = open_state(root / "state" / "state.db")
        self.next_id = 0
        self.written: list[str] = []
        self.counted: list[str] = []
        self.problems: list[LogEvent] = []
        self.last_rotation = 0.0
        self.write(0)  # the writer has created the log

    def close(self) -> None:
        self.writer.stdin.close()  # type: ignore[union-attr]
        self.writer.wait(timeout=10)
        self.state.close()

    def write(self, count: int) -> None:
        ids = [f"id{self.next_id + k:06d}" for k in range(count)]
        self.next_id += count
        self.written += ids
        self.writer.stdin.write(" ".join(ids) + "\n")  # type: ignore[union-attr]
        self.writer.stdin.flush()  # type: ignore[union-attr]
        assert self.writer.stdout.readline().startswith("ok")  # type: ignore[union-attr]

    def rotate(self) -> None:
        if self.config.dateext == "-%Y%m%d":
            self._shift_dates_back()
        elif self.config.dateext:
            # The name carries the second: two rotations within one second would get the same name
            # (and logrotate's clock, time(2), may lag a few ms behind ours at a second's turn).
            while time.time() < int(self.last_rotation) + 1.02:
                time.sleep(0.02)
        done = subprocess.run([LOGROTATE, "-f", "-s", str(self.root / "logrotate.state"), str(self.conf)],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        self.last_rotation = time.time()

    def _shift_dates_back(self) -> None:
        """The default name has one rotation per day: the files of earlier rotations are renamed one
        day back (oldest first), as if a day had passed since each."""
        dated = sorted(p for p in self.logs.iterdir() if re.match(r"access\.log-\d{8}", p.name))
        for path in dated:
            day = datetime.strptime(path.name[11:19], "%Y%m%d") - timedelta(days=1)
            path.rename(path.with_name(f"access.log-{day:%Y%m%d}{path.name[19:]}"))

    def hold(self) -> None:
        """Rotate while nginx has not reopened yet: its lines go on into the renamed file."""
        self.hold_file.touch()
        self.rotate()
        self.hold_file.unlink()

    def reopen(self) -> None:
        os.kill(self.writer.pid, signal.SIGUSR1)

    def age(self) -> None:
        old = time.time() - 3 * 86400
        for path in self.logs.iterdir():
            if path != self.log:
                os.utime(path, (old, old))

    def reuse(self) -> None:
        """Give the new log the inode of the file the cursor is on, as ext4 does when it hands out
        the inode of a file just deleted or gzipped (it often does, not always: so it is forced).
        That file was renamed by the last rotation; its lines move to a new inode under the same
        name (as gzip would move them), and its emptied inode replaces the log logrotate created."""
        cursor = load_cursors(self.state, node="test")[str(self.log)]
        (old,) = [p for p in self.logs.iterdir() if p.stat().st_ino == cursor.inode and p != self.log]
        copy = old.with_name(".copy")
        shutil.copy2(old, copy)
        os.truncate(old, 0)
        os.replace(old, self.log)
        os.replace(copy, old)
        os.kill(self.writer.pid, signal.SIGUSR1)

    def check(self) -> tuple[list[str], list[LogEvent]]:
        reader = LogReader([self.log], cursors_before=load_cursors(self.state, node="test"))
        seen: list[str] = []
        for lines in reader.chunks():
            seen += [line.split(b"GET /")[1].split(b" ")[0].decode() for line in lines]
        with self.state.transaction() as conn:
            save_cursors(conn, reader.cursors(), node="test", now=NOW, run_id="check")
        self.counted += seen
        return seen, reader.events

    def on_disk(self) -> set[str]:
        """Every id still in some file of the log directory (gzip or not)."""
        ids: set[str] = set()
        for path in self.logs.iterdir():
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rb") as fh:
                ids |= set(re.findall(rb"GET /(id\d+)", fh.read()))  # type: ignore[arg-type]
        return {i.decode() for i in ids}


def run_sequence(root: Path, config: Config, sequence: str) -> Row:
    bench = Bench(root, config)
    row = Row(config.name, sequence)
    gone: set[str] = set()  # written, not counted, and in no file any more
    try:
        for step in SEQUENCES[sequence].split():
            if step == "c":
                gone |= set(bench.written) - set(bench.counted) - bench.on_disk()
                _, events = bench.check()
                problems = [e for e in events if e.problem]
                counts = Counter(bench.counted)
                assert [i for i, n in counts.items() if n > 1] == [], f"counted twice after {step!r}"
                missed = set(bench.written) - set(counts) - gone
                assert missed == set(), f"{len(missed)} lines not counted: {sorted(missed)[:5]}…"
                lost_now = gone - row.lost_ids
                if lost_now:
                    assert len(problems) == 1, [e.message for e in events]
                    assert "may be missing" in problems[0].message
                    row.reported.append(problems[0].message)
                else:
                    assert problems == [], [e.message for e in problems]
                row.lost_ids |= gone
            elif step.startswith("w"):
                bench.write(int(step[1:]))
            elif step == "r":
                bench.rotate()
            elif step == "hold":
                bench.hold()
            elif step == "reopen":
                bench.reopen()
            elif step == "age":
                bench.age()
            elif step == "reuse":
                bench.reuse()
        row.written, row.counted, row.lost = len(bench.written), len(bench.counted), len(gone)
        return row
    finally:
        bench.close()


MATRIX = [(c, s) for c in CONFIGS for s in SEQUENCES if applicable(c, s)]
SLOW = {"dateext -%Y%m%d-%s", "dateext -%Y%m%d%H%M%S"}  # one rotation per wall-clock second


@pytest.mark.parametrize(
    ("config", "sequence"),
    [pytest.param(c, s, id=f"{c.name}|{s}", marks=[pytest.mark.slow] if c.name in SLOW else []) for c, s in MATRIX],
)
def test_totals_equal_lines_written(tmp_path: Path, config: Config, sequence: str) -> None:
    row = run_sequence(tmp_path, config, sequence)
    assert row.counted == row.written - row.lost
    if sequence.startswith(("deleted", "aged")):
        assert row.lost > 0 and len(row.reported) == 1  # the sequence really lost lines, and said so once


@pytest.mark.slow
def test_check_logs_script_reads_after_an_empty_check_and_reports_a_deleted_file_in_one_line(
    run_script, workdir: Path, env_file: Path
) -> None:  # type: ignore[no-untyped-def]
    """scripts/check_logs.py as cron runs it, between real logrotate runs (copytruncate, rotate 1)."""
    logs = workdir / "logs"
    logs.mkdir(mode=0o700)
    log = logs / "access.log"
    log.touch()
    conf = workdir / "logrotate.conf"
    conf.write_text(f"{log} {{\ncopytruncate\ncompress\nrotate 1\nifempty\n}}\n")
    conf.chmod(0o600)
    with env_file.open("a") as fh:
        fh.write(f"ACCESS_LOGS={log}\nLOG_FORMAT=combined\n")

    def write(count: int) -> None:
        with log.open("a") as fh:
            fh.writelines(f'203.0.113.9 - - [{STAMP}] "GET /p{k} HTTP/1.1" 200 5 "-" "t"\n' for k in range(count))

    def rotate() -> None:
        done = subprocess.run([LOGROTATE, "-f", "-s", str(workdir / "lr.state"), str(conf)], capture_output=True)
        assert done.returncode == 0, done.stderr

    def lines_counted() -> int:
        done = run_script("check_logs.py", "--json")
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout)["summary"]["lines"])

    assert lines_counted() == 0  # the log is empty: its cursor has no head yet
    write(6)
    rotate()  # the 6 lines are in access.log.1.gz, the log is empty again
    assert lines_counted() == 6
    write(3)
    rotate()
    write(2)
    rotate()  # rotate 1: the copy holding the 3 lines was deleted unread
    write(1)
    done = run_script("check_logs.py")
    assert done.returncode == 1
    said = [line for line in done.stderr.splitlines() if "may be missing" in line]
    assert len(said) == 1 and "access.log" in said[0], done.stderr


def main() -> None:
    import tempfile

    print("| config | sequence | written | counted | lost (deleted unread) | reported |")
    print("|---|---|---|---|---|---|")
    for config, sequence in MATRIX:
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o700)
            row = run_sequence(Path(tmp), config, sequence)
        note = "; ".join(row.reported) or "-"
        print(f"| {row.config} | {sequence} | {row.written} | {row.counted} | {row.lost} | {note} |")


if __name__ == "__main__":
    main()
