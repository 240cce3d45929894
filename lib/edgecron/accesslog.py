"""Incremental, rotation-safe reading of access logs, with a cursor per log in `log_cursors`.

A cursor is (device, inode, offset, sha256 of the first bytes). At the start of a run, per log
(logtail2's rules plus a fingerprint, see reference logs-cron §1.3):

- same inode, size == offset: nothing new; nothing is read (not even the head).
- same inode, size > offset, head unchanged: read from the offset.
- same inode but smaller, or head changed (truncation, copytruncate): find the copy among the
  rotated files by its head hash (plain or .gz), finish it from the offset, then read the log
  from 0. No copy found: warn and read from 0.
- inode changed (rename rotation): find the old file by inode (`.1`, delaycompress) or by head
  hash (it was gzipped later), finish it from the offset, read any newer rotated file whole,
  then the new log from 0. Not found: report a possible gap and read the new log from 0.
- the log is gone: finish the old file if it can be found, keep the cursor, report it missing.

Only complete lines are consumed: a last line without its newline stays for the next run. The
caller saves the new cursors (`cursors()`) in the same transaction as the results they produced.

`consume()` reads a big plain file in parallel: it is cut at newlines into parts, a pool of forked
processes feeds each part to its own sink, and the sinks are merged in file order (see there).
"""

from __future__ import annotations

import functools
import glob
import grp
import gzip
import hashlib
import itertools
import multiprocessing
import os
import re
import signal
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing.pool import Pool
from pathlib import Path
from typing import BinaryIO, Protocol, Self, TypeVar

from .state import StateDB, iso

HEAD_BYTES = 4096
CHUNK_BYTES = 2 << 20
MAX_LINE_BYTES = 64 * 1024
PARALLEL_BYTES = 32 << 20  # from this many bytes to read in one file, parts are read in parallel
STOP_POLL_SECONDS = 0.2  # while the parts are read, how often `stop()` is asked
# access.log.1, access.log.2.gz, access.log-20261128[.gz], access.log-20261128-1764300000, .2026-11-28
_ROTATED_SUFFIX = re.compile(r"^(?:\.(\d+)|-(\d{8})(?:-\d+)?|\.(\d{4}-\d{2}-\d{2})|-(\d{10}))(\.gz)?$")


@dataclass(frozen=True)
class Cursor:
    path: str
    dev: int
    inode: int
    offset: int
    head_len: int = 0
    head_sha256: str = ""
    lines: int = 0


@dataclass(frozen=True)
class LogEvent:
    """Something about a file the operator should know: rotation handled, truncation, a gap."""

    path: str
    kind: str  # rotated | truncated | gap | missing | unreadable | overlong
    message: str
    problem: bool  # True when lines may have been lost or a file could not be read


class LineSink(Protocol):
    """What `LogReader.consume()` feeds: lines in, and the sinks of later parts merged in."""

    def feed(self, lines: Sequence[bytes]) -> None: ...

    def merge(self, later: Self) -> None: ...


S = TypeVar("S", bound=LineSink)


@dataclass
class ReadStats:
    bytes_read: int = 0  # log bytes read to find lines (the no-new-lines rerun must keep it 0)
    probe_bytes: int = 0  # bytes read to fingerprint a file (head hashes)
    lines: int = 0
    overlong: int = 0
    files: int = 0


# --- which files ----------------------------------------------------------------------------------


def is_rotated_name(path: Path) -> bool:
    """True for `x.log.1`, `x.log.2.gz`, `x.log-20261128`…: a glob must not pick those as live logs."""
    name = path.name
    if name.endswith(".gz"):
        return True
    return bool(re.search(r"(\.\d+|-\d{8}(-\d+)?|\.\d{4}-\d{2}-\d{2}|-\d{10})$", name))


def expand_paths(patterns: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Live log paths from ACCESS_LOGS (paths and globs); patterns that matched nothing."""
    found: list[Path] = []
    unmatched: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = [Path(p) for p in sorted(glob.glob(expanded)) if not is_rotated_name(Path(p))]
            if not matches:
                unmatched.append(pattern)
        else:
            matches = [Path(expanded)]
        for path in matches:
            absolute = path.absolute()
            if absolute not in found:
                found.append(absolute)
    return found, unmatched


def rotated_candidates(path: Path) -> list[Path]:
    """Rotated siblings of `path`, newest first (`.1` before `.2.gz`; later dates first)."""
    ranked: list[tuple[tuple[int, str], Path]] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(path.name) or entry == path:
            continue
        match = _ROTATED_SUFFIX.match(entry.name[len(path.name) :])
        if not match:
            continue
        number, day, iso_day, epoch = match.group(1), match.group(2), match.group(3), match.group(4)
        if number is not None:
            key = (int(number), "")
        else:
            stamp = day or (iso_day or "").replace("-", "") or epoch or ""
            # later stamps first: invert the digits so that an ascending sort puts them first
            key = (0, "".join(str(9 - int(c)) for c in stamp))
        ranked.append((key, entry))
    ranked.sort(key=lambda item: item[0])
    return [entry for _, entry in ranked]


# --- reading ----------------------------------------------------------------------------------------


def _open(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _head(fh: BinaryIO, length: int) -> bytes:
    fh.seek(0)
    return fh.read(length)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Segment:
    path: Path
    start: int
    final: bool  # a rotated file: nothing more will be appended, so its last partial line counts
    live_cursor: Cursor | None = None  # set for the live file: where its new cursor starts from
    end: int | None = None  # a part of a file: stop here (just after a newline); None: read to EOF
    consumed: int | None = None  # once read: the offset just after the last line handed out


@dataclass
class LogReader:
    """Reads new complete lines of several logs; `cursors()` gives where each log now ends."""

    paths: list[Path]
    cursors_before: dict[str, Cursor] = field(default_factory=dict)
    from_start: bool = False
    max_line: int = MAX_LINE_BYTES
    chunk_bytes: int = CHUNK_BYTES
    stats: ReadStats = field(default_factory=ReadStats)
    events: list[LogEvent] = field(default_factory=list)
    _after: dict[str, Cursor] = field(default_factory=dict)

    def chunks(self) -> Iterator[list[bytes]]:
        """Lists of complete lines (without newlines), file by file, oldest data first."""
        for segment in self._segments():
            with self._guard(segment):
                yield from self._read(segment)
                self._done(segment)

    def consume(
        self,
        sink: S,
        *,
        new_sink: Callable[[], S],
        stop: Callable[[], bool] = lambda: False,
        on_lines: Callable[[int], object] = lambda n: None,
        workers: int | None = None,
        parallel_bytes: int = PARALLEL_BYTES,
    ) -> bool:
        """Feed every new complete line to `sink`; False when `stop()` turned true on the way.

        A plain file with at least `parallel_bytes` to read is cut at newlines into one part per
        worker of a pool of `workers` forked processes (default: one per CPU), each feeding a sink
        of its own (`new_sink()`, which must pickle); those are merged into `sink` in file order,
        so the figures are the ones a sequential read gives. Cursors only move here, in this process.
        """
        workers = workers or os.cpu_count() or 1
        pool = None
        try:
            for segment in self._segments():
                with self._guard(segment):
                    if workers > 1 and self._to_read(segment) >= parallel_bytes:
                        pool = pool or _start_pool(workers)
                        if not self._read_in_parts(segment, pool, sink, new_sink, stop, on_lines, workers):
                            return False
                    else:
                        for lines in self._read(segment):
                            if stop():
                                return False
                            sink.feed(lines)
                            on_lines(len(lines))
                    self._done(segment)
            return True
        finally:
            if pool is not None:
                pool.terminate()  # stopped: the workers die at once (SIGTERM, see _worker_signals)

    def _read_in_parts(
        self,
        segment: _Segment,
        pool: Pool,
        sink: S,
        new_sink: Callable[[], S],
        stop: Callable[[], bool],
        on_lines: Callable[[int], object],
        workers: int,
    ) -> bool:
        read = functools.partial(_read_part, new_sink=new_sink, max_line=self.max_line, chunk_bytes=self.chunk_bytes)
        results = pool.imap(read, self._cut(segment, workers))
        self.stats.files += 1
        while True:
            try:
                part, part_sink, stats = results.next(timeout=STOP_POLL_SECONDS)
            except multiprocessing.TimeoutError:
                if stop():
                    return False
                continue
            except StopIteration:
                return not stop()
            if stop():
                return False
            sink.merge(part_sink)
            self.stats.bytes_read += stats.bytes_read
            self.stats.lines += stats.lines
            self.stats.overlong += stats.overlong
            segment.consumed = part.consumed
            on_lines(stats.lines)

    def _segments(self) -> Iterator[_Segment]:
        """What to read, log by log; once a log's segments are read its cursor counts their lines."""
        for path in self.paths:
            cursor = None if self.from_start else self.cursors_before.get(str(path))
            try:
                segments = self._plan(path, cursor)
            except PermissionError as exc:
                self.events.append(_unreadable(path, exc))
                continue
            before = self.stats.lines
            yield from segments
            after = self._after.get(str(path))
            if after is not None:
                self._after[str(path)] = replace(after, lines=after.lines + self.stats.lines - before)

    @contextmanager
    def _guard(self, segment: _Segment) -> Iterator[None]:
        """A file that cannot be read becomes an event; the other logs are still read."""
        try:
            yield
        except PermissionError as exc:
            self.events.append(_unreadable(segment.path, exc))
        except (OSError, EOFError, zlib.error) as exc:
            self.events.append(LogEvent(str(segment.path), "unreadable", f"{segment.path}: {exc}", True))

    def _done(self, segment: _Segment) -> None:
        if segment.live_cursor is not None and segment.consumed is not None:
            self._save_live(segment, segment.consumed)

    def cursors(self) -> list[Cursor]:
        """The cursors to save once the results of `chunks()` are recorded."""
        return list(self._after.values())

    # -- deciding what to read -------------------------------------------------------------------

    def _plan(self, path: Path, cursor: Cursor | None) -> list[_Segment]:
        key = str(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return self._plan_missing(path, cursor)
        if not stat.S_ISREG(st.st_mode):
            self.events.append(LogEvent(key, "unreadable", f"{path} is not a regular file", True))
            return []
        fresh = Cursor(key, st.st_dev, st.st_ino, 0)
        if cursor is None:
            return [_Segment(path, 0, False, fresh)]
        same_file = (st.st_dev, st.st_ino) == (cursor.dev, cursor.inode)
        if same_file and st.st_size == cursor.offset:
            self._after[key] = cursor  # logtail2's shortcut: nothing new, nothing read
            return []
        if same_file and st.st_size > cursor.offset and self._head_matches(path, cursor):
            return [_Segment(path, cursor.offset, False, cursor)]
        older = self._find_old(path, cursor, exclude_inode=st.st_ino)
        if older is None:
            if same_file:
                self.events.append(
                    LogEvent(
                        key,
                        "truncated",
                        f"{path} is smaller than last time and no rotated "
                        "copy matches it: reading it from the start; lines may be missing",
                        True,
                    )
                )
            else:
                self.events.append(
                    LogEvent(
                        key,
                        "gap",
                        f"{path} was replaced and its old file was not found among "
                        "the rotated files: lines written before the rotation may be missing",
                        True,
                    )
                )
            return [_Segment(path, 0, False, fresh)]
        kind = "truncated" if same_file else "rotated"
        self.events.append(
            LogEvent(
                key,
                kind,
                f"{path} was rotated ({'copytruncate' if same_file else 'rename'}); "
                f"finished {older[0].path.name} from byte {cursor.offset}",
                False,
            )
        )
        return [*older, _Segment(path, 0, False, fresh)]

    def _plan_missing(self, path: Path, cursor: Cursor | None) -> list[_Segment]:
        key = str(path)
        if cursor is not None:
            older = self._find_old(path, cursor, exclude_inode=None)
            if older:
                self.events.append(
                    LogEvent(
                        key,
                        "missing",
                        f"{path} is gone (rotated, not yet recreated); finished "
                        f"{older[0].path.name} from byte {cursor.offset}",
                        True,
                    )
                )
                # Remember the end of the newest rotated file read, so the next run goes on from it.
                newest = older[-1].path
                with _open(newest) as fh:
                    st = os.stat(newest)
                    head = _head(fh, HEAD_BYTES)
                    self.stats.probe_bytes += len(head)
                    end = len(head) + _drain_len(fh) if newest.name.endswith(".gz") else st.st_size
                self._after[key] = Cursor(key, st.st_dev, st.st_ino, end, len(head), _sha(head), cursor.lines)
                return older
            self._after[key] = cursor
        self.events.append(LogEvent(key, "missing", f"{path} does not exist", True))
        return []

    def _head_matches(self, path: Path, cursor: Cursor) -> bool:
        if cursor.head_len == 0:
            return True
        with open(path, "rb") as fh:
            head = fh.read(cursor.head_len)
        self.stats.probe_bytes += len(head)
        return len(head) == cursor.head_len and _sha(head) == cursor.head_sha256

    def _find_old(self, path: Path, cursor: Cursor, *, exclude_inode: int | None) -> list[_Segment] | None:
        """The old file (from the offset) then any newer rotated files (whole), or None."""
        candidates = rotated_candidates(path)
        found = None
        for index, candidate in enumerate(candidates):
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (cursor.dev, cursor.inode) and not candidate.name.endswith(".gz"):
                found = index
                break
        if found is None:
            for index, candidate in enumerate(candidates):
                try:
                    st = os.stat(candidate)
                    if st.st_ino == exclude_inode or cursor.head_len == 0:
                        continue
                    with _open(candidate) as fh:
                        head = fh.read(cursor.head_len)
                except (OSError, EOFError, zlib.error):
                    continue
                self.stats.probe_bytes += len(head)
                if len(head) == cursor.head_len and _sha(head) == cursor.head_sha256:
                    found = index
                    break
        if found is None:
            return None
        old = _Segment(candidates[found], cursor.offset, True)
        newer = [_Segment(c, 0, True) for c in reversed(candidates[:found])]
        return [old, *newer]

    # -- reading lines -----------------------------------------------------------------------------

    def _to_read(self, segment: _Segment) -> int:
        """Bytes after the segment's start in a plain file; 0 for a gzipped one (read in one go)."""
        if segment.path.name.endswith(".gz"):
            return 0
        return os.stat(segment.path).st_size - segment.start

    def _cut(self, segment: _Segment, count: int) -> list[_Segment]:
        """The segment as `count` parts (fewer if lines are long) that each start a line; the last
        reads on to the end of the file, as a sequential read would."""
        size = os.stat(segment.path).st_size
        span = size - segment.start
        starts = [segment.start]
        with open(segment.path, "rb") as fh:
            for k in range(1, count):
                at = segment.start + span * k // count
                if at > starts[-1]:
                    line_start = self._line_start_after(fh, at, size)
                    if line_start is not None and line_start < size:
                        starts.append(line_start)
        parts = [_Segment(segment.path, a, True, end=b) for a, b in itertools.pairwise(starts)]
        return [*parts, _Segment(segment.path, starts[-1], segment.final)]

    def _line_start_after(self, fh: BinaryIO, at: int, size: int) -> int | None:
        """The offset just after the first newline at or after `at` (None: none before `size`)."""
        fh.seek(at)
        while at < size:
            block = fh.read(min(self.chunk_bytes, 1 << 16))
            if not block:
                return None
            self.stats.probe_bytes += len(block)
            newline = block.find(b"\n")
            if newline >= 0:
                return at + newline + 1
            at += len(block)
        return None

    def _read(self, segment: _Segment) -> Iterator[list[bytes]]:
        """Complete lines from `segment.start` to its end (EOF or `segment.end`); sets `consumed`."""
        with _open(segment.path) as fh:
            self.stats.files += 1
            if segment.start:
                fh.seek(segment.start)
            consumed = segment.start  # file offset just after the last newline handed out
            left = -1 if segment.end is None else segment.end - segment.start
            buf = b""  # bytes after `consumed` (a partial line)
            skipping = False  # inside a line longer than max_line: drop bytes until its newline
            skipped = 0
            while left and (data := fh.read(self.chunk_bytes if left < 0 else min(left, self.chunk_bytes))):
                left -= len(data) if left > 0 else 0
                self.stats.bytes_read += len(data)
                if skipping:
                    newline = data.find(b"\n")
                    if newline < 0:
                        skipped += len(data)
                        continue
                    self.stats.overlong += 1
                    consumed += skipped + newline + 1
                    data, skipping, skipped = data[newline + 1 :], False, 0
                if b"\n" not in data:
                    buf += data
                    if len(buf) > self.max_line:
                        skipping, skipped, buf = True, len(buf), b""
                    continue
                lines = data.split(b"\n")  # no copy of the chunk: the partial line is glued on
                if buf:
                    lines[0] = buf + lines[0]
                consumed += len(buf) + len(data) - len(lines[-1])
                buf = lines.pop()
                yield self._keep(lines)
            if segment.final and skipping:  # a rotated file gets no more bytes: count what is left
                self.stats.overlong += 1
                consumed += skipped
            elif segment.final and buf:
                consumed += len(buf)
                yield self._keep([buf])
        segment.consumed = consumed

    def _keep(self, lines: list[bytes]) -> list[bytes]:
        self.stats.lines += len(lines)
        if max(map(len, lines)) > self.max_line:
            kept = [line for line in lines if len(line) <= self.max_line]
            self.stats.overlong += len(lines) - len(kept)
            return kept
        return lines

    def _save_live(self, segment: _Segment, consumed: int) -> None:
        base = segment.live_cursor
        assert base is not None
        head_len, head_sha = base.head_len, base.head_sha256
        if head_len < HEAD_BYTES:
            with open(segment.path, "rb") as fh:
                head = fh.read(min(HEAD_BYTES, consumed))
            self.stats.probe_bytes += len(head)
            head_len, head_sha = len(head), _sha(head)
        self._after[base.path] = replace(base, offset=consumed, head_len=head_len, head_sha256=head_sha)


def _read_part(
    part: _Segment, *, new_sink: Callable[[], S], max_line: int, chunk_bytes: int
) -> tuple[_Segment, S, ReadStats]:
    """In a pool worker: one part of a file fed to a new sink, returned with what was read."""
    reader = LogReader([], max_line=max_line, chunk_bytes=chunk_bytes)
    sink = new_sink()
    for lines in reader._read(part):
        sink.feed(lines)
    return part, sink, reader.stats


_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _start_pool(workers: int) -> Pool:
    """Forked with SIGTERM/SIGINT blocked: a worker must not get one while it still has the
    parent's handlers (which only set a flag), or `terminate()` would wait for it forever."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        return multiprocessing.get_context("fork").Pool(workers, _worker_signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _worker_signals() -> None:
    """Pool workers leave signals to the parent, which polls `stop()` and ends the pool."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def _drain_len(fh: BinaryIO) -> int:
    total = 0
    while chunk := fh.read(CHUNK_BYTES):
        total += len(chunk)
    return total


def _unreadable(path: Path, exc: PermissionError) -> LogEvent:
    try:
        st = os.stat(path)
        group = grp.getgrgid(st.st_gid).gr_name
        mode = stat.filemode(st.st_mode)
        how = (
            f"it is {mode} with group {group!r}: add this user to that group "
            f"(sudo usermod -aG {group} $USER) and start a new login session"
        )
    except (OSError, KeyError):
        how = "check its permissions and those of its directory"
    return LogEvent(str(path), "unreadable", f"cannot read {path} ({exc.strerror}): {how}", True)


# --- cursors in the state database ---------------------------------------------------------------


def load_cursors(state: StateDB) -> dict[str, Cursor]:
    rows = state.execute("SELECT path, dev, inode, offset, head_len, head_sha256, lines FROM log_cursors").fetchall()
    return {row["path"]: Cursor(*tuple(row)) for row in rows}


def save_cursors(conn: object, cursors: Iterable[Cursor], *, now: datetime, run_id: str | None) -> None:
    """Inside the caller's transaction, after the results those lines produced."""
    for c in cursors:
        conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO log_cursors(path, dev, inode, offset, head_len, head_sha256, lines, "
            "updated_at, run_id) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET "
            "dev=excluded.dev, inode=excluded.inode, offset=excluded.offset, "
            "head_len=excluded.head_len, head_sha256=excluded.head_sha256, lines=excluded.lines, "
            "updated_at=excluded.updated_at, run_id=excluded.run_id",
            (c.path, c.dev, c.inode, c.offset, c.head_len, c.head_sha256, c.lines, iso(now), run_id),
        )
