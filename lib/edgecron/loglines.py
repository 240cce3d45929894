"""Complete lines of a stretch of a log file, read in chunks, with where each chunk starts.

Only complete lines are handed out: a last line without its newline stays for the next run,
unless the file is rotated (final). A line longer than `max_line` (LOG_MAX_LINE_BYTES) is not
handed out but its place is (`ChunkAt.overlong`). A big plain file can be cut at newlines into
parts, each read in a pool worker (`read_part`) by a `LineReader` of its own.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import BinaryIO, Protocol, Self, TypeVar

from .logcursors import Cursor
from .logfiles import open_log

CHUNK_BYTES = 2 << 20
MAX_LINE_BYTES = 64 * 1024


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


@dataclass
class Segment:
    path: Path
    start: int
    final: bool  # a rotated file: nothing more will be appended, so its last partial line counts
    cursor_base: Cursor | None = None  # set for the file the new cursor will be on (the live log)
    older: tuple[Path, ...] = ()  # with cursor_base: the files before it, oldest first (the anchor)
    rotated_sig: str = ""  # with cursor_base: the rotated files' signature seen when planning
    end: int | None = None  # a part of a file: stop here (just after a newline); None: read to EOF
    consumed: int | None = None  # once read: the offset just after the last line handed out


@dataclass
class LineReader:
    """Reads the complete lines of segments of files, counting what it read in `stats`."""

    max_line: int = MAX_LINE_BYTES
    chunk_bytes: int = CHUNK_BYTES
    stats: ReadStats = field(default_factory=ReadStats)

    def to_read(self, segment: Segment) -> int:
        """Bytes after the segment's start in a plain file; 0 for a gzipped one (read in one go)."""
        if segment.path.name.endswith(".gz"):
            return 0
        return os.stat(segment.path).st_size - segment.start

    def cut(self, segment: Segment, count: int) -> list[Segment]:
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
        parts = [Segment(segment.path, a, True, end=b) for a, b in itertools.pairwise(starts)]
        return [*parts, Segment(segment.path, starts[-1], segment.final)]

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

    def read(self, segment: Segment) -> Iterator[tuple[list[bytes], ChunkAt]]:
        """Complete lines from `segment.start` to its end (EOF or `segment.end`), each list with
        where it starts; sets `consumed`. Lines over `max_line` are places, not lines."""
        path = str(segment.path)
        with open_log(segment.path) as fh:
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


def read_part(
    part: Segment, *, new_sink: Callable[[], S], max_line: int, chunk_bytes: int
) -> tuple[Segment, S, ReadStats]:
    """In a pool worker: one part of a file fed to a new sink, returned with what was read."""
    reader = LineReader(max_line=max_line, chunk_bytes=chunk_bytes)
    sink = new_sink()
    for lines, at in reader.read(part):
        sink.feed(lines, at)
    return part, sink, reader.stats


_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def start_pool(workers: int) -> Pool:
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


def line_numbers(places: Sequence[tuple[str, int]], *, block: int = 1 << 20) -> list[int | None]:
    """(file, byte offset of a line) → that line's number in the file (1-based), None when the
    file cannot be read any more. Newlines are counted only up to the last offset asked, once."""
    wanted: dict[str, list[int]] = {}
    for path, offset in places:
        wanted.setdefault(path, []).append(offset)
    found: dict[tuple[str, int], int] = {}
    for path, offsets in wanted.items():
        try:
            with open_log(Path(path)) as fh:
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
