"""The feed IMPORT_SOURCE names, read as IMPORT_FORMAT says: which source class opens it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import requests

from .credentials import AuthHeader
from .errors import ConfigError, InputError
from .feedfiles import CsvSource, DocumentFileSource, JsonlSource
from .feedhttp import HttpSource
from .redact import redact
from .sources import FILE_ONLY, FIXED_FIELDS
from .sources.detect import Choice
from .sources.xmlfeeds import refuse_field_map

DOCUMENT_SUFFIXES = (".json", ".xml", ".rss", ".atom")


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
