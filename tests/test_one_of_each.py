"""One Retry-After parser, one token bucket, one way to build the Cloudflare client (issue 12 item 2).

The warmer and the purge client once parsed Retry-After each their own way (the purge client took
no HTTP date, the warmer no urllib3) and paced with two limiter classes; both scripts built the
client from the settings by hand. Each test here puts both users side by side on real loopback
servers with injected time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from edgecron.cloudflare import CloudflareClient
from edgecron.config import Secret, Settings, load_settings
from edgecron.errors import ConfigError
from edgecron.http import retry_after_seconds
from edgecron.ratelimit import TokenBucket
from edgecron.warm import Warmer, WarmOptions
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)  # long past by the time this runs: the clock is injected
ZONE = "0123456789abcdef0123456789abcdef"
PURGE_PATH = f"/client/v4/zones/{ZONE}/purge_cache"


def http_date(offset_s: float) -> str:
    return format_datetime(NOW + timedelta(seconds=offset_s), usegmt=True)


@pytest.mark.parametrize(
    "value,seconds",
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),  # now, not "use the backoff"
        (http_date(3), 3.0),  # measured from the injected now, not from the real clock
        (http_date(-30), 0.0),
        ("1.5", None),  # not delta-seconds (RFC 9110: a whole number)
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_the_one_parser(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW.timestamp()) == seconds


def answers(*first: Response) -> Callable[[Request], Response]:
    """A handler giving `first` in order, then the endpoint's success answer."""
    queue = list(first)

    def handle(request: Request) -> Response:
        if queue:
            return queue.pop(0)
        if request.path == PURGE_PATH:
            return Response('{"success": true, "errors": [], "result": {"id": "r1"}}', content_type="application/json")
        return Response("ok", headers={"cf-cache-status": "MISS"})

    return handle


def warm_wait(httpserver: HTTPServer, retry_after: str) -> float | None:
    httpserver.expect_request("/p").respond_with_handler(answers(Response("", 503, {"Retry-After": retry_after})))
    pauses: list[float | None] = []
    stop = threading.Event()
    stop.wait = lambda timeout=None: bool(pauses.append(timeout))  # type: ignore[method-assign,func-returns-value]  # record, do not wait
    options = WarmOptions(allowed_hosts=("localhost", "127.0.0.1"), rate=0, retries=1, max_retry_wait=60)
    result = Warmer(options, wall_clock=NOW.timestamp).fetch_one(httpserver.url_for("/p"), stop=stop)
    assert result.attempts == 2 and result.http_status == 200
    return pauses[0]


def purge_wait(httpserver: HTTPServer, retry_after: str) -> float:
    httpserver.expect_request(PURGE_PATH, method="POST").respond_with_handler(
        answers(Response('{"success": false, "errors": []}', 429, {"Retry-After": retry_after}))
    )
    sleeps: list[float] = []
    client = CloudflareClient(
        api_url=httpserver.url_for("/client/v4"),
        zone_id=ZONE,
        token=Secret("t0ken-for-tests"),
        clock=lambda: 0.0,
        sleep=sleeps.append,
        wall_clock=NOW.timestamp,
    )
    outcomes = list(client.purge("url", ["https://www.example.com/a"]))
    assert [o.ok for o in outcomes] == [True]
    return sleeps[0]


@pytest.mark.parametrize("value,seconds", [("7", 7.0), ("0", 0.0), (http_date(5), 5.0), (http_date(-5), 0.0)])
def test_warmer_and_purge_client_wait_what_the_header_says(httpserver: HTTPServer, value: str, seconds: float) -> None:
    assert warm_wait(httpserver, value) == seconds
    httpserver.clear()
    assert purge_wait(httpserver, value) == seconds


def test_a_malformed_header_falls_back_to_each_ones_own_backoff(httpserver: HTTPServer) -> None:
    assert warm_wait(httpserver, "soon") == 0.5  # the warmer's first backoff step
    httpserver.clear()
    assert purge_wait(httpserver, "soon") == 1.0  # the purge client's default wait for URL purges


# --- the token bucket -------------------------------------------------------------------------


def test_one_bucket_queues_threads_in_order_without_handing_out_a_slot_twice() -> None:
    bucket = TokenBucket(4, 1, clock=lambda: 100.0)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            wait = bucket.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == [i / 4 for i in range(400)]  # 400 distinct slots, 0.25 s apart


def test_a_drained_bucket_waits_a_full_refill() -> None:
    now = [0.0]
    bucket = TokenBucket(5 / 60, 25, clock=lambda: now[0])
    assert bucket.reserve(1) == 0.0
    bucket.drain()  # a 429: Cloudflare's bucket is empty whatever ours thinks
    assert bucket.reserve(1) == pytest.approx(12.0)


# --- the client from the settings ---------------------------------------------------------------


def settings(tmp_path: Path, **keys: str) -> Settings:
    environ = {"STATE_DIR": str(tmp_path), "CF_API_TOKEN": "t0ken-for-tests", "CF_ZONE_ID": ZONE, **keys}
    return load_settings(environ={k: v for k, v in environ.items() if v}, env_file=tmp_path / "none.env")


def test_the_client_from_the_settings(tmp_path: Path) -> None:
    cfg = settings(tmp_path, CF_API_URL="http://127.0.0.1:9/client/v4", CF_PLAN="enterprise", CF_PURGE_BATCH="250")
    client = CloudflareClient.from_settings(cfg, max_wait=12)
    assert client.endpoint == f"http://127.0.0.1:9/client/v4/zones/{ZONE}/purge_cache"
    assert (client.batch_size("url"), client.batch_size("tag"), client.max_wait) == (250, 100, 12)


@pytest.mark.parametrize("missing", ["CF_ZONE_ID", "CF_API_TOKEN"])
def test_the_client_from_incomplete_settings_names_the_key(tmp_path: Path, missing: str) -> None:
    with pytest.raises(ConfigError, match=f"{missing} is not set"):
        CloudflareClient.from_settings(settings(tmp_path, **{missing: ""}))
