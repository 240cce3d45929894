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
import grp
import multiprocessing
import os
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.pool import Pool
from pathlib import Path

from .logcursors import Cursor
from .logfiles import open_log, rotated_candidates, rotation_signature, sha256_hex, text_length
from .loglines import (
    CHUNK_BYTES,
    MAX_LINE_BYTES,
    LineReader,
    ReadStats,
    S,
    Segment,
    read_part,
    start_pool,
)

HEAD_BYTES = 4096
PARALLEL_BYTES = 32 << 20  # from this many bytes to read in one file, parts are read in parallel
STOP_POLL_SECONDS = 0.2  # while the parts are read, how often `stop()` is asked


@dataclass(frozen=True)
class LogEvent:
    """Something about a file the operator should know: rotation handled, truncation, a gap."""

    path: str
    kind: str  # rotated | truncated | gap | missing | unreadable | overlong
    message: str
    problem: bool  # True when lines may have been lost or a file could not be read


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
    _lines: LineReader = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lines = LineReader(self.max_line, self.chunk_bytes, self.stats)

    def chunks(self) -> Iterator[list[bytes]]:
        """Lists of complete lines (without newlines), file by file, oldest data first."""
        for segment in self._segments():
            with self._guard(segment):
                for lines, _at in self._lines.read(segment):
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
                    if workers > 1 and self._lines.to_read(segment) >= parallel_bytes:
                        pool = pool or start_pool(workers)
                        if not self._read_in_parts(segment, pool, sink, new_sink, stop, on_lines, workers):
                            return False
                    else:
                        for lines, at in self._lines.read(segment):
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
        segment: Segment,
        pool: Pool,
        sink: S,
        new_sink: Callable[[], S],
        stop: Callable[[], bool],
        on_lines: Callable[[int], object],
        workers: int,
    ) -> bool:
        read = functools.partial(read_part, new_sink=new_sink, max_line=self.max_line, chunk_bytes=self.chunk_bytes)
        results = pool.imap(read, self._lines.cut(segment, workers))
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

    def _segments(self) -> Iterator[Segment]:
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
    def _guard(self, segment: Segment) -> Iterator[None]:
        """A file that cannot be read becomes an event; the other logs are still read."""
        try:
            yield
        except PermissionError as exc:
            self.events.append(_unreadable(segment.path, exc))
        except (OSError, EOFError, zlib.error) as exc:
            self.events.append(LogEvent(str(segment.path), "unreadable", f"{segment.path}: {exc}", True))

    def _done(self, segment: Segment) -> None:
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

    def _plan(self, path: Path, cursor: Cursor | None) -> list[Segment]:
        key = str(path)
        rotated = rotated_candidates(path)
        signature = rotation_signature(rotated)
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
            return [Segment(path, 0, False, Cursor(key, st.st_dev, st.st_ino, 0), older, signature)]
        if (
            st is not None
            and (st.st_dev, st.st_ino) == (cursor.dev, cursor.inode)
            and cursor.rotated_sig in ("", signature)  # nothing rotated since (or not known: as before)
        ):
            if st.st_size == cursor.offset:  # logtail2's shortcut: nothing new, nothing read
                self._after[key] = cursor if cursor.rotated_sig else self._anchored(cursor, older, signature)
                return []
            if st.st_size > cursor.offset and self._head_is(path, cursor.head_len, cursor.head_sha256):
                return [Segment(path, cursor.offset, False, cursor, older, signature)]
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
    ) -> tuple[list[Segment], LogEvent | None]:
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
        segments: list[Segment] = []
        for position, file in enumerate(stream):
            if position < index:
                continue
            start = offset if position == index else 0
            if file == live:
                st = os.stat(file)
                base = cursor if position == index else Cursor(key, st.st_dev, st.st_ino, 0)
                segments.append(Segment(file, start, False, base, tuple(stream[:position]), signature))
            elif position > index or start < text_length(file):
                segments.append(Segment(file, start, True))
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
        return file.name.endswith(".gz") or text_length(file) >= cursor.offset

    def _find_head(self, files: Sequence[Path], length: int, sha: str) -> int | None:
        for index in reversed(range(len(files))):
            if self._head_is(files[index], length, sha):
                return index
        return None

    def _head_is(self, path: Path, length: int, sha: str) -> bool:
        if length == 0:
            return True
        try:
            with open_log(path) as fh:
                head = fh.read(length)
        except (OSError, EOFError, zlib.error):
            return False
        self.stats.probe_bytes += len(head)
        return len(head) == length and sha256_hex(head) == sha

    def _anchored(self, cursor: Cursor, older: Sequence[Path], signature: str) -> Cursor:
        """`cursor` with the newest non-empty file of `older` as its anchor, and the signature."""
        for file in reversed(older):
            try:
                with open_log(file) as fh:
                    head = fh.read(HEAD_BYTES)
                length = self._consumed.get(file)
                if head and length is None:
                    length = text_length(file)
            except (OSError, EOFError, zlib.error):
                continue
            self.stats.probe_bytes += len(head)
            if head:
                sha, offset = sha256_hex(head), length or 0
                return replace(
                    cursor, anchor_len=len(head), anchor_sha256=sha, anchor_offset=offset, rotated_sig=signature
                )
        return replace(cursor, anchor_len=0, anchor_sha256="", anchor_offset=0, rotated_sig=signature)

    def _save_cursor(self, segment: Segment, consumed: int) -> None:
        base = segment.cursor_base
        assert base is not None
        head_len, head_sha = base.head_len, base.head_sha256
        if head_len < HEAD_BYTES:
            with open_log(segment.path) as fh:
                head = fh.read(min(HEAD_BYTES, consumed))
            self.stats.probe_bytes += len(head)
            head_len, head_sha = len(head), sha256_hex(head)
        after = replace(base, offset=consumed, head_len=head_len, head_sha256=head_sha)
        if after.rotated_sig != segment.rotated_sig:
            after = self._anchored(after, segment.older, segment.rotated_sig)
        self._after[base.path] = after


def _dev_inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _same_inode(path: Path, cursor: Cursor) -> bool:
    try:
        return _dev_inode(path) == (cursor.dev, cursor.inode)
    except OSError:
        return False


def _names(segments: Sequence[Segment]) -> str:
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
