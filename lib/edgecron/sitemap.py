"""Streaming, hostile-input-safe sitemap reading: robots.txt, indexes, .xml.gz, plain text.

Sitemaps are treated as hostile: DOCTYPE/ENTITY refused (the image's expat is 2.5.0), the
decompressed size capped, index depth capped, loops skipped, every `<loc>` and child sitemap
through the URL policy (`urls.py`: allowed hosts only, nothing two parsers read differently), at
most `max_urls` per file, `<loc>` under 2,048 characters, and each download within the timeout
(WARM_TIMEOUT: the whole response, not each read). Problems with one sitemap are collected and
reading goes on with the others; the caller decides whether nothing-at-all is fatal. Every listed
URL that is not taken is counted in `report.dropped` with its reason.

A page is the `<loc>` that is a direct child of `<url>` (an index child: of `<sitemap>`) in the
sitemap namespace or none: image, video, news and hreflang extensions (`image:loc`,
`video:content_loc`, `xhtml:link`, any foreign element, even one named `loc`) are not pages.
XML is read with pyexpat directly (a depth counter, three element names; 2.5x faster than the
pure-Python parser defusedxml's iterparse runs), DOCTYPE, ENTITY and external references refused
by handlers as defusedxml does, and fed at least as many new bytes as expat holds for an unfinished
token: expat before 2.6 re-scans that token on every feed (CVE-2023-52425), quadratic for a 40 MiB
comment.

Runs of entries of the common shape (`<url><loc>…</loc><lastmod>…</lastmod></url>`: no attribute,
prefix, comment, CDATA, reference but `&amp;`, or non-ASCII byte; a `<loc>` the URL policy takes as
it is) are read by one regular expression instead of four Python handler calls per entry. Such a run
is well-formed content by its pattern alone, so expat is handed it as blanks of the same length and
line breaks: its byte index, line and column, so every error it reports after the run, stay the
document's. A run starts only where expat is between two entries in the root's content with nothing
held, in a document whose unprefixed names are in the root's sitemap namespace and whose encoding
reads ASCII as ASCII; everything else goes through the handlers. tests/test_sitemap_fast.py checks
that both readings agree on any document, however it is cut into chunks.
"""

from __future__ import annotations

import pyexpat
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import NamedTuple
from urllib.parse import urljoin

import requests

from .config import Settings
from .dropped import DroppedUrls
from .errors import EdgecronError, InputError, UpstreamUnavailable
from .http import fetch_capped
from .sitemapxml import SITEMAP_NS, DoctypeRefused, EntitiesRefused, Scanned, SitemapXml, safe_parser, scanners_for
from .urls import UrlPolicy, UrlRefused

MAX_LOC_CHARS = 2048
MIN_FEED = 1 << 20  # bytes per expat Parse() call at least: few calls, and each far larger than a URL entry
SNIFF_BYTES = 64  # XML or text, an HTML page: told from this many bytes after a BOM and blanks
SNIFF_MAX = 64 * 1024  # … or from this many in all (one chunk of a normal download)
_NOT_BLANK = re.compile(rb"[^\xef\xbb\xbf \t\n\r\x0b\x0c]")
# A text sitemap whose first lines hold no URL is something else (an error page, JSON, a typo'd path).
TEXT_PROBE_LINES = 50
NO_LOC = "(no <loc>)"


class SitemapEntry(NamedTuple):  # a tuple: a million of them are made per run, a frozen dataclass costs 3x
    url: str
    lastmod: str | None
    sitemap: str


@dataclass
class SitemapReport:
    sitemaps_read: int = 0
    urls_seen: int = 0
    dropped: DroppedUrls = field(default_factory=DroppedUrls)
    problems: list[EdgecronError] = field(default_factory=list)


# A SitemapEntry made in C (what the NamedTuple's __new__ does, without a Python frame per URL).
_new_entry = partial(tuple.__new__, SitemapEntry)


class _Unfit(Exception):
    """A <loc> that is empty or too long (the slow path of the reading loop)."""


class SitemapReader:
    """Reads sitemaps (recursively for indexes) and yields page URLs as they are parsed."""

    def __init__(
        self,
        session: requests.Session,
        *,
        allowed_hosts: Iterable[str],
        max_bytes: int = 52_428_800,
        max_depth: int = 5,
        max_urls: int = 50_000,
        timeout: float = 30.0,
        on_sitemap: Callable[[str], None] | None = None,
    ) -> None:
        self.session = session
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.policy = UrlPolicy(self.allowed_hosts)
        self._scanners = scanners_for(self.policy.unchanged_source(amp="&amp;"))
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_urls = max_urls
        self.timeout = timeout
        self.on_sitemap = on_sitemap
        self.report = SitemapReport()
        self._visited: set[str] = set()

    @classmethod
    def from_settings(
        cls, session: requests.Session, settings: Settings, *, on_sitemap: Callable[[str], None] | None = None
    ) -> SitemapReader:
        return cls(
            session,
            allowed_hosts=settings.allowed_hosts,
            max_bytes=settings["SITEMAP_MAX_BYTES"],
            max_depth=settings["SITEMAP_MAX_DEPTH"],
            max_urls=settings["SITEMAP_MAX_URLS"],
            timeout=settings["WARM_TIMEOUT"],
            on_sitemap=on_sitemap,
        )

    # --- discovery -------------------------------------------------------------------------------

    def discover(self, site_url: str) -> list[str]:
        """Sitemap URLs from `SITE_URL/robots.txt`, else `SITE_URL/sitemap.xml`."""
        robots = urljoin(site_url + "/", "robots.txt")
        found: list[str] = []
        try:
            body = fetch_capped(
                self.session,
                robots,
                allowed_hosts=self.allowed_hosts,
                timeout=self.timeout,
                max_bytes=512 * 1024,
                what="robots.txt",
            )
            text = b"".join(body)
            for raw_line in text.decode("utf-8", "replace").splitlines():
                name, _, value = raw_line.partition(":")
                if name.strip().lower() == "sitemap" and value.strip():
                    url = urljoin(robots, value.strip())
                    if url != robots and url not in found:  # a robots.txt listing itself loops
                        found.append(url)
        except InputError:
            pass  # no robots.txt (404) is normal; fall back to /sitemap.xml
        return found or [urljoin(site_url + "/", "sitemap.xml")]

    # --- reading ---------------------------------------------------------------------------------

    def iter_entries(self, sitemap_urls: Iterable[str]) -> Iterator[SitemapEntry]:
        for url in sitemap_urls:
            yield from self._read(url, depth=0)

    def _read(self, url: str, *, depth: int) -> Iterator[SitemapEntry]:
        if url in self._visited:
            self.report.problems.append(
                InputError(f"sitemap {url} is listed again (a loop)", expected="each sitemap listed once")
            )
            return
        self._visited.add(url)
        if depth > self.max_depth:
            self.report.problems.append(
                InputError(f"sitemap {url} is nested too deep", got=depth, expected=f"at most {self.max_depth} levels")
            )
            return
        if self.on_sitemap:
            self.on_sitemap(url)
        children: list[str] = []
        try:
            yield from self._parse(url, children)
            self.report.sitemaps_read += 1
        except EdgecronError as err:
            self.report.problems.append(err)
        for child in children:  # children after the parent is closed: one open download at a time
            yield from self._read(child, depth=depth + 1)

    def _parse(self, url: str, children: list[str]) -> Iterator[SitemapEntry]:
        """The pages `url` lists; the child sitemaps of an index go to `children`."""
        body = fetch_capped(
            self.session,
            url,
            allowed_hosts=self.allowed_hosts,
            timeout=self.timeout,
            max_bytes=self.max_bytes,
            what="sitemap",
        )
        yield from self.read_body(url, body, children)

    def read_body(self, url: str, body: Iterator[bytes], children: list[str]) -> Iterator[SitemapEntry]:
        """The pages in `body`, the decompressed chunks of the sitemap at `url`; an index's children go to `children`."""
        # What the body is, decided on its first bytes however the server cut them (each chunk looked at once).
        gathered = bytearray()
        seen = -1  # where the first byte that is neither a BOM byte nor a blank is, once there is one
        for chunk in body:
            if seen < 0 and (found := _NOT_BLANK.search(chunk)):
                seen = len(gathered) + found.start()
            gathered += chunk
            if len(gathered) >= SNIFF_MAX or (seen >= 0 and len(gathered) - seen >= SNIFF_BYTES):
                break
        first = bytes(gathered)
        head = first.lstrip(b"\xef\xbb\xbf").lstrip()
        chunks = _chain(first, body)
        if head.startswith(b"<"):
            yield from self._parse_xml(url, chunks, children, head=head)
        else:
            yield from self._parse_text(url, chunks)

    def _parse_xml(
        self, url: str, chunks: Iterator[bytes], children: list[str], *, head: bytes = b""
    ) -> Iterator[SitemapEntry]:
        parser = safe_parser()
        xml = SitemapXml(parser, url=url, scanners=self._scanners)
        count = taken = 0
        pending = bytearray()  # appended to, not joined: one copy of a large token, not two
        final = False
        while not final:
            chunk = next(chunks, None)
            final = chunk is None
            if chunk is not None:
                pending += chunk
                # expat < 2.6 re-scans an unfinished token on each call: give it at least as much new
                # data as it holds back, so the total re-scanning stays linear (CVE-2023-52425).
                held = xml.fed - max(parser.CurrentByteIndex, 0)
                if len(pending) < MIN_FEED or len(pending) < held:
                    continue
            data, pending = pending, bytearray()
            failure: EdgecronError | None = None
            try:
                pending = xml.feed(parser, data, final=final)
            except EdgecronError as err:  # the root is not a sitemap (raised by a handler)
                failure = err
            except DoctypeRefused as exc:
                what = "is an HTML page" if exc.name.lower() == "html" else "declares a DOCTYPE"
                failure = InputError(
                    f"sitemap {url} {what}",
                    got=f"<!DOCTYPE {exc.name}>",
                    expected="a sitemap without DOCTYPE or ENTITY declarations (refused for safety)",
                )
            except EntitiesRefused as exc:
                failure = InputError(
                    f"sitemap {url} uses XML entities", got=str(exc), expected="plain XML (entities refused for safety)"
                )
            except pyexpat.ExpatError as exc:
                failure = self._not_xml(url, exc, head=head, root_read=xml.kind is not None)
            index = xml.kind == "sitemap"
            check = self.policy.check
            for found in xml.found:  # what was read before a failure is kept
                if isinstance(found, Scanned):
                    locs = found.locs
                    lastmods: Iterable[str | None] = repeat(None) if found.lastmods is None else found.lastmods
                    # the common case: the run's pattern was the URL policy's
                    if found.checked and count + len(locs) <= self.max_urls and max(map(len, locs)) < MAX_LOC_CHARS:
                        count += len(locs)
                        if index:
                            children += locs
                        else:
                            yield from map(_new_entry, zip(locs, lastmods, repeat(url), strict=False))
                        continue
                    entries: Iterable[tuple[str | None, str | None]] = zip(locs, lastmods, strict=False)
                else:
                    entries = found
                for loc, lastmod in entries:
                    try:  # _accept() inlined: this loop runs once per URL
                        if not loc or len(loc) >= MAX_LOC_CHARS:
                            raise _Unfit
                        entry = check(loc)
                    except (_Unfit, UrlRefused):
                        self._accept(url, loc, child=index)  # counts the drop with its reason
                        continue
                    count += 1
                    if count > self.max_urls:
                        self.report.urls_seen += count - taken
                        self._too_many(url)
                        return
                    if index:
                        children.append(entry)
                    else:
                        yield SitemapEntry(entry, lastmod, url)
            self.report.urls_seen += count - taken
            taken = count
            xml.found.clear()
            if failure is not None:
                raise failure

    @staticmethod
    def _not_xml(url: str, exc: pyexpat.ExpatError, *, head: bytes, root_read: bool) -> InputError:
        if not root_read and head.lower().startswith((b"<!doctype html", b"<html")):
            return InputError(
                f"sitemap {url} is an HTML page",
                got=head[:40].decode("utf-8", "replace"),
                expected="<urlset> or <sitemapindex> (check SITEMAP_URLS)",
            )
        if not root_read and exc.code == pyexpat.errors.codes[pyexpat.errors.XML_ERROR_NO_ELEMENTS]:
            return InputError(f"sitemap {url} is empty", expected="a <urlset> or <sitemapindex> document")
        return InputError(
            f"sitemap {url} is not well-formed XML",
            got=str(exc),
            expected="a complete <urlset> or <sitemapindex> document; URLs before the error were kept",
        )

    def _parse_text(self, url: str, chunks: Iterator[bytes]) -> Iterator[SitemapEntry]:
        """One URL per line; a line that is not one is dropped as invalid (too long: too-long).

        Until the first URL line the file may be something else: junk is held back, and a file
        whose first TEXT_PROBE_LINES lines (or all of them) hold no URL is refused as a whole.
        """
        count = 0
        held_back: list[tuple[str, str]] = []  # (reason, line) before the first URL line
        listing = False
        for raw, too_long in _lines(chunks, max_line=4 * MAX_LOC_CHARS):
            line = raw.decode("utf-8", "replace").strip().lstrip("\ufeff")
            if not line or line.startswith("#"):
                continue
            if too_long or not line[:8].lower().startswith(("http://", "https://")):
                reason = "too-long" if too_long else "invalid"
                if listing:
                    self.report.dropped.add(reason, line, sitemap=url)
                    continue
                held_back.append((reason, line))
                if too_long or len(held_back) >= TEXT_PROBE_LINES:
                    raise self._not_a_list(url, held_back)
                continue
            if not listing:
                listing = True
                for reason, junk in held_back:
                    self.report.dropped.add(reason, junk, sitemap=url)
                held_back.clear()
            entry = self._accept(url, line)
            if entry is None:
                continue
            count += 1
            if count > self.max_urls:
                self._too_many(url)
                return
            yield SitemapEntry(entry, None, url)
        if held_back:
            raise self._not_a_list(url, held_back)

    @staticmethod
    def _not_a_list(url: str, held_back: list[tuple[str, str]]) -> InputError:
        reason, first = held_back[0]
        return InputError(
            f"sitemap {url} is neither XML nor a plain-text URL list",
            got=f"a line longer than {4 * MAX_LOC_CHARS} bytes" if reason == "too-long" else first[:80],
            expected="<urlset>/<sitemapindex> XML or one absolute URL per line",
        )

    def _too_many(self, url: str) -> None:
        self.report.problems.append(
            InputError(
                f"sitemap {url} lists more than {self.max_urls} URLs; the rest were ignored",
                expected=f"at most {self.max_urls} per file (split it with a sitemap index)",
            )
        )

    def _accept(self, sitemap_url: str, loc: str | None, *, child: bool = False) -> str | None:
        """The URL to use, or None with the drop counted (`child`: an index's child sitemap)."""
        if not loc:
            self.report.dropped.add("invalid", NO_LOC, sitemap=sitemap_url)
            return None
        if len(loc) >= MAX_LOC_CHARS:
            self.report.dropped.add("too-long", loc, sitemap=sitemap_url)
            return None
        try:
            url = self.policy.check(loc)
        except UrlRefused as refused:
            self.report.dropped.refused(refused, loc, sitemap=sitemap_url, child=child)
            return None
        self.report.urls_seen += 1
        return url


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _lines(chunks: Iterator[bytes], *, max_line: int) -> Iterator[tuple[bytes, bool]]:
    """(line, False) for each line; (its first `max_line` bytes, True) for a longer one, the rest
    skipped as it arrives: the buffer never holds more than one chunk and `max_line` bytes."""
    pending = b""
    skipping = False
    for chunk in chunks:
        if skipping:
            end = chunk.find(b"\n")
            if end < 0:
                continue
            skipping = False
            chunk = chunk[end + 1 :]
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield (line[:max_line], True) if len(line) > max_line else (line, False)
        if len(pending) > max_line:  # no URL is this long; stop before the buffer grows quadratically
            yield pending[:max_line], True
            pending = b""
            skipping = True
    if pending and not skipping:
        yield (pending[:max_line], True) if len(pending) > max_line else (pending, False)


__all__ = ["SITEMAP_NS", "SitemapEntry", "SitemapReader", "SitemapReport", "UpstreamUnavailable"]
