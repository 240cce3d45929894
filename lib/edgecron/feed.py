"""What a feed record is, and its validation at the boundary.

A source (`feedfiles.py`, `feedhttp.py`; `feedsource.py` picks one) yields `RawRecord`s (a position
and whatever the feed held there) or, for a record that cannot even be parsed, a `Reject`.
`Validator.check()` turns a record into a `FeedItem` or a `Reject` naming the field, what was
expected, what was found and where. Nothing past this module sees unchecked data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urljoin

from .errors import ConfigError
from .urls import UrlPolicy

FIELDS = ("id", "url", "updated_at", "title", "body", "deleted")
REQUIRED = ("id", "url", "updated_at", "title", "body")
MAX_KEY_CHARS = 200
MAX_URL_CHARS = 2048
MAX_TITLE_CHARS = 1000
WHITESPACE = re.compile(r"\s")
EXTRA_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
NAIVE_EXPECTED = (
    "an ISO 8601 timestamp with a timezone, such as 2026-01-31T12:00:00Z"
    " (or declare the zone of timestamps without one: IMPORT_NAIVE_TIMEZONE=UTC)"
)
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
                return Reject(pos, self.key_name, "a non-empty string or integer key", brief_repr(key))
        if not key or key.isspace():
            return Reject(pos, self.key_name, "a non-empty string or integer key", brief_repr(key))
        if len(key) > MAX_KEY_CHARS:
            return Reject(pos, self.key_name, f"at most {MAX_KEY_CHARS} characters", f"{len(key)}", key)
        flag = data.get(self.deleted_name)
        if flag is not None and flag is not False:
            deleted = _flag(flag)
            if deleted is None:
                return Reject(pos, self.deleted_name, "true or false", brief_repr(flag), key)
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
                return Reject(pos, url_name, problem, brief_repr(url), key)
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
            return Reject(pos, stamp_name, expected, brief_repr(stamp), key)
        if not title or len(title) > MAX_TITLE_CHARS or title.isspace():
            return Reject(pos, title_name, f"1 to {MAX_TITLE_CHARS} characters", brief_repr(title), key)
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


def brief_repr(value: object) -> str:
    text = "missing" if value is None else repr(value)
    return text if len(text) <= 80 else text[:80] + "…"
