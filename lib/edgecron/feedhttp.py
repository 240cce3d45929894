"""The HTTP feed source: pages fetched and followed to the end, every item with its page.

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

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import requests
from urllib3.util import parse_url

from .credentials import AuthHeader
from .errors import InputError, UpstreamUnavailable
from .feed import Position, RawRecord, Reject
from .http import WaitBudget, open_checked, read_capped, response_chunks
from .redact import MASK, redact
from .sources.detect import Choice, choose
from .sources.jsonapi import set_query
from .sources.page import Page, media_type
from .sources.readers import PageReader, reader_for
from .sources.wordpress import WordPressReader


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
        clone.url = set_query(self.url, param, value)
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
                reader = reader_for(self.format_choice.format, self.field_map)
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


def _pages_drifted(url: str, reader: WordPressReader) -> InputError:
    return InputError(
        f"WordPress answered HTTP 400 for {redact(url)}, a page its last answer said exists"
        f" (X-WP-TotalPages {reader.total_pages}): posts were removed or unpublished while reading",
        got=400,
        expected="the page to exist, or X-WP-TotalPages to end before it",
        retry_safe=True,
        hint="Finished batches are kept; rerun: it reads the pages again and skips what is unchanged.",
    )


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
