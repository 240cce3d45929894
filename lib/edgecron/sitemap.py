"""Streaming, hostile-input-safe sitemap reading: robots.txt, indexes, .xml.gz, plain text.

Sitemaps are treated as hostile: DOCTYPE/ENTITY refused (the image's expat is 2.5.0), the
decompressed size capped, index depth capped, loops skipped, every `<loc>` and child sitemap
through the URL policy (`urls.py`: allowed hosts only, nothing two parsers read differently), at
most `max_urls` per file, `<loc>` under 2,048 characters, and each download within the timeout
(WARM_TIMEOUT: the whole response, not each read). Problems with one sitemap are collected and
reading goes on with the others; the caller decides whether nothing-at-all is fatal.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
import requests
from defusedxml.common import DefusedXmlException, DTDForbidden

from .config import Settings
from .errors import EdgecronError, InputError, UpstreamUnavailable
from .http import fetch_capped
from .urls import UrlPolicy, UrlRefused

MAX_LOC_CHARS = 2048
# UrlRefused.reason -> the skip counter shown to the operator
SKIP_REASONS = {"not-http": "loc-not-absolute", "off-host": "off-host", "unsafe-url": "unsafe-url"}


@dataclass(frozen=True)
class SitemapEntry:
    url: str
    lastmod: str | None
    sitemap: str


@dataclass
class SitemapReport:
    sitemaps_read: int = 0
    urls_seen: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    problems: list[EdgecronError] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _ChunkReader(io.RawIOBase):
    """File-like view over an iterator of byte chunks, so iterparse can stream from the network."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


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
            self.report.skip("sitemap-loop")
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
            for kind, loc, lastmod in self._parse(url):
                if kind == "sitemap":
                    children.append(loc)
                else:
                    yield SitemapEntry(loc, lastmod, url)
            self.report.sitemaps_read += 1
        except EdgecronError as err:
            self.report.problems.append(err)
        for child in children:  # children after the parent is closed: one open download at a time
            yield from self._read(child, depth=depth + 1)

    def _parse(self, url: str) -> Iterator[tuple[str, str, str | None]]:
        body = fetch_capped(
            self.session,
            url,
            allowed_hosts=self.allowed_hosts,
            timeout=self.timeout,
            max_bytes=self.max_bytes,
            what="sitemap",
        )
        first = next(body, b"")
        head = first.lstrip(b"\xef\xbb\xbf").lstrip()
        chunks = _chain(first, body)
        if head.startswith(b"<"):
            yield from self._parse_xml(url, chunks, head=head)
        else:
            yield from self._parse_text(url, chunks)

    def _parse_xml(
        self, url: str, chunks: Iterator[bytes], *, head: bytes = b""
    ) -> Iterator[tuple[str, str, str | None]]:
        count = 0
        root_kind = None
        loc: str | None = None
        lastmod: str | None = None
        try:
            events = SafeET.iterparse(_ChunkReader(chunks), events=("start", "end"), forbid_dtd=True)
            for event, elem in events:
                tag = elem.tag.rsplit("}", 1)[-1].lower()  # tolerate a missing namespace
                if root_kind is None:
                    if tag not in ("urlset", "sitemapindex"):
                        raise InputError(
                            f"sitemap {url} is not a sitemap" + (" (it is an HTML page)" if tag == "html" else ""),
                            got=f"<{tag}>",
                            expected="<urlset> or <sitemapindex> (check SITEMAP_URLS)",
                        )
                    root_kind = "sitemap" if tag == "sitemapindex" else "url"
                    continue
                if event == "start":
                    continue
                if tag == "loc":
                    loc = (elem.text or "").strip()
                elif tag == "lastmod":
                    lastmod = (elem.text or "").strip() or None
                elif tag in ("url", "sitemap"):
                    if loc:
                        entry = self._accept(url, loc)
                        if entry is not None:
                            count += 1
                            if count > self.max_urls:
                                self._too_many(url)
                                return
                            yield root_kind, entry, lastmod
                    loc, lastmod = None, None
                    elem.clear()
        except DTDForbidden as exc:
            what = "is an HTML page" if (exc.name or "").lower() == "html" else "declares a DOCTYPE"
            raise InputError(
                f"sitemap {url} {what}",
                got=f"<!DOCTYPE {exc.name}>",
                expected="a sitemap without DOCTYPE or ENTITY declarations (refused for safety)",
            ) from None
        except DefusedXmlException as exc:
            raise InputError(
                f"sitemap {url} uses XML entities",
                got=type(exc).__name__,
                expected="plain XML (entities refused for safety)",
            ) from None
        except ParseError as exc:
            if root_kind is None and head.lower().startswith((b"<!doctype html", b"<html")):
                raise InputError(
                    f"sitemap {url} is an HTML page",
                    got=head[:40].decode("utf-8", "replace"),
                    expected="<urlset> or <sitemapindex> (check SITEMAP_URLS)",
                ) from None
            raise InputError(
                f"sitemap {url} is not well-formed XML",
                got=str(exc),
                expected="a complete <urlset> or <sitemapindex> document; URLs before the error were kept",
            ) from None
        if root_kind is None:
            raise InputError(f"sitemap {url} is empty", expected="a <urlset> or <sitemapindex> document")

    def _parse_text(self, url: str, chunks: Iterator[bytes]) -> Iterator[tuple[str, str, str | None]]:
        count = 0
        for raw in _lines(chunks, max_line=4 * MAX_LOC_CHARS, what=f"sitemap {url}"):
            line = raw.decode("utf-8", "replace").strip().lstrip("\ufeff")
            if not line or line.startswith("#"):
                continue
            if not line.startswith(("http://", "https://")):
                raise InputError(
                    f"sitemap {url} is neither XML nor a plain-text URL list",
                    got=line[:80],
                    expected="<urlset>/<sitemapindex> XML or one absolute URL per line",
                )
            entry = self._accept(url, line)
            if entry is None:
                continue
            count += 1
            if count > self.max_urls:
                self._too_many(url)
                return
            yield "url", entry, None

    def _too_many(self, url: str) -> None:
        self.report.problems.append(
            InputError(
                f"sitemap {url} lists more than {self.max_urls} URLs; the rest were ignored",
                expected=f"at most {self.max_urls} per file (split it with a sitemap index)",
            )
        )

    def _accept(self, sitemap_url: str, loc: str) -> str | None:
        if len(loc) >= MAX_LOC_CHARS:
            self.report.skip("loc-too-long")
            return None
        try:
            url = self.policy.check(loc)
        except UrlRefused as refused:
            self.report.skip(SKIP_REASONS[refused.reason])
            return None
        self.report.urls_seen += 1
        return url


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _lines(chunks: Iterator[bytes], *, max_line: int, what: str) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
        if len(pending) > max_line:  # no URL is this long; stop before the buffer grows quadratically
            raise InputError(
                f"{what} has a line longer than {max_line} bytes",
                expected="one absolute URL (under 2,048 characters) per line",
            )
    if pending:
        yield pending


__all__ = ["SitemapEntry", "SitemapReader", "SitemapReport", "UpstreamUnavailable"]
