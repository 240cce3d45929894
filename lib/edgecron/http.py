"""HTTP helpers safe to point at a production site.

`make_session()`: a requests Session with timeouts, urllib3 Retry honouring Retry-After (up to
MAX_RETRY_AFTER), an honest user agent and a cookie jar that stores nothing. `open_checked()` follows redirects by hand, each
hop checked by the URL policy (`urls.py`) so a redirect to a host that is not allowed is refused
instead of followed. `read_capped()` streams a body with a hard cap on the *decompressed* size
(gzip served with or without Content-Encoding). `fetch_capped()` puts them together under one
whole-response wait budget: the timeout settings bound the response, not each socket read.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from email.utils import mktime_tz, parsedate_tz
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from . import USER_AGENT
from .errors import InputError, UpstreamUnavailable
from .urls import UrlPolicy, UrlRefused

RETRY_STATUSES = (429, 502, 503, 504)
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0
MAX_RETRY_AFTER = 10.0  # seconds: a longer Retry-After is shortened, so a fetch stays bounded


class _NoCookies(DefaultCookiePolicy):
    """Accept no cookie, so nothing a site sets is ever sent back."""

    def set_ok(self, cookie, request):
        return False

    def return_ok(self, cookie, request):
        return False


class _BoundedRetry(Retry):
    """urllib3's Retry, but a Retry-After is honoured up to `max_retry_after` seconds: urllib3
    sleeps whatever the server asks (an hour stalls a sitemap or feed fetch for an hour)."""

    max_retry_after = MAX_RETRY_AFTER

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.max_retry_after)


_HEADER_RULES = Retry(total=0)  # only its Retry-After parser is used


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """Seconds a Retry-After header asks to wait (0.0 = now), by urllib3's grammar: delta-seconds
    or an HTTP date. None when absent or malformed, so the caller backs off its own way.

    urllib3 measures a date from `time.time()`; here it is measured from `now` (wall-clock seconds,
    injected), so a test of a date needs no real clock. Each caller caps the wait it accepts.
    """
    if not value or not value.strip():
        return None
    try:
        seconds = float(_HEADER_RULES.parse_retry_after(value))
    except InvalidHeader:
        return None
    if not value.strip().isdigit():  # an HTTP date (urllib3 parsed it, or would have raised)
        date = parsedate_tz(value)
        seconds = max(0.0, mktime_tz(date) - now) if date is not None else seconds
    return seconds


def make_session(*, retries: int = 3, backoff: float = 0.5, user_agent: str = USER_AGENT) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no ~/.netrc credentials, no proxy surprises on the VPS
    session.cookies.set_policy(_NoCookies())
    session.headers.clear()
    session.headers.update({"User-Agent": user_agent, "Accept": "*/*", "Accept-Encoding": "gzip"})
    retry = _BoundedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def host_allowed(url: str, allowed_hosts: Iterable[str]) -> bool:
    return UrlPolicy(allowed_hosts).allows(url)


def open_checked(
    session: requests.Session,
    url: str,
    *,
    allowed_hosts: Iterable[str],
    timeout: float = 30.0,
    budget: WaitBudget | None = None,
    max_redirects: int = 5,
    what: str = "URL",
) -> requests.Response:
    """GET `url` (streamed), following at most `max_redirects` redirects that the URL policy allows.

    `budget` bounds the waiting for the whole exchange, redirects included (by default `timeout`
    seconds). Each hop requests the URL the policy returned, never the raw text.
    """
    policy = UrlPolicy(allowed_hosts)
    budget = WaitBudget(timeout) if budget is None else budget
    current = url
    for _ in range(max_redirects + 1):
        try:
            current = policy.check(current)
        except UrlRefused as refused:
            why = "leads to a host that is not allowed" if refused.reason == "off-host" else f"is refused: {refused}"
            raise InputError(
                f"{what} {url} {why}" + (f" (redirected to {current})" if current != url else ""),
                got=refused.host or current,
                expected=policy.expected(),
            ) from None
        remaining = budget.remaining(what=f"{what} {current}")
        try:
            with budget.waiting():
                response = session.get(
                    current, stream=True, timeout=(min(CONNECT_TIMEOUT, remaining), remaining), allow_redirects=False
                )
        except requests.RequestException as exc:
            raise UpstreamUnavailable(
                f"{what} {current} could not be fetched", got=type(exc).__name__, expected="an HTTP response"
            ) from None
        if response.is_redirect and "location" in response.headers:
            response.close()
            current = urljoin(current, response.headers["location"])
            continue
        if response.status_code >= 500 or response.status_code == 429:
            response.close()
            raise UpstreamUnavailable(
                f"{what} {current} answered HTTP {response.status_code}", got=response.status_code, expected="HTTP 200"
            )
        if response.status_code != 200:
            response.close()
            raise InputError(
                f"{what} {current} answered HTTP {response.status_code}",
                got=response.status_code,
                expected="HTTP 200; check the URL",
            )
        return response
    raise InputError(f"{what} {url} redirects more than {max_redirects} times", expected="at most 5 redirects")


def fetch_capped(
    session: requests.Session,
    url: str,
    *,
    allowed_hosts: Iterable[str],
    timeout: float,
    max_bytes: int,
    what: str,
) -> Iterator[bytes]:
    """The decompressed body of `url`, at most `max_bytes`, the server keeping us waiting `timeout` s at most.

    The request is made (and refused, or failed) now; the returned iterator streams the body.
    """
    budget = WaitBudget(timeout)
    response = open_checked(session, url, allowed_hosts=allowed_hosts, budget=budget, what=what)
    chunks = response_chunks(response, what=f"{what} {url}", budget=budget)
    return read_capped(chunks, max_bytes=max_bytes, what=f"{what} {url}")


class WaitBudget:
    """The seconds one response may keep us waiting in all: connect, headers, redirects, every read.

    Time the caller spends between reads is not counted: a sitemap is parsed while the URLs it
    lists are warmed, and that must not make a fast server look slow. A server that trickles a
    byte at a time spends the budget all the same.
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.spent = 0.0

    def remaining(self, *, what: str) -> float:
        left = self.seconds - self.spent
        if left <= 0:
            raise UpstreamUnavailable(
                f"{what} took longer than {self.seconds:g} s in all",
                got="timed out",
                expected=f"the whole response within {self.seconds:g} s (the *_TIMEOUT setting)",
            )
        return left

    @contextmanager
    def waiting(self) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self.spent += self.clock() - started


def read_capped(chunks: Iterable[bytes], *, max_bytes: int, what: str) -> Iterator[bytes]:
    """Yield the decompressed body (gzip sniffed by magic bytes), never more than `max_bytes`."""
    iterator = iter(chunks)
    first = b""
    for chunk in iterator:
        first = chunk
        if chunk:
            break
    total = 0

    def over() -> InputError:
        return InputError(
            f"{what} is larger than {max_bytes} bytes once decompressed",
            expected=f"at most {max_bytes} bytes (raise SITEMAP_MAX_BYTES if this is genuine)",
        )

    if first.startswith(GZIP_MAGIC):
        inflater = zlib.decompressobj(wbits=31)
        for chunk in _prepend(first, iterator):
            data = chunk
            while data:
                try:
                    out = inflater.decompress(data, CHUNK)
                except zlib.error as exc:
                    raise InputError(f"{what} is not valid gzip", got=str(exc), expected="a gzip stream") from None
                total += len(out)
                if total > max_bytes:
                    raise over()
                if out:
                    yield out
                data = inflater.unconsumed_tail
            if inflater.eof:
                return
        if not inflater.eof:
            raise InputError(f"{what} is a truncated gzip stream", expected="a complete gzip file")
        return
    for chunk in _prepend(first, iterator):
        total += len(chunk)
        if total > max_bytes:
            raise over()
        if chunk:
            yield chunk


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def response_chunks(response: requests.Response, *, what: str, budget: WaitBudget | None = None) -> Iterator[bytes]:
    """Body chunks, Content-Encoding decoded by urllib3 (bounded per read since urllib3 2.7).

    `read1` returns whatever has arrived, so a body trickling a byte at a time still comes back
    to the budget check after each read: the body ends within the budget plus one socket read.
    """
    try:
        while True:
            if budget is not None:
                budget.remaining(what=what)
            try:
                if budget is None:
                    chunk = response.raw.read1(CHUNK, decode_content=True)
                else:
                    with budget.waiting():
                        chunk = response.raw.read1(CHUNK, decode_content=True)
            except Exception as exc:  # urllib3 raises several types for a cut or corrupt body
                raise UpstreamUnavailable(f"{what} was cut off while downloading", got=type(exc).__name__) from None
            if not chunk:
                return
            yield chunk
    finally:
        response.close()
