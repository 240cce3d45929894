"""The XML side of sitemap reading: a safe expat parser and its handlers, and runs of common-shape entries.

`safe_parser()` refuses DOCTYPE, ENTITY declarations and external references (as defusedxml does).
`SitemapXml` holds the handlers for one file (which `<loc>`/`<lastmod>` belong to which entry) and
feeds expat, handing runs of common-shape entries to `EntryScanner` (one regular expression instead
of four Python handler calls per entry) and expat the same bytes as blanks. sitemap.py says why
each piece is safe; this module is its XML reader, split off to keep each module one screenful of
concern.
"""

from __future__ import annotations

import pyexpat
import re
from functools import lru_cache, partial
from typing import NamedTuple

from .errors import InputError

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
# The protocol's namespace, none, and the spellings generators have shipped (https, Google's 0.84).
SITEMAP_NAMESPACES = (
    "",
    SITEMAP_NS,
    "https://www.sitemaps.org/schemas/sitemap/0.9",
    "http://www.google.com/schemas/sitemap/0.84",
)
NS_SEP = " "  # expat reports "namespace local"; a namespace URI holds no space
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


class Scanned(NamedTuple):
    """Entries read by `EntryScanner`: `<loc>` values the URL policy returns unchanged (unless `checked`
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


class EntryScanner:
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

    def read(self, text: str, start: int, end: int) -> Scanned:
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
        return Scanned(locs, lastmods, checked=text.find("/.", start, end) < 0)


@lru_cache(maxsize=16)
def scanners_for(url: str | None) -> dict[str, EntryScanner]:
    """The scanners for a policy's `unchanged_source` (none without one: every entry through the handlers)."""
    return {} if url is None else {kind: EntryScanner(kind, url) for kind in ("url", "sitemap")}


# A run as expat is given it: every byte a space but CR and LF. A run is well-formed content on its
# own (names, ASCII text, no `]]>`, balanced), so expat need not read its tags again; blanks of the
# same length and line breaks keep its byte index, line and column (so its error messages) the same.
_BLANKS = bytes(byte if byte in b"\r\n" else 0x20 for byte in range(256))


class SitemapXml:
    """expat handlers for one file, which `<loc>`/`<lastmod>` belong to which entry, and the feeding.

    Depth 1 is the root, 2 an entry (`url` or `sitemap`), 3 its `loc`/`lastmod`; any other element,
    at any depth, is passed over by name. The handlers are closures (no attribute lookups: they run
    four times per URL) and text goes straight to `list.append` (no Python frame per text piece);
    the list is emptied at each entry, so only an entry's own text is ever held. Runs of
    common-shape entries are read by `EntryScanner` instead (see the module docstring). The
    object never holds the parser: a handler reaching it is a cycle that keeps its buffers.
    """

    def __init__(self, parser: pyexpat.XMLParserType, *, url: str, scanners: dict[str, EntryScanner]) -> None:
        self.kind: str | None = None  # "url" (a urlset) or "sitemap" (an index), once the root is read
        # (loc, lastmod) lists from the handlers and Scanned runs, in document order; taken after each block
        self.found: list[list[tuple[str | None, str | None]] | Scanned] = []
        self.scanner: EntryScanner | None = None  # set when the root allows reading runs
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
                raise _not_a_sitemap(url, namespace=namespace, local=local)
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


def _not_a_sitemap(url: str, *, namespace: str, local: str) -> InputError:
    return InputError(
        f"sitemap {url} is not a sitemap" + (" (it is an HTML page)" if local.lower() == "html" else ""),
        got=f"<{local}>" + (f" in namespace {namespace}" if namespace else ""),
        expected=f"<urlset> or <sitemapindex> in namespace {SITEMAP_NS} or none (check SITEMAP_URLS)",
    )


def _refuse_doctype(name: str, sysid: str | None, pubid: str | None, has_internal_subset: bool) -> None:
    raise DoctypeRefused(name or "")


def _refuse_entity(name: str, *args: object) -> None:
    raise EntitiesRefused(name or "")


def _refuse_external(context: str, base: str | None, sysid: str | None, pubid: str | None) -> int:
    raise EntitiesRefused(sysid or "")


class DoctypeRefused(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class EntitiesRefused(Exception):
    pass


def safe_parser() -> pyexpat.XMLParserType:
    """An expat parser that refuses DOCTYPE, ENTITY declarations and external references (as defusedxml does)."""
    parser = pyexpat.ParserCreate(namespace_separator=NS_SEP)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.buffer_text = True  # one text call per element, not one per internal buffer
    return parser
