"""Cache warming: anonymous GETs with bounded concurrency and rate, one result per URL.

A shared urllib3 PoolManager is used rather than requests: at 64 parallel requests requests costs
~1.3 ms CPU per call under the GIL and tops out near half the network limit (bench-facts.md).
Requests carry only User-Agent, Accept and Accept-Encoding: never Cookie, Authorization or Origin
(they would split or bypass Cloudflare's cache key), and the pool keeps no cookie jar.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime

import urllib3

from . import USER_AGENT
from .config import Settings
from .dropped import DroppedUrls
from .http import retry_after_seconds
from .ratelimit import RateLimiter
from .sitemap import SitemapEntry
from .state import StateDB, iso
from .urls import UrlPolicy, UrlRefused

WARM_HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "gzip, br"}
RETRY_STATUSES = frozenset({429, 502, 503, 504})
SERVED_FROM_CACHE = frozenset({"HIT", "REVALIDATED", "UPDATING", "STALE"})
FILLED = frozenset({"MISS", "EXPIRED"})
OUTCOMES = ("warm", "filled", "not-cacheable", "challenge", "truncated", "failed")
CHUNK = 64 * 1024
INTERRUPTED = "interrupted"
FINISH_GRACE = 1.0  # seconds a stopped run lets downloads in flight finish before cutting them
STOP_GRACE = 3.0  # seconds a stopped run waits for requests that cannot be cut (connect, headers)
# A Ray ID is hex, then "-" and the IATA code of the data centre that answered (8c1f2a3b4c5d6e7f-FRA).
CF_RAY = re.compile(r"[0-9a-f]{1,32}-([A-Z]{3})")
UNKNOWN_DATA_CENTRE = "unknown"


@dataclass
class WarmResult:
    url: str
    outcome: str
    http_status: int | None = None
    cache_status: str | None = None
    age: int | None = None
    cf_ray: str | None = None
    elapsed_ms: float = 0.0
    bytes: int = 0
    attempts: int = 1
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def valid_cf_ray(value: str | None) -> str | None:
    """The `cf-ray` header when it is well formed, else None: a remote string is never kept raw."""
    return value if value is not None and CF_RAY.fullmatch(value) else None


def data_centre(cf_ray: str | None) -> str:
    """The IATA code of the Cloudflare data centre that answered, or "unknown" (no or malformed cf-ray)."""
    match = CF_RAY.fullmatch(cf_ray or "")
    return match.group(1) if match else UNKNOWN_DATA_CENTRE


def classify(status: int, headers: urllib3.HTTPHeaderDict) -> tuple[str, str | None]:
    """(outcome, cf-cache-status) for one response; see reference §2.1 for the table."""
    cache_status = (headers.get("cf-cache-status") or "").upper() or None
    if (headers.get("cf-mitigated") or "").lower() == "challenge":
        return "challenge", cache_status
    if status >= 400:
        return "failed", cache_status
    if cache_status in SERVED_FROM_CACHE:
        return "warm", cache_status
    if cache_status in FILLED:
        return "filled", cache_status
    return "not-cacheable", cache_status  # BYPASS, DYNAMIC, NONE/UNKNOWN or no header at all


class SeenUrls:
    """Set of URLs seen, stored as 64-bit hashes in an open-addressing array (8-16 bytes per URL).

    A Python set of 1M URL strings costs ~150 MB; this costs ~16 MB, which keeps a million-URL
    sitemap within the memory budget. A false duplicate needs a 64-bit hash collision.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._slots = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def add(self, url: str) -> bool:
        """True if `url` is new (and now remembered), False if it was seen before."""
        key = hash(url) & 0xFFFFFFFFFFFFFFFF or 1
        slots, mask = self._slots, self._mask
        index = key & mask
        while True:
            current = slots[index]
            if current == key:
                return False
            if current == 0:
                slots[index] = key
                self._count += 1
                if self._count * 2 > mask:
                    self._grow()
                return True
            index = (index + 1) & mask

    def __len__(self) -> int:
        return self._count

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        slots, mask = self._slots, self._mask
        for key in old:
            if key:
                index = key & mask
                while slots[index]:
                    index = (index + 1) & mask
                slots[index] = key


def plan_urls(
    urls: Iterable[str | SitemapEntry],
    *,
    allowed_hosts: Iterable[str],
    bypass_paths: Iterable[str],
    dropped: DroppedUrls,
    limit: int | None = None,
) -> Iterator[str]:
    """URLs the URL policy allows, normalised, without duplicates and BYPASS_PATHS; stop after `limit`.

    Each URL left out is counted in `dropped` with its reason (and its sitemap, for an entry).
    """
    policy = UrlPolicy(allowed_hosts)
    bypass = tuple(bypass_paths)
    seen = SeenUrls()
    emitted = 0
    for listed in urls:
        if limit is not None and emitted >= limit:
            return
        text, sitemap = (listed, None) if isinstance(listed, str) else (listed.url, listed.sitemap)
        try:
            url = policy.check(text)  # a sitemap entry is already in the normal form: a regex match
        except UrlRefused as refused:
            dropped.refused(refused, text, sitemap=sitemap)
            continue
        if bypass and _path(url).startswith(bypass):
            dropped.add("bypass-path", url, sitemap=sitemap)
            continue
        if not seen.add(url):
            dropped.add("duplicate", url, sitemap=sitemap)
            continue
        emitted += 1
        yield url


def _path(url: str) -> str:
    """The path of a URL in the URL policy's normal form (`scheme://host[:port]/path?query`, no
    fragment): what `urlsplit(url).path` gives, at a tenth of its cost (it runs once per URL)."""
    start = url.find("/", url.find("://") + 3)
    if start < 0:
        return "/"
    end = url.find("?", start)
    return url[start:] if end < 0 else url[start:end]


@dataclass
class WarmOptions:
    concurrency: int = 8
    rate: float = 20.0
    timeout: float = 30.0
    retries: int = 2
    max_retry_wait: float = 30.0
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 32 << 20  # WARM_MAX_BYTES: read and discard this much of a body; more = "truncated"


@dataclass
class WarmSummary:
    requested: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    cache_statuses: Counter[str] = field(default_factory=Counter)
    data_centres: Counter[str] = field(default_factory=Counter)  # responses per cf-ray data centre
    slowest: list[WarmResult] = field(default_factory=list)
    failures: list[WarmResult] = field(default_factory=list)
    interrupted: bool = False

    KEEP = 10

    def add(self, result: WarmResult) -> None:
        self.requested += 1
        self.outcomes[result.outcome] += 1
        self.cache_statuses[result.cache_status or "(none)"] += 1
        if result.http_status is not None:  # no response (refused, timed out): no data centre answered
            self.data_centres[data_centre(result.cf_ray)] += 1
        if result.outcome in ("failed", "challenge") and len(self.failures) < 100:
            self.failures.append(result)
        if len(self.slowest) < self.KEEP or result.elapsed_ms > self.slowest[-1].elapsed_ms:
            self.slowest.append(result)
            self.slowest.sort(key=lambda r: -r.elapsed_ms)
            del self.slowest[self.KEEP :]

    @property
    def failure_rate(self) -> float:
        bad = self.outcomes["failed"] + self.outcomes["challenge"]
        return bad / self.requested if self.requested else 0.0


class Warmer:
    """Requests URLs with `concurrency` worker threads; results come back on the caller's thread."""

    def __init__(
        self,
        options: WarmOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.clock = clock
        self.wall_clock = wall_clock  # only for Retry-After given as an HTTP date
        self.pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=options.concurrency,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=min(10.0, options.timeout), read=options.timeout),
        )
        self.limiter = RateLimiter(options.rate, clock=clock, sleep=sleep)
        self.policy = UrlPolicy(options.allowed_hosts)
        self._in_flight: set[urllib3.BaseHTTPResponse] = set()
        self._shut: set[urllib3.BaseHTTPResponse] = set()  # in flight, and cut by _abort_in_flight
        self._in_flight_lock = threading.Lock()

    def fetch_one(self, url: str, *, stop: threading.Event | None = None) -> WarmResult:
        """GET `url` anonymously, reading the body to the end (Cloudflare fills on full reads).

        The timeout is for the whole response: a body still arriving after it is cut off and the
        URL counted failed ("timed out"), not retried. A body over `max_body_bytes` is read that far
        and counted "truncated". A stopped run shuts the socket (see run()).
        """
        try:
            target = self.policy.check(url)
        except UrlRefused as refused:
            return WarmResult(url, "failed", error=f"{refused}; not requested")
        attempts = 0
        while True:
            attempts += 1
            self.limiter.wait()
            started = self.clock()
            try:
                response = self.pool.request("GET", target, headers=WARM_HEADERS, preload_content=False, redirect=False)
                size, cut = self._drain(response, deadline=started + self.options.timeout)
            except urllib3.exceptions.HTTPError as exc:
                error = INTERRUPTED if stop and stop.is_set() else _describe(exc)
                result = WarmResult(
                    url, "failed", elapsed_ms=(self.clock() - started) * 1000, attempts=attempts, error=error
                )
                if attempts <= self.options.retries and not (stop and stop.is_set()):
                    self._pause(self._backoff(attempts), stop)
                    continue
                return result
            elapsed = (self.clock() - started) * 1000
            status = response.status
            headers = response.headers
            if cut in ("timed out", INTERRUPTED):
                why = INTERRUPTED if cut == INTERRUPTED else f"timed out: over {self.options.timeout:g} s in all"
                return WarmResult(
                    url,
                    "failed",
                    http_status=status,
                    elapsed_ms=round(elapsed, 2),
                    bytes=size,
                    attempts=attempts,
                    error=why,
                )
            if status in RETRY_STATUSES and attempts <= self.options.retries and not (stop and stop.is_set()):
                delay = retry_after_seconds(headers.get("retry-after"), now=self.wall_clock())
                if delay is None:  # "Retry-After: 0" means now, not "use the backoff"
                    delay = self._backoff(attempts)
                if delay <= self.options.max_retry_wait:
                    self._pause(delay, stop)
                    continue
            outcome, cache_status = classify(status, headers)
            if cut == "truncated" and outcome != "failed":
                outcome = "truncated"
            return WarmResult(
                url,
                outcome,
                http_status=status,
                cache_status=cache_status,
                age=_int_or_none(headers.get("age")),
                cf_ray=valid_cf_ray(headers.get("cf-ray")),
                elapsed_ms=round(elapsed, 2),
                bytes=size,
                attempts=attempts,
                error=f"HTTP {status}" if outcome == "failed" else None,
            )

    def _drain(self, response: urllib3.BaseHTTPResponse, *, deadline: float) -> tuple[int, str | None]:
        """Read and discard the body: (bytes read, None or why reading ended early).

        `read1` returns what has arrived, so a body trickling a byte at a time comes back to the
        deadline check after each read; a silent server is cut by the socket read timeout.
        """
        size = 0
        cut: str | None = None
        with self._in_flight_lock:
            self._in_flight.add(response)
        try:
            while True:
                chunk = response.read1(CHUNK, decode_content=False)
                if not chunk:
                    break
                size += len(chunk)
                if size >= self.options.max_body_bytes:
                    cut = "truncated"
                elif self.clock() > deadline:
                    cut = "timed out"
                if cut:
                    break
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(response)
                if response in self._shut:  # the end we saw was the socket shut by a stop
                    self._shut.discard(response)
                    cut = INTERRUPTED
            if cut:
                response.close()  # the rest of the body is not wanted: the connection cannot be reused
            response.release_conn()
        return size, cut

    def _abort_in_flight(self) -> None:
        """Shut the sockets of downloads in progress, so a stop does not wait for them to end."""
        with self._in_flight_lock:
            responses = list(self._in_flight - self._shut)
            self._shut.update(responses)
        for response in responses:
            with contextlib.suppress(OSError, ValueError, RuntimeError):  # finished meanwhile: nothing to cut
                response.shutdown()

    def run(
        self,
        urls: Iterable[str],
        *,
        stop: threading.Event,
        on_result: Callable[[WarmResult], None],
    ) -> None:
        """Warm `urls`; once `stop` is set, start nothing new and end the requests in flight.

        Downloads in flight get FINISH_GRACE seconds to finish (their results are kept), then
        their sockets are shut. A request that cannot be cut (still connecting or waiting for
        headers) is left behind after STOP_GRACE, so a stop ends the run whatever a server does.
        """
        todo: queue.Queue[str | None] = queue.Queue(maxsize=self.options.concurrency * 4)
        done: queue.Queue[WarmResult | BaseException] = queue.Queue()
        workers = [
            threading.Thread(target=self._work, args=(todo, done, stop), daemon=True, name=f"warm-{i}")
            for i in range(self.options.concurrency)
        ]
        feeder_error: list[BaseException] = []
        feeder = threading.Thread(target=self._feed, args=(urls, todo, stop, feeder_error), daemon=True)
        for thread in workers:
            thread.start()
        feeder.start()
        finished_workers = 0
        stopped_at: float | None = None
        while finished_workers < len(workers):
            if stop.is_set():
                stopped_at = self.clock() if stopped_at is None else stopped_at
                waited = self.clock() - stopped_at
                if waited > STOP_GRACE:
                    break  # a worker still connecting or awaiting headers is left behind (daemon thread)
                if waited > FINISH_GRACE:
                    self._abort_in_flight()
            try:
                item = done.get(timeout=0.2)  # the timeout lets signal handlers run
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                finished_workers += 1
                continue
            on_result(item)
        if stopped_at is None:
            feeder.join()
        else:  # a stopped feeder may sit in a sitemap read: it shares the same grace
            feeder.join(timeout=max(0.0, STOP_GRACE - (self.clock() - stopped_at)))
        if feeder_error:
            raise feeder_error[0]

    def _feed(
        self, urls: Iterable[str], todo: queue.Queue[str | None], stop: threading.Event, error: list[BaseException]
    ) -> None:
        try:
            for url in urls:
                while not stop.is_set():
                    try:
                        todo.put(url, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except BaseException as exc:  # a sitemap that fails mid-stream ends the feed; workers drain
            error.append(exc)
        finally:
            for _ in range(self.options.concurrency):
                todo.put(None)

    def _work(self, todo: queue.Queue[str | None], done: queue.Queue, stop: threading.Event) -> None:
        while True:
            url = todo.get()
            if url is None:
                done.put(StopIteration())
                return
            if stop.is_set():
                continue  # drain without starting new requests
            try:
                result = self.fetch_one(url, stop=stop)
                if result.error != INTERRUPTED:  # a download cut by the stop was not a try: no result
                    done.put(result)
            except Exception as exc:  # never lose the worker: record the URL as failed
                done.put(WarmResult(url, "failed", error=_describe(exc)))

    def _backoff(self, attempt: int) -> float:
        return min(self.options.max_retry_wait, 0.5 * (2 ** (attempt - 1)))

    def _pause(self, seconds: float, stop: threading.Event | None) -> None:
        if stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None) or exc
    text = str(inner)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return f"{type(inner).__name__}: {text}"[:200]


class WarmResultStore:
    """Writes results to `warm_results` in batches (one transaction per batch), and each URL's latest
    result to `warm_latest`, which outlives the runs retention.py prunes."""

    BATCH = 200

    def __init__(self, state: StateDB, *, run_id: str, now: Callable[[], datetime], pass_no: int = 1) -> None:
        self.state = state
        self.run_id = run_id
        self.now = now
        self.pass_no = pass_no
        self._pending: list[tuple[object, ...]] = []

    def add(self, result: WarmResult) -> None:
        self._pending.append(
            (
                self.run_id,
                self.pass_no,
                result.url,
                result.outcome,
                result.http_status,
                result.cache_status,
                result.age,
                result.cf_ray,
                result.elapsed_ms,
                result.bytes,
                result.attempts,
                result.error,
                iso(self.now()),
            )
        )
        if len(self._pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        with self.state.transaction() as conn:
            conn.executemany(
                "INSERT INTO warm_results(run_id, pass, url, outcome, http_status, cache_status, age, cf_ray,"
                " elapsed_ms, bytes, attempts, error, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                self._pending,
            )
            conn.executemany(
                "INSERT INTO warm_latest(run_id, url, outcome, http_status, cache_status, cf_ray, at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(url) DO UPDATE SET run_id=excluded.run_id,"
                " outcome=excluded.outcome, http_status=excluded.http_status, cache_status=excluded.cache_status,"
                " cf_ray=excluded.cf_ray, at=excluded.at",
                [(row[0], *row[2:6], row[7], row[12]) for row in self._pending],
            )
        self._pending.clear()


def warmed_urls(state: StateDB, run_id: str, *, page: int = 1000) -> Iterator[str]:
    """URLs a run's first pass fetched successfully, paged so memory stays flat."""
    last_id = 0
    while True:
        rows = state.execute(
            "SELECT id, url FROM warm_results WHERE run_id=? AND pass=1 AND outcome IN ('warm','filled','not-cacheable')"
            " AND id > ? ORDER BY id LIMIT ?",
            (run_id, last_id, page),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield row[1]
        last_id = rows[-1][0]


def options_from_settings(settings: Settings, **overrides: object) -> WarmOptions:
    options = WarmOptions(
        concurrency=settings["WARM_CONCURRENCY"],
        rate=settings["WARM_RATE"],
        timeout=settings["WARM_TIMEOUT"],
        allowed_hosts=tuple(settings.allowed_hosts),
        max_body_bytes=settings["WARM_MAX_BYTES"],
    )
    for name, value in overrides.items():
        if value is not None:
            setattr(options, name, value)
    return options


def warm_urls(
    urls: Iterable[str],
    *,
    options: WarmOptions,
    stop: threading.Event,
    store: WarmResultStore | None = None,
    on_result: Callable[[WarmResult], None] | None = None,
) -> WarmSummary:
    """Warm already-planned URLs; record each result in `store`; return the summary."""
    summary = WarmSummary()

    def handle_one(result: WarmResult) -> None:
        summary.add(result)
        if store is not None:
            store.add(result)
        if on_result is not None:
            on_result(result)

    try:
        Warmer(options).run(urls, stop=stop, on_result=handle_one)
    finally:
        if store is not None:
            store.flush()
    summary.interrupted = stop.is_set()
    return summary


def rewarm(
    urls: Iterable[str],
    *,
    settings: Settings,
    state: StateDB,
    run_id: str,
    now: Callable[[], datetime],
    stop: threading.Event,
) -> WarmSummary | None:
    """Warm URLs another job just changed (purged, imported), with the usual filters; None if none qualify."""
    planned = list(
        plan_urls(
            urls, allowed_hosts=settings.allowed_hosts, bypass_paths=settings["BYPASS_PATHS"], dropped=DroppedUrls()
        )
    )
    if not planned:
        return None
    store = WarmResultStore(state, run_id=run_id, now=now)
    return warm_urls(planned, options=options_from_settings(settings), stop=stop, store=store)
