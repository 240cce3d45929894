"""The warm engine in-process: classification, planning, de-duplication, pacing and retries.

HTTP goes to real loopback servers; only time is injected (a fake clock for the rate limiter, and an
Event subclass that records the pauses the warmer asks for instead of sleeping through them).
"""

from __future__ import annotations

import gzip
import socket
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import urllib3
from edgecron.dropped import DroppedUrls
from edgecron.ratelimit import RateLimiter
from edgecron.state import open_state
from edgecron.warm import (
    SeenUrls,
    Warmer,
    WarmOptions,
    WarmResultStore,
    classify,
    data_centre,
    plan_urls,
    warm_urls,
    warmed_urls,
)
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LOOPBACK = ("localhost", "127.0.0.1")  # the hosts of the httpserver fixtures, for the URL policy


class RecordingStop(threading.Event):
    """A stop event that records each pause instead of waiting it out."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(timeout if timeout is not None else -1)
        return self.is_set()


class Sequence:
    def __init__(self, *responses: tuple[int, dict[str, str]]) -> None:
        self.responses = list(responses)
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        self.calls += 1
        status, headers = self.responses.pop(0) if self.responses else (200, {"cf-cache-status": "MISS"})
        return Response("x", status=status, headers=headers)


def headers(**values: str) -> urllib3.HTTPHeaderDict:
    return urllib3.HTTPHeaderDict({k.replace("_", "-"): v for k, v in values.items()})


# --- classify ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,hdrs,expected",
    [
        (200, {"cf_cache_status": "HIT"}, ("warm", "HIT")),
        (200, {"cf_cache_status": "revalidated"}, ("warm", "REVALIDATED")),
        (200, {"cf_cache_status": "UPDATING"}, ("warm", "UPDATING")),
        (200, {"cf_cache_status": "STALE"}, ("warm", "STALE")),
        (200, {"cf_cache_status": "MISS"}, ("filled", "MISS")),
        (200, {"cf_cache_status": "EXPIRED"}, ("filled", "EXPIRED")),
        (200, {"cf_cache_status": "BYPASS"}, ("not-cacheable", "BYPASS")),
        (200, {"cf_cache_status": "DYNAMIC"}, ("not-cacheable", "DYNAMIC")),
        (200, {"cf_cache_status": "NONE"}, ("not-cacheable", "NONE")),
        (200, {}, ("not-cacheable", None)),
        (403, {"cf_mitigated": "challenge"}, ("challenge", None)),
        (200, {"cf_mitigated": "Challenge", "cf_cache_status": "HIT"}, ("challenge", "HIT")),
        (404, {"cf_cache_status": "HIT"}, ("failed", "HIT")),
        (500, {}, ("failed", None)),
        (301, {"cf_cache_status": "HIT"}, ("warm", "HIT")),
    ],
)
def test_classify(status: int, hdrs: dict[str, str], expected: tuple[str, str | None]) -> None:
    assert classify(status, headers(**hdrs)) == expected


# --- plan_urls and SeenUrls --------------------------------------------------------------------


def test_plan_urls_filters_and_counts() -> None:
    dropped = DroppedUrls()
    urls = [
        "https://www.example.com/a",
        "https://WWW.EXAMPLE.COM/b",  # host compared case-insensitively
        "https://www.example.com/a",  # duplicate
        "https://evil.example/a",
        "ftp://www.example.com/file",
        "https://www.example.com/admin/users",
        "https://www.example.com/cart",
        "https://www.example.com/a?page=2",  # a distinct cache key
        "https://www.example.com/c",
    ]
    planned = list(
        plan_urls(urls, allowed_hosts=["www.example.com"], bypass_paths=["/admin", "/cart"], dropped=dropped)
    )
    assert planned == [
        "https://www.example.com/a",
        "https://www.example.com/b",  # the URL policy's normal form is what gets requested
        "https://www.example.com/a?page=2",
        "https://www.example.com/c",
    ]
    assert dropped.counts == Counter({"off-host": 1, "invalid": 1, "bypass-path": 2, "duplicate": 1})


def test_plan_urls_limit_stops_reading_the_source() -> None:
    pulled = []

    def source():  # type: ignore[no-untyped-def]
        for i in range(1000):
            pulled.append(i)
            yield f"https://www.example.com/p{i}"

    planned = list(
        plan_urls(source(), allowed_hosts=["www.example.com"], bypass_paths=[], dropped=DroppedUrls(), limit=3)
    )
    assert len(planned) == 3
    assert len(pulled) <= 4  # lazily: a million-URL sitemap is not read to warm three


def test_seen_urls_has_no_false_negatives_over_200k() -> None:
    seen = SeenUrls(capacity=16)
    urls = [f"https://www.example.com/blog/post-{i}?utm={i % 7}" for i in range(200_000)]
    assert all(seen.add(url) for url in urls)  # first sight: always new (no false duplicates)
    assert len(seen) == 200_000
    assert not any(seen.add(url) for url in urls)  # second sight: always known
    assert len(seen) == 200_000
    # grew from 16 slots, and stays compact: 8-byte slots, at most half full, no strings kept
    assert sys.getsizeof(seen._slots) <= 200_000 * 8 * 4 + 1024


# --- RateLimiter -------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_rate_limiter_spaces_starts() -> None:
    fake = FakeTime()
    limiter = RateLimiter(4, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(5):
        limiter.wait()
        starts.append(fake.now)
    assert fake.sleeps == [0.25] * 4
    assert [round(s - starts[0], 6) for s in starts] == [0, 0.25, 0.5, 0.75, 1.0]


def test_rate_limiter_does_not_bank_idle_time() -> None:
    fake = FakeTime()
    limiter = RateLimiter(2, clock=fake.clock, sleep=fake.sleep)
    limiter.wait()
    fake.now += 60  # idle for a minute: no burst of 120 requests afterwards
    limiter.wait()
    limiter.wait()
    assert fake.sleeps == [0.5]


def test_rate_zero_is_unlimited() -> None:
    fake = FakeTime()
    limiter = RateLimiter(0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(100):
        limiter.wait()
    assert fake.sleeps == []


# --- cf-ray: which data centre answered -------------------------------------------------------


@pytest.mark.parametrize(
    "ray,expected",
    [
        ("8c1f2a3b4c5d6e7f-FRA", "FRA"),
        ("abc-AMS", "AMS"),
        (None, "unknown"),
        ("", "unknown"),
        ("8c1f2a3b4c5d6e7f", "unknown"),  # no data centre
        ("8c1f2a3b4c5d6e7f-fra", "unknown"),  # IATA codes are sent upper case
        ("8c1f2a3b4c5d6e7f-FRANKFURT", "unknown"),
        ("8c1f2a3b4c5d6e7f-\x1b[2J", "unknown"),
        ("8c1f2a3b4c5d6e7f-FRA\nX", "unknown"),
        ("-FRA", "unknown"),
        ("zz1f2a3b4c5d6e7f-FRA", "unknown"),
        ("f" * 33 + "-FRA", "unknown"),
    ],
)
def test_data_centre_is_the_validated_cf_ray_suffix(ray: str | None, expected: str) -> None:
    assert data_centre(ray) == expected


def test_summary_counts_responses_per_data_centre_and_keeps_no_hostile_ray(httpserver: HTTPServer) -> None:
    rays = {"/a": "8c1f2a3b4c5d6e7f-FRA", "/b": "9d2e3f4a5b6c7d8e-FRA", "/c": "0123456789abcdef-AMS"}
    for path, ray in rays.items():
        httpserver.expect_request(path).respond_with_data("x", headers={"cf-cache-status": "MISS", "cf-ray": ray})
    httpserver.expect_request("/hostile").respond_with_data("x", headers={"cf-ray": "\x1b]0;owned\x07-FRA"})
    httpserver.expect_request("/none").respond_with_data("x", headers={"cf-cache-status": "MISS"})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    urls = [httpserver.url_for(p) for p in (*rays, "/hostile", "/none")] + [dead]
    results: list[str | None] = []
    summary = warm_urls(
        urls,
        options=WarmOptions(allowed_hosts=LOOPBACK, rate=0, retries=0),
        stop=threading.Event(),
        on_result=lambda r: results.append(r.cf_ray),
    )
    # the refused connection got no answer, so no data centre is counted for it
    assert summary.data_centres == Counter({"FRA": 2, "AMS": 1, "unknown": 2})
    assert sorted(r for r in results if r) == sorted(rays.values())  # the hostile value is not kept


# --- fetch_one against a real server -----------------------------------------------------------


def test_fetch_reads_the_whole_body_and_sends_only_safe_headers(httpserver: HTTPServer) -> None:
    body = b"x" * 300_000
    httpserver.expect_request("/big.css").respond_with_data(
        body, headers={"cf-cache-status": "HIT", "Age": "12", "cf-ray": "abc-AMS"}
    )
    result = Warmer(WarmOptions(allowed_hosts=LOOPBACK, rate=0)).fetch_one(httpserver.url_for("/big.css"))
    assert (result.outcome, result.http_status, result.bytes, result.age, result.cf_ray) == (
        "warm",
        200,
        300_000,
        12,
        "abc-AMS",
    )
    [(request, _)] = httpserver.log
    assert set(request.headers.keys()) <= {"Host", "User-Agent", "Accept", "Accept-Encoding"}


def test_fetch_counts_compressed_bytes_on_the_wire(httpserver: HTTPServer) -> None:
    packed = gzip.compress(b"a" * 10_000)
    httpserver.expect_request("/z").respond_with_data(packed, headers={"Content-Encoding": "gzip"})
    result = Warmer(WarmOptions(allowed_hosts=LOOPBACK, rate=0)).fetch_one(httpserver.url_for("/z"))
    assert result.bytes == len(packed)


def test_fetch_does_not_follow_redirects(httpserver: HTTPServer, httpserver_ipv4: HTTPServer) -> None:
    httpserver.expect_request("/moved").respond_with_data(
        "", status=301, headers={"Location": httpserver_ipv4.url_for("/x"), "cf-cache-status": "HIT"}
    )
    result = Warmer(WarmOptions(allowed_hosts=LOOPBACK, rate=0)).fetch_one(httpserver.url_for("/moved"))
    assert (result.http_status, result.outcome) == (301, "warm")
    assert httpserver_ipv4.log == []


def test_fetch_refuses_a_host_outside_allowed_hosts(httpserver_ipv4: HTTPServer) -> None:
    warmer = Warmer(WarmOptions(rate=0, allowed_hosts=("www.example.com",)))
    result = warmer.fetch_one(httpserver_ipv4.url_for("/x"))
    assert result.outcome == "failed" and "ALLOWED_HOSTS" in (result.error or "")
    assert httpserver_ipv4.log == []


@pytest.mark.parametrize(
    "responses,pauses,attempts,outcome",
    [
        ([(429, {"Retry-After": "1"})], [1.0], 2, "filled"),
        ([(429, {"Retry-After": "0"})], [0.0], 2, "filled"),
        ([(503, {}), (503, {})], [0.5, 1.0], 3, "filled"),
        ([(502, {}), (504, {}), (503, {})], [0.5, 1.0], 3, "failed"),
        ([(429, {"Retry-After": "120"})], [], 1, "failed"),
        ([(500, {})], [], 1, "failed"),
    ],
    ids=["retry-after-1", "retry-after-0", "503-twice", "gives-up", "too-long", "500-not-retried"],
)
def test_retries(  # type: ignore[no-untyped-def]
    httpserver: HTTPServer, responses, pauses: list[float], attempts: int, outcome: str
) -> None:
    handler = Sequence(*responses)
    httpserver.expect_request("/p").respond_with_handler(handler)
    stop = RecordingStop()
    result = Warmer(WarmOptions(allowed_hosts=LOOPBACK, rate=0, retries=2, max_retry_wait=30)).fetch_one(
        httpserver.url_for("/p"), stop=stop
    )
    assert (result.attempts, result.outcome) == (attempts, outcome)
    assert handler.calls == attempts
    assert stop.pauses == pauses


def test_retry_after_as_an_http_date(httpserver: HTTPServer) -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=3), usegmt=True)
    httpserver.expect_request("/p").respond_with_handler(Sequence((503, {"Retry-After": when})))
    stop = RecordingStop()
    warmer = Warmer(WarmOptions(allowed_hosts=LOOPBACK, rate=0), wall_clock=now.timestamp)
    result = warmer.fetch_one(httpserver.url_for("/p"), stop=stop)
    assert result.attempts == 2
    assert stop.pauses == [3.0]  # the date is 3 s after the injected "now"


def test_connection_refused_and_timeouts_are_results_not_exceptions(httpserver: HTTPServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    stop = RecordingStop()
    refused = Warmer(WarmOptions(allowed_hosts=LOOPBACK, rate=0, retries=1)).fetch_one(dead, stop=stop)
    assert (refused.outcome, refused.error, refused.attempts) == ("failed", "connection refused", 2)

    def slow(request: Request) -> Response:
        time.sleep(0.5)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    late = Warmer(WarmOptions(allowed_hosts=LOOPBACK, rate=0, retries=0, timeout=0.1)).fetch_one(
        httpserver.url_for("/slow")
    )
    assert (late.outcome, late.error) == ("failed", "timed out")
    # The server answers the abandoned request after the test: let it, or its log entry lands in the
    # next test's log (the server is shared by the tests of one process).
    deadline = time.monotonic() + 5
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.05)


# --- run, stop and store -----------------------------------------------------------------------


@pytest.mark.both_backends
def test_warm_urls_stores_every_result(httpserver: HTTPServer, state_db: Path | str) -> None:
    for i in range(30):
        httpserver.expect_request(f"/p{i}").respond_with_data("x", headers={"cf-cache-status": "MISS"})
    urls = [httpserver.url_for(f"/p{i}") for i in range(30)] + [httpserver.url_for("/nope")]
    with open_state(state_db) as state:
        store = WarmResultStore(state, run_id="r1", now=lambda: T0)
        store.BATCH = 7  # several batches plus a final flush
        summary = warm_urls(
            urls,
            options=WarmOptions(allowed_hosts=LOOPBACK, concurrency=4, rate=0),
            stop=threading.Event(),
            store=store,
        )
        rows = state.execute("SELECT url, outcome, at FROM warm_results WHERE run_id='r1'").fetchall()
        again = list(warmed_urls(state, "r1", page=4))
    assert summary.requested == 31
    assert summary.outcomes == Counter({"filled": 30, "failed": 1})
    assert summary.failure_rate == pytest.approx(1 / 31)
    assert len(rows) == 31 and {r["at"] for r in rows} == {"2026-11-28T12:00:00.000+00:00"}
    assert sorted(again) == sorted(urls[:30])  # the failed URL is not re-verified


def test_stop_set_before_the_run_requests_nothing(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/p").respond_with_data("x")
    stop = threading.Event()
    stop.set()
    summary = warm_urls([httpserver.url_for("/p")] * 5, options=WarmOptions(allowed_hosts=LOOPBACK, rate=0), stop=stop)
    assert summary.requested == 0 and summary.interrupted
    assert httpserver.log == []


def test_source_error_mid_stream_keeps_finished_results(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/p").respond_with_data("x", headers={"cf-cache-status": "HIT"})
    seen = []

    def source():  # type: ignore[no-untyped-def]
        yield httpserver.url_for("/p")
        raise ValueError("sitemap broke")

    with pytest.raises(ValueError, match="sitemap broke"):
        warm_urls(
            source(), options=WarmOptions(allowed_hosts=LOOPBACK, rate=0), stop=threading.Event(), on_result=seen.append
        )
    assert [r.outcome for r in seen] == ["warm"]
