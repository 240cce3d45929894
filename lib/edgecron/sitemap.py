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
from functools import lru_cache, partial
from itertools import repeat
from typing import NamedTuple
from urllib.parse import urljoin

import requests

from .config import Settings
from .dropped import DroppedUrls
from .errors import EdgecronError, InputError, UpstreamUnavailable
from .http import fetch_capped
from .urls import UrlPolicy, UrlRefused

MAX_LOC_CHARS = 2048
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
# The protocol's namespace, none, and the spellings generators have shipped (https, Google's 0.84).
SITEMAP_NAMESPACES = (
    "",
    SITEMAP_NS,
    "https://www.sitemaps.org/schemas/sitemap/0.9",
    "http://www.google.com/schemas/sitemap/0.84",
)
NS_SEP = " "  # expat reports "namespace local"; a namespace URI holds no space
MIN_FEED = 1 << 20  # bytes per expat Parse() call at least: few calls, and each far larger than a URL entry
# Expat may be handed a part of a block (up to the next entry) only while it holds at most this much of
# an unfinished token, so re-scanning it stays cheap; a larger one gets the rest of the block at once.
SLICE_HELD_MAX = 16 * 1024
CARRY_MAX = 64 * 1024  # an entry cut by the end of a block waits for the next block, up to this size
# After a run, the handlers read 1, 2, 4 … entries before the next try; past this many, the rest of the
# block (a sitemap whose entries carry images, say: no run to find, and a search per entry would cost).
MAX_SKIP = 64
# Encodings in which the plain-ASCII entries below are read as ASCII (the XML declaration's name).
ASCII_ENCODINGS = ("utf-8", "us-ascii", "iso-8859-1")

# The common entry shape, matched in the text so that expat need not call Python per element: no
# attribute, prefix, comment, CDATA, PI, character reference or non-ASCII byte anywhere, values of
# printable ASCII (`&amp;` the only reference, in <loc>), children loc (once), lastmod (not empty),
# changefreq and priority. Everything else is read by the handlers. The repeats are possessive:
# each entry has one reading, and a run of entries is found in one pass.
_WS = r"[ \t\r\n]*+"
_CHARS = r"[!-%'-;=?-~]"  # printable ASCII without & < > (and without space)
_OTHER = rf"(?:<changefreq>{_WS}{_CHARS}*+{_WS}</changefreq>{_WS}|<priority>{_WS}{_CHARS}*+{_WS}</priority>{_WS})*+"
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


class _Scanned(NamedTuple):
    """Entries read by `_EntryScanner`: `<loc>` values the URL policy returns unchanged (unless `checked`
    is False: the run holds "/.", which the policy always parses), and the lastmods (None: no entry had one)."""

    locs: list[str]
    lastmods: list[str | None] | None
    checked: bool


def _entry_pattern(entry: str, url: str, *, capture: bool) -> str:
    """One entry of the common shape; with `capture`, groups: lastmod before <loc>, <loc>, lastmod after it."""
    group = "(" if capture else "(?:"
    lastmod = rf"<lastmod>{_WS}{group}{_CHARS}++){_WS}</lastmod>{_WS}"
    loc = rf"<loc>{group}{url})</loc>{_WS}"  # no blank in it: no generator writes one (the handlers strip it)
    return rf"{_WS}<{entry}>{_WS}{_OTHER}(?:{lastmod}{_OTHER})?+{loc}{_OTHER}(?:{lastmod}{_OTHER})?+</{entry}>"


class _EntryScanner:
    """Runs of common-shape entries named `entry` (`url` or `sitemap`), in text decoded as latin-1.

    A run's `<loc>`s match `url`, the URL policy's pattern for URLs it takes as they are (as XML
    text: `&amp;` for '&'). The text is the block's bytes one character each, so positions are
    byte offsets; a run holds ASCII only, so its values read the same as in UTF-8.
    """

    def __init__(self, entry: str, url: str) -> None:
        self.open = f"<{entry}>"  # where a run can start: an entry start tag as the common shape writes it
        self.open_bytes = self.open.encode()
        self.run = re.compile(f"(?:{_entry_pattern(entry, url, capture=False)})*+")
        self._entries = re.compile(_entry_pattern(entry, url, capture=True))
        self._locs = re.compile(r"<loc>([^<]*)")  # in a run, every <loc> starts a value

    def read(self, text: str, start: int, end: int) -> _Scanned:
        """The entries of `text[start:end]`, a run `self.run` matched whole."""
        lastmods: list[str | None] | None = None
        if text.find("<lastmod>", start, end) < 0:
            locs = self._locs.findall(text, start, end)
        else:  # the last lastmod of an entry counts (a lastmod is never empty here: "" is no group)
            rows = self._entries.findall(text, start, end)
            locs = [loc for _, loc, _ in rows]
            lastmods = [after or before or None for before, _, after in rows]
        if text.find("&", start, end) >= 0:  # only a <loc> may hold one, and only as &amp;
            locs = [loc.replace("&amp;", "&") for loc in locs]
        # no "/." comes of unescaping: '&' is neither '/' nor '.'
        return _Scanned(locs, lastmods, checked=text.find("/.", start, end) < 0)


@lru_cache(maxsize=16)
def _scanners_for(url: str | None) -> dict[str, _EntryScanner]:
    """The scanners for a policy's `unchanged_source` (none without one: every entry through the handlers)."""
    return {} if url is None else {kind: _EntryScanner(kind, url) for kind in ("url", "sitemap")}


# A run as expat is given it: every byte a space but CR and LF. A run is well-formed content on its
# own (names, ASCII text, no `]]>`, balanced), so expat need not read its tags again; blanks of the
# same length and line breaks keep its byte index, line and column (so its error messages) the same.
_BLANKS = bytes(byte if byte in b"\r\n" else 0x20 for byte in range(256))
# A SitemapEntry made in C (what the NamedTuple's __new__ does, without a Python frame per URL).
_new_entry = partial(tuple.__new__, SitemapEntry)


class _SitemapXml:
    """expat handlers for one file, which `<loc>`/`<lastmod>` belong to which entry, and the feeding.

    Depth 1 is the root, 2 an entry (`url` or `sitemap`), 3 its `loc`/`lastmod`; any other element,
    at any depth, is passed over by name. The handlers are closures (no attribute lookups: they run
    four times per URL) and text goes straight to `list.append` (no Python frame per text piece);
    the list is emptied at each entry, so only an entry's own text is ever held. Runs of
    common-shape entries are read by `_EntryScanner` instead (see the module docstring). The
    object never holds the parser: a handler reaching it is a cycle that keeps its buffers.
    """

    def __init__(self, parser: pyexpat.XMLParserType, *, url: str, scanners: dict[str, _EntryScanner]) -> None:
        self.kind: str | None = None  # "url" (a urlset) or "sitemap" (an index), once the root is read
        # (loc, lastmod) lists from the handlers and _Scanned runs, in document order; taken after each block
        self.found: list[list[tuple[str | None, str | None]] | _Scanned] = []
        self.scanner: _EntryScanner | None = None  # set when the root allows reading runs
        self.fed = 0  # bytes handed to expat
        self.probed = False  # the first block was cut before its first entry (so a run can start there)
        self.ascii_start = False  # the document's first bytes are no UTF-16
        entries: list[tuple[str | None, str | None]] = []
        self._entries = entries
        intern = parser.intern  # not the parser itself: a handler holding it is a cycle that keeps its buffers
        text: list[str] = []
        entry_name = loc_name = lastmod_name = ""
        depth = 0
        in_cdata = False
        in_entry = False
        reading = 0  # 1: inside the entry's <loc>, 2: its <lastmod>
        mixed = False  # an element inside <loc>/<lastmod>: not a value
        loc: str | None = None
        lastmod: str | None = None
        encoding: str | None = None  # as the XML declaration names it
        default_ns = ""  # the root's default namespace: what an unprefixed name in an entry is in

        def start(name: str, attrs: object) -> None:
            nonlocal depth, in_entry, reading, mixed, loc, lastmod
            depth += 1
            if depth == 3:
                if in_entry and (name is loc_name or name is lastmod_name):
                    reading = 1 if name is loc_name else 2
                    text.clear()
            elif depth == 2:  # the text before it was emptied at the end of the previous one
                if name is entry_name:
                    in_entry = True
                    loc = lastmod = None
            elif depth == 1:
                root(name)
            elif reading:
                mixed = True

        def end(name: str) -> None:
            nonlocal depth, in_entry, reading, mixed, loc, lastmod
            depth -= 1
            if depth == 2:
                if reading:
                    value = "" if mixed else "".join(text).strip()
                    if reading == 2:
                        lastmod = value or None
                    elif loc is None:  # a second <loc> in one entry is not a second page
                        loc = value
                    reading = 0
                    mixed = False
            elif depth == 1:
                text.clear()
                if in_entry:
                    entries.append((loc, lastmod))
                    in_entry = False

        def root(name: str) -> None:
            nonlocal entry_name, loc_name, lastmod_name
            namespace, _, local = name.rpartition(NS_SEP)
            if namespace not in SITEMAP_NAMESPACES or local not in ("urlset", "sitemapindex"):
                raise InputError(
                    f"sitemap {url} is not a sitemap" + (" (it is an HTML page)" if local.lower() == "html" else ""),
                    got=f"<{local}>" + (f" in namespace {namespace}" if namespace else ""),
                    expected=f"<urlset> or <sitemapindex> in namespace {SITEMAP_NS} or none (check SITEMAP_URLS)",
                )
            self.kind = "url" if local == "urlset" else "sitemap"
            prefix = namespace + NS_SEP if namespace else ""
            # expat hands back the objects in its intern table: the names compare by identity
            entry_name = intern.setdefault(prefix + self.kind, prefix + self.kind)
            loc_name = intern.setdefault(prefix + "loc", prefix + "loc")
            lastmod_name = intern.setdefault(prefix + "lastmod", prefix + "lastmod")
            # A run's unprefixed `<url>` is the entry only if the default namespace is the root's; its
            # ASCII bytes are ASCII characters only in these encodings (UTF-16 shows as a NUL early).
            ascii = encoding is None or encoding.lower() in ASCII_ENCODINGS
            if namespace == default_ns and ascii and self.ascii_start:
                self.scanner = scanners.get(self.kind)

        def declaration(version: str, declared: str | None, standalone: int) -> None:
            nonlocal encoding
            encoding = declared

        def namespace_start(prefix: str | None, uri: str | None) -> None:
            nonlocal default_ns
            if depth == 0 and prefix is None:
                default_ns = uri or ""

        def cdata(opened: bool) -> None:
            nonlocal in_cdata
            in_cdata = opened

        def resting() -> bool:
            """Between entries in the root's content (not inside CDATA)."""
            return depth == 1 and not in_cdata

        self._resting = resting
        self._handlers = (start, end, text.append)
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text.append
        parser.XmlDeclHandler = declaration
        parser.StartNamespaceDeclHandler = namespace_start
        parser.StartCdataSectionHandler = partial(cdata, True)
        parser.EndCdataSectionHandler = partial(cdata, False)

    def feed(self, parser: pyexpat.XMLParserType, data: bytearray, *, final: bool) -> bytearray:
        """Parse `data`, the next block; return its end when that is an entry cut short, to go first in the next.

        What is read goes to `found`, also when expat (or a handler) raises.
        """
        if self.fed == 0:
            self.ascii_start = b"\0" not in data[:4]
        view = memoryview(data)
        size = len(data)
        pos = 0
        text: str | None = None
        blanks: bytearray | None = None
        skip = 1  # entries handed to the handlers before a run is tried again (doubles while none is found)
        closed = False
        try:
            while pos < size:
                stop = size
                scanner = self.scanner
                held = self.fed - max(parser.CurrentByteIndex, 0)
                if scanner is not None and held == 0 and self._resting():
                    text = data.decode("latin-1") if text is None else text
                    end = scanner.run.match(text, pos).end()  # type: ignore[union-attr]  # matches "" at least
                    if end > pos:
                        blanks = data.translate(_BLANKS) if blanks is None else blanks
                        self._run(parser, memoryview(blanks)[pos:end])
                        self.found.append(scanner.read(text, pos, end))
                        self.fed += end - pos
                        pos = end
                        skip = 1
                        continue
                    if skip <= MAX_SKIP:
                        after = text.find("<", pos) + 1  # past what the run stopped at
                        stop = self._next_entry(text, scanner.open, after, skip) if after else -1
                        if stop < 0 and not final and size - pos <= CARRY_MAX:
                            return bytearray(view[pos:])  # an entry cut by the block's end: read it whole next time
                        skip *= 2
                elif scanner is not None and held <= SLICE_HELD_MAX and skip <= MAX_SKIP:  # inside an entry: to its end
                    stop = self._next_entry(data, scanner.open_bytes, pos + 1, skip)
                    skip *= 2
                elif self.kind is None and not self.probed:  # up to the first entry: runs may start there
                    self.probed = True
                    stop = min((i for i in (data.find(b"<url>"), data.find(b"<sitemap>")) if i > 0), default=-1)
                stop = size if stop < 0 else stop
                closed = final and stop == size
                parser.Parse(view[pos:stop], closed)
                self.fed += stop - pos
                pos = stop
                self._take_entries()
            if final and not closed:
                parser.Parse(b"", True)
            return bytearray()
        finally:
            self._take_entries()

    @staticmethod
    def _next_entry(data: str | bytearray, tag: str | bytes, start: int, count: int) -> int:
        """Where the `count`-th entry start tag from `start` on begins, else -1."""
        found = start - 1
        for _ in range(count):
            found = data.find(tag, found + 1)  # type: ignore[arg-type]  # str in str, bytes in bytearray
            if found < 0:
                break
        return found

    def _run(self, parser: pyexpat.XMLParserType, blanks: memoryview) -> None:
        """Expat reads a run as the blanks it is made of (no text handler: nothing to keep)."""
        parser.CharacterDataHandler = None
        try:
            parser.Parse(blanks, False)
        finally:
            parser.CharacterDataHandler = self._handlers[2]

    def _take_entries(self) -> None:
        if self._entries:
            self.found.append(self._entries[:])
            self._entries.clear()


def _refuse_doctype(name: str, sysid: str | None, pubid: str | None, has_internal_subset: bool) -> None:
    raise _Doctype(name or "")


def _refuse_entity(name: str, *args: object) -> None:
    raise _Entities(name or "")


def _refuse_external(context: str, base: str | None, sysid: str | None, pubid: str | None) -> int:
    raise _Entities(sysid or "")


class _Unfit(Exception):
    """A <loc> that is empty or too long (the slow path of the reading loop)."""


class _Doctype(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Entities(Exception):
    pass


def _safe_parser() -> pyexpat.XMLParserType:
    """An expat parser that refuses DOCTYPE, ENTITY declarations and external references (as defusedxml does)."""
    parser = pyexpat.ParserCreate(namespace_separator=NS_SEP)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.buffer_text = True  # one text call per element, not one per internal buffer
    return parser


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
        self._scanners = _scanners_for(self.policy.unchanged_source(amp="&amp;"))
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
        parser = _safe_parser()
        xml = _SitemapXml(parser, url=url, scanners=self._scanners)
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
            except _Doctype as exc:
                what = "is an HTML page" if exc.name.lower() == "html" else "declares a DOCTYPE"
                failure = InputError(
                    f"sitemap {url} {what}",
                    got=f"<!DOCTYPE {exc.name}>",
                    expected="a sitemap without DOCTYPE or ENTITY declarations (refused for safety)",
                )
            except _Entities as exc:
                failure = InputError(
                    f"sitemap {url} uses XML entities", got=str(exc), expected="plain XML (entities refused for safety)"
                )
            except pyexpat.ExpatError as exc:
                failure = self._not_xml(url, exc, head=head, root_read=xml.kind is not None)
            index = xml.kind == "sitemap"
            check = self.policy.check
            for found in xml.found:  # what was read before a failure is kept
                if isinstance(found, _Scanned):
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
