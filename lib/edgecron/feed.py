"""Feed sources (an HTTP JSON API, a JSONL file, a CSV file) and validation at the boundary.

A source yields `RawRecord`s (a position and whatever the feed held there) or, for a record that
cannot even be parsed, a `Reject`. `Validator.check()` turns a record into a `FeedItem` or a
`Reject` naming the field, what was expected, what was found and where. Nothing past this module
sees unchecked data.

HTTP pages are either an object with an items list and a `next` link (null on the last page), a
list or object paged by an RFC 8288 `Link: <…>; rel="next"` header, or a page-parameter feed
(`?page=N`, read until a page is empty). IMPORT_FORMAT names (or `auto` detects, on the first
page) the other formats read by `edgecron.sources`: WordPress REST, RSS 2.0, Atom, JSON Feed;
their next pages must stay on the source's host. Pages (and `next` links) are
fetched through `edgecron.http` (the URL policy of `urls.py`, IMPORT_TIMEOUT for the whole page,
urllib3 retries) and a 5xx is retried here too;
a `next` link that comes back to a page already read, or a page parameter the server ignores,
is an error instead of an endless loop.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from urllib3.util import parse_url

from .credentials import AuthHeader
from .errors import ConfigError, InputError, UpstreamUnavailable
from .http import WaitBudget, open_checked, read_capped, response_chunks
from .redact import MASK, redact
from .sources import FILE_ONLY, FIXED_FIELDS
from .sources.detect import Choice, choose
from .sources.jsonfeed import JsonFeedReader
from .sources.page import Page, PageItems, media_type
from .sources.wordpress import WordPressReader
from .sources.xmlfeeds import AtomReader, RssReader, refuse_field_map
from .urls import UrlPolicy

FIELDS = ("id", "url", "updated_at", "title", "body", "deleted")
REQUIRED = ("id", "url", "updated_at", "title", "body")
ITEM_LIST_KEYS = ("items", "data", "results")
MAX_KEY_CHARS = 200
MAX_URL_CHARS = 2048
MAX_TITLE_CHARS = 1000
WHITESPACE = re.compile(r"\s")
CSV_SEPARATOR = re.compile(r"[,\r\n]")
EXTRA_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
LINE_DECODER = json.JSONDecoder()
# What LINE_DECODER.raw_decode() calls: (value, end index) of the JSON value starting at an index.
SCAN_VALUE: Callable[[str, int], tuple[Any, int]] = LINE_DECODER.scan_once  # type: ignore[attr-defined]
JSON_SPACE = b" \t\n\r"
NAIVE_EXPECTED = (
    "an ISO 8601 timestamp with a timezone, such as 2026-01-31T12:00:00Z"
    " (or declare the zone of timestamps without one: IMPORT_NAIVE_TIMEZONE=UTC)"
)
DOCUMENT_SUFFIXES = (".json", ".xml", ".rss", ".atom")
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no", ""})


@dataclass(slots=True)  # not frozen: frozen dataclasses are slower to create, and there are many
class Position:
    """Where a record sits in its source: a line/row number, or an item index on an HTTP page.

    A resume needs `index` and `page` alone, and a checkpoint keeps only those and `unit`. A CSV
    record also carries its record number and first line, for people: a quoted field may span
    lines, so the record number and the line differ."""

    index: int
    page: str | None = None
    unit: str = "line"
    record: int | None = field(default=None, compare=False)
    first_line: int | None = field(default=None, compare=False)

    def label(self) -> str:
        if self.page is not None:
            return f"{self.page} item {self.index}"
        if self.record is not None:
            first = self.index if self.first_line is None else self.first_line
            lines = f"line {first}" if first == self.index else f"lines {first}-{self.index}"
            return f"record {self.record} ({lines})"
        return f"{self.unit} {self.index}"


@dataclass(slots=True)
class RawRecord:
    position: Position
    data: Any


@dataclass(frozen=True, slots=True)
class Reject:
    position: Position
    field: str
    expected: str
    got: str
    key: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "position": self.position.label(),
            "key": self.key,
            "field": self.field,
            "expected": self.expected,
            "got": self.got,
        }

    def reason(self) -> str:
        return f"{self.position.label()}: {self.field}: got {self.got}, expected {self.expected}"


class FeedItem:
    """A validated item. Fields the contract does not name are taken from the record and encoded
    only when needed (hash or insert): most items of a rerun are unchanged and never need them."""

    __slots__ = (
        "_extra",
        "_record",
        "_skip",
        "_updated_text",
        "body",
        "deleted",
        "key",
        "position",
        "title",
        "updated_at",
        "url",
    )

    def __init__(
        self,
        key: str,
        url: str,
        updated_at: datetime,
        title: str,
        body: str,
        position: Position,
        *,
        record: Mapping[str, Any] | None = None,
        skip: frozenset[str] = frozenset(),
        deleted: bool = False,
    ) -> None:
        self.key = key
        self.url = url
        self.updated_at = updated_at  # aware, UTC
        self.title = title
        self.body = body
        self.position = position
        self.deleted = deleted
        self._record = record  # the feed's fields; those named in `skip` are ours, the rest extra
        self._skip = skip
        self._extra: str | None = None
        self._updated_text: str | None = None

    @property
    def updated_text(self) -> str:
        if self._updated_text is None:
            self._updated_text = self.updated_at.isoformat()
        return self._updated_text

    @property
    def extra(self) -> str:
        """Fields the item contract does not name, as a JSON object with sorted keys."""
        if self._extra is None:
            skip, record = self._skip, self._record or {}
            fields = {k: v for k, v in record.items() if k not in skip}
            self._extra = EXTRA_ENCODER.encode(fields) if fields else "{}"
        return self._extra

    def content_hash(self) -> str:
        """What we own of the item. `updated_at` is left out: a touched but identical item is
        unchanged, so it causes no write and no purge."""
        text = "\x1f".join((self.url, self.title, self.body, self.extra))
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def parse_field_map(text: str) -> dict[str, str]:
    """`id=guid,updated_at=modified` → {"id": "guid", "updated_at": "modified"}."""
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        ours, sep, theirs = (s.strip() for s in part.partition("="))
        if not sep or ours not in FIELDS or not theirs:
            raise ConfigError(
                "IMPORT_FIELD_MAP is not valid",
                got=part,
                expected=f"field=source_name pairs, field one of {', '.join(FIELDS)}",
            )
        mapping[ours] = theirs
    return mapping


class Validator:
    """Checks one record against the item contract; returns a `FeedItem` or the first `Reject`.

    It runs once per item, so the common case (all fields present and well-formed) takes cheap
    tests first; a record that fails one goes through the exact check that names the problem."""

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str],
        max_body_bytes: int,
        field_map: Mapping[str, str] | None = None,
        naive_timezone: tzinfo | None = None,
    ) -> None:
        self.naive_timezone = naive_timezone  # IMPORT_NAIVE_TIMEZONE: the declared zone of offset-less times
        self.names = {f: (field_map or {}).get(f, f) for f in FIELDS}
        self.own_names = frozenset(self.names.values())
        self.key_name, self.deleted_name = self.names["id"], self.names["deleted"]
        self.text_names = tuple(self.names[f] for f in ("url", "updated_at", "title", "body"))
        hosts = tuple(allowed_hosts)
        self.hosts = frozenset(h.lower() for h in hosts)
        self.policy = UrlPolicy(hosts)
        # Fast path for the common case; anything else goes through the URL policy.
        self.prefixes = tuple(f"{s}://{h}/" for h in self.hosts for s in ("https", "http"))
        self.max_body_bytes = max_body_bytes
        self.url_expected = "an absolute http(s) URL on ALLOWED_HOSTS (" + ", ".join(sorted(self.hosts)) + ")"

    def check(self, record: RawRecord) -> FeedItem | Reject:
        data, pos = record.data, record.position
        if not isinstance(data, dict):
            return Reject(pos, "(item)", "a JSON object", type(data).__name__)
        key = data.get(self.key_name)
        if type(key) is not str:
            if isinstance(key, int) and not isinstance(key, bool):
                key = str(key)
            elif not isinstance(key, str):
                return Reject(pos, self.key_name, "a non-empty string or integer key", _show(key))
        if not key or key.isspace():
            return Reject(pos, self.key_name, "a non-empty string or integer key", _show(key))
        if len(key) > MAX_KEY_CHARS:
            return Reject(pos, self.key_name, f"at most {MAX_KEY_CHARS} characters", f"{len(key)}", key)
        flag = data.get(self.deleted_name)
        if flag is not None and flag is not False:
            deleted = _flag(flag)
            if deleted is None:
                return Reject(pos, self.deleted_name, "true or false", _show(flag), key)
            if deleted:  # a tombstone needs only its key
                return FeedItem(key, "", datetime.min.replace(tzinfo=UTC), "", "", pos, deleted=True)
        url_name, stamp_name, title_name, body_name = self.text_names
        get: Callable[[str], Any] = data.get
        url, stamp, title, body = get(url_name), get(stamp_name), get(title_name), get(body_name)
        if not (type(url) is str and type(stamp) is str and type(title) is str and type(body) is str):
            for name, value in zip(self.text_names, (url, stamp, title, body), strict=True):
                if not isinstance(value, str):
                    what = "missing" if value is None else type(value).__name__
                    return Reject(pos, name, "a string", what, key)
        if pos.page is not None and url.startswith("/") and not url.startswith("//"):
            url = urljoin(pos.page, url)  # an API may give paths relative to its own pages
        # No whitespace is printable but the space, so this is the common case of _url_problem.
        usual_url = len(url) <= MAX_URL_CHARS and url.startswith(self.prefixes) and " " not in url and "\\" not in url
        if not (usual_url and url.isprintable()):
            problem = self._url_problem(url)
            if problem:
                return Reject(pos, url_name, problem, _show(url), key)
        try:
            updated: datetime | None = datetime.fromisoformat(stamp)
        except ValueError:
            updated = None
        if updated is not None and updated.tzinfo is None and self.naive_timezone is not None:
            updated = updated.replace(tzinfo=self.naive_timezone)
        if updated is None or updated.tzinfo is None:
            expected = (
                NAIVE_EXPECTED
                if updated is not None
                else "an ISO 8601 timestamp with a timezone, such as 2026-01-31T12:00:00Z"
            )
            return Reject(pos, stamp_name, expected, _show(stamp), key)
        if not title or len(title) > MAX_TITLE_CHARS or title.isspace():
            return Reject(pos, title_name, f"1 to {MAX_TITLE_CHARS} characters", _show(title), key)
        if len(body) > self.max_body_bytes // 4 and len(body.encode("utf-8")) > self.max_body_bytes:
            size = f"{len(body.encode('utf-8'))} bytes"
            return Reject(pos, body_name, f"at most {self.max_body_bytes} bytes (IMPORT_MAX_BODY_BYTES)", size, key)
        if updated.tzinfo is not UTC and updated.utcoffset():
            updated = updated.astimezone(UTC)
        # Extra fields need no cap of their own: the line, row or page holding them has one.
        return FeedItem(key, url, updated, title, body, pos, record=data, skip=self.own_names)

    def _url_problem(self, url: str) -> str | None:
        expected = self.url_expected
        if len(url) > MAX_URL_CHARS or WHITESPACE.search(url) or not self.policy.allows(url):
            return expected
        return None


def _flag(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    if isinstance(value, int):
        return bool(value) if value in (0, 1) else None
    return None


def _show(value: object) -> str:
    text = "missing" if value is None else repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


# --- sources -----------------------------------------------------------------------------------


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


class OriginHeaderAuth(requests.auth.AuthBase):
    """Adds the feed's credential header to requests for the feed's own origin, and to no other.

    The origin (scheme, host, port) is read with urllib3's parser, the one the connection is made
    with, so a URL two parsers read differently cannot carry the header to another host; a
    redirect or `next` link to another allowed host gets no header either.
    """

    def __init__(self, feed_url: str, header: AuthHeader) -> None:
        self.origin = _origin(feed_url)
        self.header = header

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop(self.header.name, None)
        if request.url and _origin(request.url) == self.origin:
            request.headers[self.header.name] = self.header.value.reveal()
        return request


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = parse_url(url)
    scheme = (parts.scheme or "").lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.host or "").lower().rstrip("."), port


class HttpSource:
    """A paginated HTTP feed: a JSON API (`next` links, `Link` headers, or a counted `page`
    parameter), or one of the formats of `edgecron.sources`, chosen by `format` (IMPORT_FORMAT;
    `auto` decides from the first page and keeps the decision in `format_choice`).

    Its name and the page URLs kept in positions (checkpoints, rejects) are redacted: a key in the
    URL's query never reaches content.db. A resumed page gets its masked values back from the
    configured URL; when it cannot (a per-page signature), or the page is gone (a 400/404: the
    feed shrank), the read starts again from the first page, which is safe because unchanged
    items are skipped by their content hash.
    """

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session,
        allowed_hosts: Iterable[str],
        timeout: float,
        max_page_bytes: int,
        attempts: int = 3,
        backoff: float = 1.0,
        max_pages: int = 100_000,
        sleep: Callable[[float], None] = time.sleep,
        auth: AuthHeader | None = None,
        format: str = "auto",
        field_map: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.name = redact(url)
        if auth is not None:
            session.auth = OriginHeaderAuth(url, auth)
        self.session = session
        self.allowed_hosts = tuple(allowed_hosts)
        self.timeout = timeout
        self.max_page_bytes = max_page_bytes
        self.attempts = attempts
        self.backoff = backoff
        self.max_pages = max_pages
        self.sleep = sleep
        self.pages_read = 0
        self.format = format
        self.field_map = field_map
        self.format_choice: Choice | None = None

    def fingerprint(self) -> str:
        return f"http:{self.name}"  # the same with or without a since parameter

    def with_since(self, param: str, value: str) -> HttpSource:
        """The same source asking the API for items updated since `value` only."""
        clone = HttpSource.__new__(HttpSource)
        clone.__dict__.update(self.__dict__)
        clone.url = _set_query(self.url, param, value)
        return clone

    def records(self, resume: Position | None = None) -> Iterator[RawRecord | Reject]:
        url: str | None = self.url
        if resume is not None and resume.page:
            url = _unmask(resume.page, self.url)
            if url is None:
                url, resume = self.url, None
        seen: set[str] = set()
        previous_digest = None
        reader: PageReader | None = None
        while url is not None:
            if url in seen:
                raise InputError(
                    f"feed next link loops back to {url}, a page already read",
                    got=url,
                    expected="each next link to lead to a new page, and null on the last page",
                )
            if len(seen) >= self.max_pages:
                raise InputError(f"feed has more than {self.max_pages} pages", expected="fewer pages")
            seen.add(url)
            try:
                page = self._fetch(url)
            except InputError as exc:
                if resume is not None and reader is None and exc.got in (400, 404, 410) and url != self.url:
                    url, resume = self.url, None  # the resumed page is gone: read from the start
                    seen.clear()
                    continue
                if isinstance(reader, WordPressReader) and exc.got == 400:
                    if reader.past_end(url):
                        return
                    raise _pages_drifted(url, reader) from None
                raise
            self.pages_read += 1
            if reader is None:
                self.format_choice = choose(self.format, page, source=f"feed page {redact(url)}")
                reader = _reader(self.format_choice.format, self.field_map)
            content = reader.read(page)
            if content.paged:
                digest = hashlib.sha256(page.body).digest()
                if content.items and digest == previous_digest:
                    raise InputError(
                        f"feed page {url} repeats the previous page: the page parameter seems ignored",
                        expected="a different page per page number, and an empty page at the end",
                    )
                previous_digest = digest
            if content.next_url is not None and content.next_via is not None:
                self._check_same_host(content.next_url, page=url, via=content.next_via)
            page_label = redact(url)
            for index, data in enumerate(content.items, 1):
                if resume is not None and page_label == resume.page and index <= resume.index:
                    continue
                yield RawRecord(Position(index, page=page_label), data)
            url = content.next_url

    def _check_same_host(self, next_url: str, *, page: str, via: str) -> None:
        """A next page from a header or a feed document stays on IMPORT_SOURCE's host."""
        host = _origin(self.url)[1]
        if _origin(next_url)[1] != host:
            raise InputError(
                f"feed page {page} has a {via} to another host",
                got=redact(next_url),
                expected=f"next pages on {host}, the host of IMPORT_SOURCE",
            )

    def _fetch(self, url: str) -> Page:
        last: UpstreamUnavailable | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                return self._fetch_once(url)
            except UpstreamUnavailable as exc:
                last = exc
                if attempt < self.attempts:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
            except InputError as exc:
                if "larger than" in exc.what:
                    raise InputError(
                        exc.what, expected=f"at most {self.max_page_bytes} bytes (IMPORT_MAX_PAGE_BYTES)"
                    ) from None
                raise
        assert last is not None
        raise UpstreamUnavailable(
            f"feed page {url} kept failing after {self.attempts} attempts",
            got=last.got,
            expected=last.expected or "HTTP 200",
        )

    def _fetch_once(self, url: str) -> Page:
        """The page and the headers pagination needs, body capped, within IMPORT_TIMEOUT in all."""
        budget = WaitBudget(self.timeout)
        what = "feed page"
        response = open_checked(self.session, url, allowed_hosts=self.allowed_hosts, budget=budget, what=what)
        headers = response.headers
        chunks = response_chunks(response, what=f"{what} {url}", budget=budget)
        body = b"".join(read_capped(chunks, max_bytes=self.max_page_bytes, what=f"{what} {url}"))
        return Page(url, body, media_type(headers.get("Content-Type", "")), headers)


class JsonApiReader:
    """A JSON API page: an object with an items list (and maybe `next`), or a list. Without a
    `next` field, a `Link` header pages it; without either, a `page` parameter is counted up."""

    def read(self, page: Page) -> PageItems:
        url = page.url
        try:
            doc = json.loads(page.body)
        except (ValueError, RecursionError) as exc:  # nested too deep is not JSON we can use either
            raise InputError(
                f"feed page {url} is not valid JSON", got=str(exc), expected="a JSON object with an items list"
            ) from None
        links = page.links
        linked = bool(links.keys() & {"next", "prev", "previous", "first", "last"})
        if isinstance(doc, dict):
            items = next((doc[k] for k in ITEM_LIST_KEYS if isinstance(doc.get(k), list)), None)
            if items is None:
                raise InputError(
                    f"feed page {url} has no items list",
                    got=", ".join(sorted(doc)[:10]) or "an empty object",
                    expected="a key named " + " or ".join(ITEM_LIST_KEYS) + " holding a list",
                )
            if "next" in doc:
                link = doc["next"]
                if link is not None and not isinstance(link, str):
                    raise InputError(
                        f"feed page {url} has a next link that is not a string",
                        got=_show(link),
                        expected="a URL or null",
                    )
                return PageItems(items, urljoin(url, link) if link else None, next_via=None)
        elif isinstance(doc, list):
            items = doc
        else:
            raise InputError(
                f"feed page {url} is not a JSON object or list", got=type(doc).__name__, expected="an object"
            )
        if linked:
            return PageItems(items, links.get("next"))
        return PageItems(items, _next_page(url) if items else None, paged=True)


PageReader = JsonApiReader | WordPressReader | JsonFeedReader | RssReader | AtomReader


def _reader(name: str, field_map: Mapping[str, str] | None) -> PageReader:
    if name == "json":
        return JsonApiReader()
    readers: dict[str, Callable[[Mapping[str, str] | None], PageReader]] = {
        "wordpress": WordPressReader,
        "jsonfeed": JsonFeedReader,
        "rss": RssReader,
        "atom": AtomReader,
    }
    return readers[name](field_map)


def _pages_drifted(url: str, reader: WordPressReader) -> InputError:
    return InputError(
        f"WordPress answered HTTP 400 for {redact(url)}, a page its last answer said exists"
        f" (X-WP-TotalPages {reader.total_pages}): posts were removed or unpublished while reading",
        got=400,
        expected="the page to exist, or X-WP-TotalPages to end before it",
        retry_safe=True,
        hint="Finished batches are kept; rerun: it reads the pages again and skips what is unchanged.",
    )


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
        content = _reader(self.format_choice.format, self.field_map).read(page)
        for index, data in enumerate(content.items, 1):
            if index > skip:
                yield RawRecord(Position(index, unit="item"), data)


def _unmask(page: str, configured: str) -> str | None:
    """`page` with each masked query value taken back from the configured URL, or None if one is unknown."""
    if MASK not in page:
        return page
    known = dict(pair.partition("=")[::2] for pair in urlsplit(configured).query.split("&") if pair)
    head, _, query = page.partition("?")
    query, hash_mark, fragment = query.partition("#")
    pairs = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if value == MASK:
            if name not in known:
                return None
            value = known[name]
        pairs.append(f"{name}{eq}{value}")
    restored = f"{head}?{'&'.join(pairs)}{hash_mark}{fragment}"
    return None if MASK in restored else restored


def _next_page(url: str) -> str:
    query = dict(parse_qsl(urlsplit(url).query))
    current = query.get("page", "1")
    if not current.isdigit():
        raise InputError(f"feed URL {url} has a page parameter that is not a number", got=current, expected="page=1")
    return _set_query(url, "page", str(int(current) + 1))


def _set_query(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


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


def open_source(
    spec: str,
    *,
    session: requests.Session | None,
    allowed_hosts: Iterable[str],
    field_map: Mapping[str, str] | None,
    timeout: float,
    max_page_bytes: int,
    max_body_bytes: int,
    base_dir: Path | None = None,
    auth: AuthHeader | None = None,
    format: str = "auto",
) -> JsonlSource | CsvSource | HttpSource | DocumentFileSource:
    """The source named by IMPORT_SOURCE read as IMPORT_FORMAT: an http(s) URL, or a file
    (.jsonl / .ndjson, .csv, or one document: .json, .xml, .rss, .atom)."""
    spec = spec.strip()
    if format in FIXED_FIELDS:
        refuse_field_map(field_map, "RSS" if format == "rss" else "Atom")
    if spec.startswith(("http://", "https://")):
        if session is None:
            raise ValueError("an HTTP source needs a session")
        if format in FILE_ONLY:
            raise ConfigError(
                f"IMPORT_FORMAT={format} is for files, and IMPORT_SOURCE is a URL",
                got=redact(spec),
                expected="IMPORT_FORMAT auto, json, wordpress, rss, atom or jsonfeed for an http(s) source",
            )
        return HttpSource(
            spec,
            session=session,
            allowed_hosts=allowed_hosts,
            timeout=timeout,
            max_page_bytes=max_page_bytes,
            auth=auth,
            format=format,
            field_map=field_map,
        )
    path = Path(os.path.expanduser(spec))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    suffix = path.suffix.lower()
    if format == "jsonl" or (format == "auto" and suffix in (".jsonl", ".ndjson")):
        # Room for a body at the cap even when every character is JSON-escaped, plus other fields.
        return JsonlSource(path, max_line_bytes=6 * max_body_bytes + 65536)
    if format == "csv" or (format == "auto" and suffix == ".csv"):
        return CsvSource(path, field_map=field_map, max_field=max_body_bytes)
    if format != "auto" or suffix in DOCUMENT_SUFFIXES:
        return DocumentFileSource(path, format=format, max_bytes=max_page_bytes, field_map=field_map)
    raise InputError(
        "IMPORT_SOURCE is not a feed this tool reads",
        got=spec,
        expected="an http(s) URL, or a path ending in .jsonl, .ndjson, .csv, .json, .xml, .rss or .atom"
        " (or set IMPORT_FORMAT)",
    )


def format_choice(source: object, requested: str) -> Choice | None:
    """How the run's source is read: decided by IMPORT_FORMAT, or by auto from what it saw."""
    choice = getattr(source, "format_choice", None)
    if isinstance(choice, Choice):
        return choice
    kind = "jsonl" if isinstance(source, JsonlSource) else "csv" if isinstance(source, CsvSource) else None
    if kind is None:
        return None  # nothing was read yet
    if requested != "auto":
        return Choice(kind, "set by IMPORT_FORMAT (or --format)", auto=False)
    return Choice(kind, f"the file extension {Path(getattr(source, 'path', '')).suffix}", auto=True)
