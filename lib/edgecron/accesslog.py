"""Incremental, rotation-safe reading of access logs, with a cursor per log in `log_cursors`.

A cursor is the file being read (device, inode, sha256 of its first bytes), the offset reached,
an anchor (the newest non-empty file before it, by head and length) and the rotated files as
stat saw them. At the start of a run, per log (logtail2's rules, see reference logs-cron §1.3,
plus fingerprints, because inodes are reused and gzip makes new ones):

- same inode, no rotated file changed, size == offset: nothing new; nothing is read.
- same inode, no rotated file changed, size > offset, head unchanged: read from the offset.
- otherwise something was rotated (or the file changed under us): the stream is the rotated
  files oldest first, then the log. The cursor's file is found by (dev, inode) and head, else
  by head alone (its .gz, or copytruncate's copy): it is finished from the offset, every newer
  file is read whole, the log from 0. A file that was still empty has no head and is never
  trusted by its inode: what came after its anchor is new (the anchor is finished from its
  length first: nginx appends to a renamed log until it reopens).
- the cursor's file (or, for an empty one, its anchor) is not there any more: rotate/maxage
  deleted it before it was read to the end. What is left is read, and ONE problem event says
  that lines may be missing and from which file; a log truncated in place without a copy says
  the same.
- the log is gone: the rotated files are read the same way and the newest holds the cursor.

Only complete lines are consumed: a last line without its newline stays for the next run. A line
longer than `max_line` (LOG_MAX_LINE_BYTES) is not handed out but its place is (`ChunkAt.overlong`),
so it is counted as a malformed line. The caller saves the new cursors (`cursors()`) in the same
transaction as the results they produced.

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
from dataclasses import astuple, dataclass, field, replace
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
# logrotate's names: access.log.1, access.log.2.gz (numbered); with dateext, a date or epoch of
# 8+ digits, maybe with more digit groups: -20261128, -20261128-1764300000, -20261128143000,
# .2026-11-28, -1764300000 (each optionally .gz)
_NUMBERED = re.compile(r"\.(\d{1,7})")
_DATED = re.compile(r"[-.]\d{4}[-.]?\d{2}[-.]?\d{2}(?:[-_.]?\d+)*")


@dataclass(frozen=True)
class Cursor:
    """Where a log was read to, and what is needed to find that place again after rotations.

    (dev, inode, head) name the file being read and `offset` the end of its last complete line.
    The anchor is the newest non-empty file older than it (by head, read or there before us, up to
    `anchor_offset`): when the file was still empty there is no head to find it by, and what came
    after the anchor is what is new. `rotated_sig` is the rotated files as stat saw them: while it
    is unchanged nothing was rotated, and the (dev, inode) shortcut is safe.
    """

    path: str
    dev: int
    inode: int
    offset: int
    head_len: int = 0
    head_sha256: str = ""
    lines: int = 0
    anchor_len: int = 0
    anchor_sha256: str = ""
    anchor_offset: int = 0
    rotated_sig: str = ""  # "" for a cursor saved before these were kept: nothing is known


@dataclass(frozen=True)
class LogEvent:
    """Something about a file the operator should know: rotation handled, truncation, a gap."""

    path: str
    kind: str  # rotated | truncated | gap | missing | unreadable | overlong
    message: str
    problem: bool  # True when lines may have been lost or a file could not be read


@dataclass(frozen=True)
class ChunkAt:
    """Where a chunk of lines starts (its file and byte offset there; its lines are contiguous from
    there), and the offsets of the lines over the cap that follow them (not among its lines)."""

    path: str
    offset: int
    overlong: tuple[int, ...] = ()


class LineSink(Protocol):
    """What `LogReader.consume()` feeds: lines in, and the sinks of later parts merged in."""

    def feed(self, lines: Sequence[bytes], at: ChunkAt) -> None: ...

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


def _rotation_key(suffix: str) -> tuple[int, ...] | None:
    """Sort key of a rotated file's suffix (after the log's name), older files sorting higher:
    numbered ones by their number, dated ones newest first by all their digits (the epoch or time
    after the date counts: several rotations a day); None when it is no rotated name."""
    stamp = suffix.removesuffix(".gz")
    if numbered := _NUMBERED.fullmatch(stamp):
        return (1, int(numbered.group(1)))
    if _DATED.fullmatch(stamp):
        return (0, *(-int(digits) for digits in re.findall(r"\d+", stamp)))
    return None


def is_rotated_name(path: Path) -> bool:
    """True for `x.log.1`, `x.log.2.gz`, `x.log-20261128`…: a glob must not pick those as live logs."""
    name = path.name
    if name.endswith(".gz"):
        return True
    return any(_rotation_key(name[cut:]) is not None for cut in range(1, len(name)) if name[cut] in ".-")


def expand_paths(patterns: Iterable[str]) -> tuple[list[Path], list[str], list[str]]:
    """Live log paths from ACCESS_LOGS (paths and globs); patterns that matched nothing; links refused.

    A glob match that is a symlink leading out of its directory is refused: whoever can write the
    log directory could otherwise make us read `.env` and quote it as "malformed lines".
    """
    found: list[Path] = []
    unmatched: list[str] = []
    refused: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = [Path(p) for p in sorted(glob.glob(expanded)) if not is_rotated_name(Path(p))]
            if not matches:
                unmatched.append(pattern)
            refused += [str(p) for p in matches if _leaves_its_directory(p)]
            matches = [p for p in matches if not _leaves_its_directory(p)]
        else:
            matches = [Path(expanded)]
        for path in matches:
            absolute = path.absolute()
            if absolute not in found:
                found.append(absolute)
    return found, unmatched, refused


def _leaves_its_directory(path: Path) -> bool:
    if not path.is_symlink():
        return False
    return path.resolve().parent != path.parent.resolve()


def rotated_candidates(path: Path) -> list[Path]:
    """Rotated siblings of `path`, newest first (`.1` before `.2.gz`; later stamps first)."""
    ranked: list[tuple[tuple[int, ...], Path]] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(path.name) or entry == path:
            continue
        key = _rotation_key(entry.name[len(path.name) :])
        if key is not None:
            ranked.append((key, entry))
    ranked.sort(key=lambda item: (item[0], item[1].name))
    return [entry for _, entry in ranked]


def _signature(rotated: Sequence[Path]) -> str:
    """The rotated files as stat sees them (names, inodes, sizes, times): any rotation changes it."""
    parts = []
    for path in rotated:
        try:
            st = os.stat(path)
        except OSError:
            continue
        parts.append(f"{path.name}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}")
    return _sha("\n".join(parts).encode())[:32]


# --- reading ----------------------------------------------------------------------------------------


def _open(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Segment:
    path: Path
    start: int
    final: bool  # a rotated file: nothing more will be appended, so its last partial line counts
    cursor_base: Cursor | None = None  # set for the file the new cursor will be on (the live log)
    older: tuple[Path, ...] = ()  # with cursor_base: the files before it, oldest first (the anchor)
    rotated_sig: str = ""  # with cursor_base: the rotated files' signature seen when planning
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
    _consumed: dict[Path, int] = field(default_factory=dict)  # rotated files read in this run: to where

    def chunks(self) -> Iterator[list[bytes]]:
        """Lists of complete lines (without newlines), file by file, oldest data first."""
        for segment in self._segments():
            with self._guard(segment):
                for lines, _at in self._read(segment):
                    yield lines
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
                        for lines, at in self._read(segment):
                            if stop():
                                return False
                            sink.feed(lines, at)
                            on_lines(len(lines) + len(at.overlong))
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
            except (OSError, EOFError, zlib.error) as exc:  # e.g. logrotate at work: its cursor stays as it was
                message = f"{path}: its rotated files could not be looked at ({exc}); the next run tries again"
                self.events.append(LogEvent(str(path), "unreadable", message, True))
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
        if segment.consumed is None:
            return
        if segment.cursor_base is not None:
            self._save_cursor(segment, segment.consumed)
        else:
            self._consumed[segment.path] = segment.consumed

    def cursors(self) -> list[Cursor]:
        """The cursors to save once the results of `chunks()` are recorded."""
        return list(self._after.values())

    # -- deciding what to read -------------------------------------------------------------------

    def _plan(self, path: Path, cursor: Cursor | None) -> list[_Segment]:
        key = str(path)
        rotated = rotated_candidates(path)
        signature = _signature(rotated)
        older = tuple(reversed(rotated))  # oldest first
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            self.events.append(LogEvent(key, "unreadable", f"{path} is not a regular file", True))
            return []
        if cursor is None:
            if st is None:
                self.events.append(LogEvent(key, "missing", f"{path} does not exist", True))
                return []
            return [_Segment(path, 0, False, Cursor(key, st.st_dev, st.st_ino, 0), older, signature)]
        if (
            st is not None
            and (st.st_dev, st.st_ino) == (cursor.dev, cursor.inode)
            and cursor.rotated_sig in ("", signature)  # nothing rotated since (or not known: as before)
        ):
            if st.st_size == cursor.offset:  # logtail2's shortcut: nothing new, nothing read
                self._after[key] = cursor if cursor.rotated_sig else self._anchored(cursor, older, signature)
                return []
            if st.st_size > cursor.offset and self._head_is(path, cursor.head_len, cursor.head_sha256):
                return [_Segment(path, cursor.offset, False, cursor, older, signature)]
        stream = [*older, path] if st is not None else list(older)
        segments, event = self._after_rotation(path, cursor, stream, signature)
        if st is not None:
            self.events += [event] if event is not None else []
            return segments
        if event is not None and event.problem:
            self.events.append(event)
        if not segments:  # nothing new in the rotated files either
            self._after[key] = cursor
            self.events.append(LogEvent(key, "missing", f"{path} does not exist", True))
            return []
        # The newest rotated file holds the cursor until the log is back; nginx may still be
        # writing to it (no reopen yet), so its last partial line waits.
        *rest, newest = segments
        base = Cursor(key, *_dev_inode(newest.path), newest.start)
        newest = replace(newest, final=False, cursor_base=base, older=older[:-1], rotated_sig=signature)
        message = f"{path} is gone (rotated, not yet recreated); read {_names(segments)}"
        self.events.append(LogEvent(key, "missing", message, True))
        return [*rest, newest]

    def _after_rotation(
        self, path: Path, cursor: Cursor, stream: list[Path], signature: str
    ) -> tuple[list[_Segment], LogEvent | None]:
        """What to read when something was rotated (or the file changed under the cursor): the
        file the cursor is on from its offset, or, when it cannot be found, what came after the
        anchor; then every newer file whole; the live log becomes the new cursor's file."""
        key = str(path)
        live = stream[-1] if stream and stream[-1] == path else None
        found = self._locate(stream, cursor)
        event = None
        if found is not None:
            index, offset = found, cursor.offset
            if stream[index] != live:
                how = "copytruncate" if live is not None and _same_inode(live, cursor) else "rename"
                kind = "truncated" if how == "copytruncate" else "rotated"
                event = LogEvent(
                    key, kind, f"{path} was rotated ({how}); finished {stream[index].name} from byte {offset}", False
                )
        else:
            index, offset, event = self._after_anchor(path, cursor, stream, live, signature)
        segments: list[_Segment] = []
        for position, file in enumerate(stream):
            if position < index:
                continue
            start = offset if position == index else 0
            if file == live:
                st = os.stat(file)
                base = cursor if position == index else Cursor(key, st.st_dev, st.st_ino, 0)
                segments.append(_Segment(file, start, False, base, tuple(stream[:position]), signature))
            elif position > index or start < _length(file):
                segments.append(_Segment(file, start, True))
        rotated = [segment for segment in segments if segment.path != live]
        if event is None and rotated:  # the log was empty last time: what came after it is read
            event = LogEvent(key, "rotated", f"{path} was rotated; read {_names(rotated)}", False)
        elif event is not None and event.kind == "rotated" and len(segments) > 2:
            event = replace(event, message=f"{event.message}; read {_names(segments[1:-1])} whole")
        return segments, event

    def _after_anchor(
        self, path: Path, cursor: Cursor, stream: list[Path], live: Path | None, signature: str
    ) -> tuple[int, int, LogEvent | None]:
        """Where to start when the cursor's file cannot be found: (index, offset, event)."""
        key = str(path)
        rotated = stream[:-1] if live is not None else stream
        if not cursor.rotated_sig:  # saved before anchors were kept: what is new cannot be told
            index, offset = len(stream) - 1 if live is not None else len(stream), 0
            if cursor.head_len == 0:
                what = (
                    "it was empty at the last check (a cursor saved before rotated files were tracked) and was rotated"
                )
                return index, offset, _gap(key, what, stream[index:])
        elif cursor.anchor_len == 0:  # no non-empty rotated file back then: all of them are new
            index, offset = 0, 0
        else:
            at = self._find_head(rotated, cursor.anchor_len, cursor.anchor_sha256)
            index, offset = (at, cursor.anchor_offset) if at is not None else (0, 0)
            if at is None and cursor.head_len == 0:
                what = (
                    "the newest rotated file it had read is gone as well (rotate/maxage), "
                    "so files rotated after it may have been deleted unread"
                )
                return index, offset, _gap(key, what, stream)
        if cursor.head_len == 0:
            return index, offset, None  # the file was empty: nothing of it can be missing
        if live is not None and _same_inode(live, cursor) and cursor.rotated_sig in ("", signature):
            return (
                index,
                offset,
                LogEvent(
                    key,
                    "truncated",
                    f"{path} is smaller than last time and no rotated copy matches it: reading it "
                    "from the start; lines may be missing",
                    True,
                ),
            )
        what = (
            f"the file it was read from (inode {cursor.inode}, up to byte {cursor.offset}) is not among its rotated "
            "files any more: deleted by rotate/maxage before the rest of it was read"
        )
        return index, offset, _gap(key, what, stream[index:])

    def _locate(self, stream: list[Path], cursor: Cursor) -> int | None:
        """Index of the cursor's file in `stream`, newest first: same (dev, inode) and head, else the
        head alone (gzipped, or copytruncate's copy). An empty file has no head: it is never
        trusted by its inode alone (the filesystem reuses inodes)."""
        if cursor.head_len == 0:
            return None
        by_head = None
        for index in reversed(range(len(stream))):
            file = stream[index]
            if self._long_enough(file, cursor) and self._head_is(file, cursor.head_len, cursor.head_sha256):
                if not file.name.endswith(".gz") and _same_inode(file, cursor):
                    return index
                by_head = index if by_head is None else by_head
        return by_head

    def _long_enough(self, file: Path, cursor: Cursor) -> bool:
        return file.name.endswith(".gz") or _length(file) >= cursor.offset

    def _find_head(self, files: Sequence[Path], length: int, sha: str) -> int | None:
        for index in reversed(range(len(files))):
            if self._head_is(files[index], length, sha):
                return index
        return None

    def _head_is(self, path: Path, length: int, sha: str) -> bool:
        if length == 0:
            return True
        try:
            with _open(path) as fh:
                head = fh.read(length)
        except (OSError, EOFError, zlib.error):
            return False
        self.stats.probe_bytes += len(head)
        return len(head) == length and _sha(head) == sha

    def _anchored(self, cursor: Cursor, older: Sequence[Path], signature: str) -> Cursor:
        """`cursor` with the newest non-empty file of `older` as its anchor, and the signature."""
        for file in reversed(older):
            try:
                with _open(file) as fh:
                    head = fh.read(HEAD_BYTES)
                length = self._consumed.get(file)
                if head and length is None:
                    length = _length(file)
            except (OSError, EOFError, zlib.error):
                continue
            self.stats.probe_bytes += len(head)
            if head:
                sha, offset = _sha(head), length or 0
                return replace(
                    cursor, anchor_len=len(head), anchor_sha256=sha, anchor_offset=offset, rotated_sig=signature
                )
        return replace(cursor, anchor_len=0, anchor_sha256="", anchor_offset=0, rotated_sig=signature)

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

    def _read(self, segment: _Segment) -> Iterator[tuple[list[bytes], ChunkAt]]:
        """Complete lines from `segment.start` to its end (EOF or `segment.end`), each list with
        where it starts; sets `consumed`. Lines over `max_line` are places, not lines."""
        path = str(segment.path)
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
                    yield [], self._overlong(path, consumed)
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
                start = consumed
                consumed += len(buf) + len(data) - len(lines[-1])
                buf = lines.pop()
                yield from self._keep(lines, ChunkAt(path, start))
            if segment.final and skipping:  # a rotated file gets no more bytes: count what is left
                yield [], self._overlong(path, consumed)
                consumed += skipped
            elif segment.final and buf:
                start = consumed
                consumed += len(buf)
                yield from self._keep([buf], ChunkAt(path, start))
        segment.consumed = consumed

    def _overlong(self, path: str, offset: int) -> ChunkAt:
        self.stats.lines += 1
        self.stats.overlong += 1
        return ChunkAt(path, offset, (offset,))

    def _keep(self, lines: list[bytes], at: ChunkAt) -> Iterator[tuple[list[bytes], ChunkAt]]:
        """The lines as they are, or (some over the cap) the runs of lines between those, each
        with its own start, and each long line as a place."""
        self.stats.lines += len(lines)
        if max(map(len, lines)) <= self.max_line:
            yield lines, at
            return
        run: list[bytes] = []
        offset = run_start = at.offset
        for line in lines:
            if len(line) > self.max_line:
                self.stats.overlong += 1
                yield run, ChunkAt(at.path, run_start, (offset,))  # the run first: file order
                run, run_start = [], offset + len(line) + 1
            else:
                run.append(line)
            offset += len(line) + 1
        if run:
            yield run, ChunkAt(at.path, run_start)

    def _save_cursor(self, segment: _Segment, consumed: int) -> None:
        base = segment.cursor_base
        assert base is not None
        head_len, head_sha = base.head_len, base.head_sha256
        if head_len < HEAD_BYTES:
            with _open(segment.path) as fh:
                head = fh.read(min(HEAD_BYTES, consumed))
            self.stats.probe_bytes += len(head)
            head_len, head_sha = len(head), _sha(head)
        after = replace(base, offset=consumed, head_len=head_len, head_sha256=head_sha)
        if after.rotated_sig != segment.rotated_sig:
            after = self._anchored(after, segment.older, segment.rotated_sig)
        self._after[base.path] = after


def _read_part(
    part: _Segment, *, new_sink: Callable[[], S], max_line: int, chunk_bytes: int
) -> tuple[_Segment, S, ReadStats]:
    """In a pool worker: one part of a file fed to a new sink, returned with what was read."""
    reader = LogReader([], max_line=max_line, chunk_bytes=chunk_bytes)
    sink = new_sink()
    for lines, at in reader._read(part):
        sink.feed(lines, at)
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


def _dev_inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _same_inode(path: Path, cursor: Cursor) -> bool:
    try:
        return _dev_inode(path) == (cursor.dev, cursor.inode)
    except OSError:
        return False


def _length(path: Path) -> int:
    """Bytes of text in a file: its size, or for gzip the size stored in its trailer (modulo 4 GiB,
    which is enough to tell whether a file that was read plain got more lines before its gzip)."""
    if not path.name.endswith(".gz"):
        return os.stat(path).st_size
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def _names(segments: Sequence[_Segment]) -> str:
    return ", ".join(segment.path.name for segment in segments)


def _gap(key: str, what: str, rest: Sequence[Path]) -> LogEvent:
    then = f"; read {', '.join(p.name for p in rest)} whole" if rest else ""
    return LogEvent(key, "gap", f"lines may be missing from {key}: {what}{then}", True)


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


_CURSOR_COLUMNS = (
    "path, dev, inode, offset, head_len, head_sha256, lines, anchor_len, anchor_sha256, anchor_offset, rotated_sig"
)


def load_cursors(state: StateDB) -> dict[str, Cursor]:
    rows = state.execute(f"SELECT {_CURSOR_COLUMNS} FROM log_cursors").fetchall()
    return {row["path"]: Cursor(*tuple(row)) for row in rows}


def save_cursors(conn: object, cursors: Iterable[Cursor], *, now: datetime, run_id: str | None) -> None:
    """Inside the caller's transaction, after the results those lines produced."""
    columns = _CURSOR_COLUMNS.split(", ")
    updates = ", ".join(f"{name}=excluded.{name}" for name in [*columns[1:], "updated_at", "run_id"])
    marks = ", ".join("?" * (len(columns) + 2))
    sql = (
        f"INSERT INTO log_cursors({_CURSOR_COLUMNS}, updated_at, run_id) VALUES ({marks}) "
        f"ON CONFLICT(path) DO UPDATE SET {updates}"
    )
    for c in cursors:
        conn.execute(sql, (*astuple(c), iso(now), run_id))  # type: ignore[attr-defined]


# --- line numbers ---------------------------------------------------------------------------------


def line_numbers(places: Sequence[tuple[str, int]], *, block: int = 1 << 20) -> list[int | None]:
    """(file, byte offset of a line) → that line's number in the file (1-based), None when the
    file cannot be read any more. Newlines are counted only up to the last offset asked, once."""
    wanted: dict[str, list[int]] = {}
    for path, offset in places:
        wanted.setdefault(path, []).append(offset)
    found: dict[tuple[str, int], int] = {}
    for path, offsets in wanted.items():
        try:
            with _open(Path(path)) as fh:
                position, newlines = 0, 0
                for offset in sorted(set(offsets)):
                    while position < offset:
                        data = fh.read(min(block, offset - position))
                        if not data:
                            break
                        newlines += data.count(b"\n")
                        position += len(data)
                    if position == offset:
                        found[(path, offset)] = newlines + 1
        except (OSError, EOFError, zlib.error):
            continue
    return [found.get(place) for place in places]
