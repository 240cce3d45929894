"""Which format a feed document is, from its Content-Type, headers and first bytes — and why.

`detect()` names the format (or None) and describes what the document looks like, in words an
operator can check against the source: IMPORT_FORMAT=auto uses the name and reports the reason;
an explicit IMPORT_FORMAT that does not match gets `wrong_format()`, an error naming both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .page import Page

JSON_FEED_VERSION = "https://jsonfeed.org/version/"
ATOM_NS = "http://www.w3.org/2005/Atom"
TYPE_FORMATS = {
    "application/rss+xml": "rss",
    "application/atom+xml": "atom",
    "application/feed+json": "jsonfeed",
}
# Before the root element: an XML declaration, processing instructions, comments, a DOCTYPE.
# A DOCTYPE is skipped here only to name the root: the parser refuses it (and its entities) after.
PROLOG = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>|\s)*", re.S | re.I)
ROOT_TAG = re.compile(rb"<([A-Za-z_][\w.:-]*)([^>]*)>?")
HEAD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Detected:
    format: str | None  # one of sources.FORMATS (never "auto"), or None when no format fits
    looks_like: str  # what the document is, e.g. "an RSS 2.0 document (<rss> root)"
    reason: str  # what decided it: the Content-Type, a header, the first bytes


def detect(page: Page, *, suffix: str = "") -> Detected:
    """The format of `page`; `suffix` is a file's extension (files have no Content-Type)."""
    declared = TYPE_FORMATS.get(page.content_type)
    where = f"Content-Type {page.content_type}" if page.content_type else (f"a {suffix} file" if suffix else "")
    head = page.body[:HEAD_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return _detect_json(page, declared=declared, where=where)
    if head[:1] == b"<":
        return _detect_xml(head, declared=declared, where=where)
    if not head:
        return Detected(None, "an empty document", where or "its length")
    shown = head[:40].decode("utf-8", "replace")
    return Detected(None, f"neither JSON nor XML (it starts {shown!r})", where or "its first bytes")


def _detect_json(page: Page, *, declared: str | None, where: str) -> Detected:
    try:
        doc: Any = json.loads(page.body)
    except (ValueError, RecursionError) as exc:
        return Detected(None, f"not valid JSON ({exc})", where or "its first bytes")
    by = ", ".join(filter(None, (where, "its JSON")))
    if isinstance(doc, dict) and str(doc.get("version", "")).startswith(JSON_FEED_VERSION):
        return Detected("jsonfeed", f"a JSON Feed ({doc['version']})", by)
    if isinstance(doc, list):
        wp_headers = [h for h in ("X-WP-Total", "X-WP-TotalPages") if h in page.headers]
        if wp_headers:
            return Detected("wordpress", "a WordPress REST API page", f"{by} and its {wp_headers[0]} header")
        if doc and _looks_like_wp_post(doc[0]):
            return Detected(
                "wordpress", "a WordPress REST API page", f"{by}: posts with modified_gmt and title.rendered"
            )
        return Detected("json", "a JSON list", by)
    if isinstance(doc, dict):
        if declared == "jsonfeed":
            return Detected(None, "a JSON object that is not a JSON Feed (no version https://jsonfeed.org/…)", by)
        keys = ", ".join(sorted(doc)[:6]) or "no keys"
        return Detected("json", f"a JSON object (keys {keys})", by)
    return Detected(None, f"a JSON {type(doc).__name__}, not an object or list", by)


def _looks_like_wp_post(item: object) -> bool:
    return isinstance(item, dict) and "modified_gmt" in item and isinstance(item.get("title"), dict)


def _detect_xml(head: bytes, *, declared: str | None, where: str) -> Detected:
    prolog = PROLOG.match(head)
    match = ROOT_TAG.match(head, prolog.end() if prolog else 0)
    by = ", ".join(filter(None, (where, "its root element")))
    if match is None:
        return Detected(None, "XML without a root element in its first 4 KiB", by)
    tag, attrs = match.group(1).decode("ascii", "replace"), match.group(2)
    local = tag.rpartition(":")[2].lower()
    if local == "rss":
        version = re.search(rb"""version\s*=\s*["']([^"']*)""", attrs)
        shown = version.group(1).decode("ascii", "replace") if version else "no version"
        if version is None or shown.startswith("2"):
            return Detected("rss", "an RSS 2.0 document (<rss> root)", by)
        return Detected(None, f"an RSS {shown} document (only RSS 2.0 is read)", by)
    if local == "feed":
        if ATOM_NS.encode() in attrs:
            return Detected("atom", "an Atom feed (<feed> root)", by)
        return Detected(None, f"a <{tag}> document outside the Atom namespace", by)
    if local == "rdf":
        return Detected(None, "an RSS 1.0 (RDF) document (only RSS 2.0 and Atom are read)", by)
    if local == "html":
        return Detected(None, "an HTML page", by)
    if declared is not None:
        return Detected(None, f"XML with root <{tag}>, although served as {declared}", by)
    return Detected(None, f"XML with root <{tag}>", by)


def wrong_format(requested: str, detected: Detected, *, source: str, setting: str) -> InputError:
    """The error for an explicit format the document does not match."""
    guess = f"; it looks like {detected.format} (IMPORT_FORMAT={detected.format} or auto)" if detected.format else ""
    return InputError(
        f"{source} is not {NAMES[requested]} as {setting}={requested} says: it is {detected.looks_like}",
        got=f"{detected.looks_like} ({detected.reason})",
        expected=f"{NAMES[requested]}{guess}",
        retry_safe=True,
        hint="Nothing was changed; fix IMPORT_FORMAT (or --format) or IMPORT_SOURCE and rerun.",
    )


NAMES = {
    "json": "a JSON API page (an object with an items list, or a list)",
    "jsonl": "a JSON Lines file",
    "csv": "a CSV file",
    "wordpress": "a WordPress REST API page (a JSON list of posts)",
    "rss": "an RSS 2.0 document",
    "atom": "an Atom feed",
    "jsonfeed": "a JSON Feed (version https://jsonfeed.org/version/1.1)",
}


@dataclass(frozen=True, slots=True)
class Choice:
    """The format a run reads its source as, and what decided it (reported by the import)."""

    format: str
    reason: str
    auto: bool

    def as_dict(self) -> dict[str, object]:
        return {"format": self.format, "chosen_by": self.reason, "auto": self.auto}

    def sentence(self) -> str:
        return f"format {self.format}: " + (f"detected from {self.reason}" if self.auto else self.reason)


def choose(requested: str, page: Page, *, source: str, suffix: str = "") -> Choice:
    """`requested` (IMPORT_FORMAT) checked against the first page, or decided from it for auto."""
    detected = detect(page, suffix=suffix)
    if requested != "auto":
        if detected.format != requested:
            raise wrong_format(requested, detected, source=source, setting="IMPORT_FORMAT")
        return Choice(requested, "set by IMPORT_FORMAT (or --format)", auto=False)
    if detected.format is None:
        raise InputError(
            f"{source} is not a feed format this tool reads: it is {detected.looks_like}",
            got=f"{detected.looks_like} ({detected.reason})",
            expected="a JSON API page, WordPress REST API, RSS 2.0, Atom or JSON Feed (check IMPORT_SOURCE)",
            retry_safe=True,
        )
    return Choice(detected.format, detected.reason, auto=True)
