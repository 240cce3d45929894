"""Feed files: JSONL (a JSON object per line), CSV with a header row, or one saved feed document.

Positions are line, row or item numbers, so a checkpoint resumes a file where the last run
committed. A file that cannot be read is an `InputError`; a line or row that cannot be parsed is
a `Reject` at its own position, and reading goes on.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from .errors import InputError
from .feed import REQUIRED, Position, RawRecord, Reject
from .sources.detect import Choice, choose
from .sources.page import Page
from .sources.readers import reader_for

CSV_SEPARATOR = re.compile(r"[,\r\n]")
LINE_DECODER = json.JSONDecoder()
# What LINE_DECODER.raw_decode() calls: (value, end index) of the JSON value starting at an index.
SCAN_VALUE: Callable[[str, int], tuple[Any, int]] = LINE_DECODER.scan_once  # type: ignore[attr-defined]
JSON_SPACE = b" \t\n\r"


class JsonlSource:
    """One JSON object per line; a line that is not JSON or not an object is a reject."""

    def __init__(self, path: Path, *, max_line_bytes: int = 8 << 20) -> None:
        self.path = path
        self.name = str(path)
        self.max_line_bytes = max_line_bytes

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def records(self, resume: Position | None = None) -> Iterator[RawRecord | Reject]:
        skip = resume.index if resume is not None else 0
        with _open_file(self.path, "rb") as fh:
            for lineno, line in enumerate(islice(fh, skip, None), skip + 1):
                if len(line) > self.max_line_bytes:
                    if line.strip():
                        what = f"at most {self.max_line_bytes} bytes per line"
                        yield Reject(Position(lineno), "(line)", what, f"{len(line)} bytes")
                    continue
                try:
                    data = _parse_line(line)
                except (ValueError, RecursionError) as exc:  # UnicodeDecodeError included; nested too deep
                    if line.strip():  # a blank line is no record
                        what = f"{type(exc).__name__}: {exc}"
                        yield Reject(Position(lineno), "(line)", "one JSON object per line", what)
                    continue
                yield RawRecord(Position(lineno), data)


def _parse_line(line: bytes) -> Any:
    """`json.loads` of one line. The common case is one call of the C scanner; anything else
    (blank, not JSON, trailing data) is decoded again the standard way, for the standard error."""
    try:
        text = line.strip(JSON_SPACE).decode("utf-8")
        value, end = SCAN_VALUE(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    return LINE_DECODER.decode(line.decode("utf-8"))


class CsvSource:
    """A CSV file with a header row; the mapped required columns must all be present.

    Records are numbered after the header, blank lines not counted; positions name the record and
    its physical lines, and a resume skips the records ending on or before the checkpoint's line.
    A field longer than csv's field limit is a reject of that field at its own record: csv gives
    up mid-record, so `_RecordScan` follows the record to its real end (a quoted field may hold
    newlines, commas, even whole CSV lines) and reading resumes with the next record.
    """

    def __init__(self, path: Path, *, field_map: Mapping[str, str] | None = None, max_field: int) -> None:
        self.path = path
        self.name = str(path)
        names = field_map or {}
        self.required = [names.get(f, f) for f in REQUIRED]
        self.key_column, self.body_column = names.get("id", "id"), names.get("body", "body")
        self.max_field = max_field
        # Room for a body at the byte cap (never more characters than bytes); csv's default otherwise.
        self.field_limit = max(max_field + 1, CSV_FIELD_LIMIT)

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def records(self, resume: Position | None = None) -> Iterator[RawRecord | Reject]:
        skip = resume.index if resume is not None else 0
        csv.field_size_limit(self.field_limit)
        with _open_file(self.path, "r", newline="", encoding="utf-8-sig") as fh:
            lines = _CsvLines(fh)
            reader = csv.reader(lines)
            header = self._header(reader)
            width, record = len(header), 0
            while True:
                lines.start_record()
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    record += 1
                    reject = self._unreadable(
                        lines, header=header, error=exc, record=record
                    )  # reads to the record's end
                    if lines.count > skip:
                        yield reject
                    continue
                except UnicodeDecodeError as exc:
                    raise self._not_utf8(exc) from None
                if not row:
                    continue  # a blank line is no record
                record += 1
                if lines.count <= skip:
                    continue
                pos = _csv_position(record, first=lines.first, last=lines.count)
                if len(row) > width:
                    yield Reject(pos, "(row)", f"{width} columns", f"{len(row)}")
                    continue
                yield RawRecord(pos, dict(zip(header, row, strict=False)))

    def _header(self, reader: Iterator[list[str]]) -> list[str]:
        try:
            header = next(reader, [])
        except UnicodeDecodeError as exc:
            raise self._not_utf8(exc) from None
        except csv.Error as exc:
            raise InputError(f"CSV file {self.path} has no readable header row", got=str(exc)) from None
        missing = [c for c in self.required if c not in header]
        if missing:
            raise InputError(
                f"CSV file {self.path} lacks column(s) {', '.join(missing)}",
                got=",".join(header) or "no header row",
                expected="a header row with " + ",".join(self.required) + " (map names with IMPORT_FIELD_MAP)",
            )
        return header

    def _unreadable(self, lines: _CsvLines, *, header: list[str], error: csv.Error, record: int) -> Reject:
        """The reject for a record csv gave up on, after reading the rest of it (not through csv)."""
        first = lines.first
        scan = _RecordScan(self.field_limit)
        ended = False
        for line in lines.kept:
            ended = scan.feed(line)
        try:
            while not ended and (rest := lines.next_unkept()) is not None:
                ended = scan.feed(rest)
        except UnicodeDecodeError as exc:
            raise self._not_utf8(exc) from None
        scan.close()
        position = _csv_position(record, first=first, last=lines.count)
        if scan.over is None:  # not the field limit: another csv error
            return Reject(position, "(row)", "a valid CSV row", str(error))
        column = header[scan.over] if scan.over < len(header) else f"(column {scan.over + 1})"
        key = self._key_before(header, before="".join(lines.kept)[: scan.over_start], column=scan.over)
        if column == self.body_column:
            expected = f"at most {self.max_field} bytes (IMPORT_MAX_BODY_BYTES)"
            return Reject(position, column, expected, f"{scan.over_bytes} bytes", key)
        expected = f"at most {self.field_limit} characters (the CSV field limit)"
        return Reject(position, column, expected, f"{scan.over_chars} characters", key)

    def _not_utf8(self, exc: UnicodeDecodeError) -> InputError:
        return InputError(f"CSV file {self.path} is not UTF-8", got=str(exc), expected="UTF-8 text")

    def _key_before(self, header: list[str], *, before: str, column: int) -> str | None:
        """The record's key when its column comes before the field over the limit."""
        if self.key_column not in header or header.index(self.key_column) >= column:
            return None
        try:
            cells = next(csv.reader(io.StringIO(before)), [])
        except csv.Error:
            return None
        index = header.index(self.key_column)
        return cells[index] if index < len(cells) and cells[index] else None


CSV_FIELD_LIMIT = 131072  # csv's default field_size_limit, in characters


def _csv_position(record: int, *, first: int, last: int) -> Position:
    return Position(last, unit="row ending on line", record=record, first_line=first)


class _CsvLines:
    """The lines csv reads, counted; those of the record being read are kept until it ends.

    csv's own `line_num` is of no help when a record fails (DictReader's does not even move), and
    the kept lines are what `_RecordScan` needs to find where such a record really ends. They are
    no more than csv itself holds for the record: it gives up at the first field over its limit."""

    __slots__ = ("_fh", "count", "first", "iterator", "kept")

    def __init__(self, fh: Iterable[str]) -> None:
        self._fh = iter(fh)
        self.count = 0  # physical lines read so far
        self.first = 1  # the line the current record starts on
        self.kept: list[str] = []
        self.iterator = self._lines()

    def __iter__(self) -> Iterator[str]:
        return self.iterator

    def _lines(self) -> Iterator[str]:
        kept = self.kept
        for line in self._fh:
            self.count += 1
            kept.append(line)
            yield line

    def start_record(self) -> None:
        self.kept.clear()
        self.first = self.count + 1

    def next_unkept(self) -> str | None:
        """The next line, bypassing csv and not kept (the tail of a record csv gave up on)."""
        line = next(self._fh, None)
        if line is not None:
            self.count += 1
        return line


class _RecordScan:
    """Follows one CSV record as csv's reader does (excel dialect, not strict) without keeping it:
    where the record ends, and the first field longer than `limit` characters (its index, its
    size, and its offset in the text fed). Only an unreadable record is scanned, line by line."""

    FIELD_START, UNQUOTED, QUOTED, AFTER_QUOTE = range(4)

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.state = self.FIELD_START
        self.field = 0  # index of the current field
        self.start = 0  # offset of the current field in the text fed
        self.offset = 0  # characters fed before the current line
        self.chars = self.size = 0  # characters and UTF-8 bytes of the current field
        self.over: int | None = None
        self.over_start = self.over_chars = self.over_bytes = 0

    def feed(self, line: str) -> bool:
        """Scan one physical line; True when the record ends with it."""
        i, n = 0, len(line)
        while i < n:
            state = self.state
            if state == self.QUOTED:
                j = line.find('"', i)
                if j < 0:
                    self._add(line[i:])  # newlines inside quotes are field content
                    break
                self._add(line[i:j])
                i, self.state = j + 1, self.AFTER_QUOTE
            elif state == self.UNQUOTED:
                match = CSV_SEPARATOR.search(line, i)
                j = n if match is None else match.start()
                self._add(line[i:j])
                if j == n or line[j] != ",":
                    break  # end of line: the record ends
                i = self._next_field(j + 1)
            else:
                c = line[i]
                if c == '"':
                    if state == self.AFTER_QUOTE:
                        self._add('"')  # a doubled quote
                    i, self.state = i + 1, self.QUOTED
                elif c == ",":
                    i = self._next_field(i + 1)
                elif c in "\r\n":
                    break
                else:  # not strict: text after a closing quote joins the field, as with csv
                    self.state = self.UNQUOTED
        self.offset += n
        return self.state != self.QUOTED

    def close(self) -> None:
        self._end_field()

    def _add(self, text: str) -> None:
        self.chars += len(text)
        self.size += len(text.encode("utf-8", "surrogatepass"))

    def _next_field(self, i: int) -> int:
        self._end_field()
        self.field += 1
        self.start = self.offset + i
        self.chars = self.size = 0
        self.state = self.FIELD_START
        return i

    def _end_field(self) -> None:
        if self.over is None and self.chars > self.limit:
            self.over, self.over_start = self.field, self.start
            self.over_chars, self.over_bytes = self.chars, self.size


class DocumentFileSource:
    """A feed document saved to a file: a JSON API page, a WordPress REST page, RSS, Atom or a
    JSON Feed, capped at IMPORT_MAX_PAGE_BYTES. A file has no next page."""

    def __init__(self, path: Path, *, format: str, max_bytes: int, field_map: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.name = str(path)
        self.format = format
        self.max_bytes = max_bytes
        self.field_map = field_map
        self.format_choice: Choice | None = None

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def records(self, resume: Position | None = None) -> Iterator[RawRecord | Reject]:
        skip = resume.index if resume is not None else 0
        with _open_file(self.path, "rb") as fh:
            body = fh.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            raise InputError(
                f"feed file {self.path} is larger than {self.max_bytes} bytes",
                expected=f"at most {self.max_bytes} bytes (IMPORT_MAX_PAGE_BYTES)",
            )
        page = Page(self.path.resolve().as_uri(), body)
        self.format_choice = choose(self.format, page, source=f"feed file {self.path}", suffix=self.path.suffix)
        content = reader_for(self.format_choice.format, self.field_map).read(page)
        for index, data in enumerate(content.items, 1):
            if index > skip:
                yield RawRecord(Position(index, unit="item"), data)


def _file_fingerprint(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"feed file {path} cannot be read", got=exc.strerror, expected="a readable file") from None
    return f"file:{path.resolve()}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _open_file(path: Path, mode: str, **kwargs: Any) -> Any:
    try:
        return open(path, mode, **kwargs)
    except OSError as exc:
        raise InputError(f"feed file {path} cannot be read", got=exc.strerror, expected="a readable file") from None
