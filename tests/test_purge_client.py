"""The Cloudflare client and the outbox sender, against the emulator over loopback."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from edgecron.cloudflare import CloudflareClient, PurgeAuthError
from edgecron.config import Secret
from edgecron.errors import UpstreamUnavailable
from edgecron.outbox import PurgeOutbox
from edgecron.purge import send_outbox
from edgecron.ratelimit import TokenBucket
from edgecron.state import open_state

from demo.cloudflare_api import CloudflareEmulator

ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "s3cret-token-value"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def urls(n: int) -> list[str]:
    return [f"https://www.example.com/page/{i}" for i in range(n)]


class FakeTime:
    """Injected clock and sleep: waits are recorded, not slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def api():
    with CloudflareEmulator(token=TOKEN, zone=ZONE, plan="free") as emulator:
        yield emulator


def client_for(api: CloudflareEmulator, **kw) -> CloudflareClient:
    kw.setdefault("plan", api.plan)
    return CloudflareClient(api_url=api.base_url, zone_id=ZONE, token=Secret(kw.pop("token", TOKEN)), **kw)


def purged(api: CloudflareEmulator) -> Counter[str]:
    return Counter(url for p in api.snapshot()["purges"] for url in p["body"].get("files", []))


def send_all(state_db, client, values, *, kind="url"):
    with open_state(state_db) as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue(kind, values, source="test", now=NOW)
        report = send_outbox(outbox, client, run_id="r1", now=lambda: NOW, stop=threading.Event())
        return report, outbox.counts()


@pytest.mark.both_backends
def test_1000_urls_on_free_make_34_calls(api, state_db):
    client = client_for(api, batch_size=30)
    report, counts = send_all(state_db, client, urls(1000))
    snap = api.snapshot()
    assert snap["calls"] == 34 and snap["rejected"] == {}
    assert [len(p["body"]["files"]) for p in snap["purges"]] == [30] * 33 + [10]
    assert purged(api) == Counter(urls(1000))
    assert report.sent["url"] == 1000 and counts["pending"] == 0


def test_1000_urls_on_enterprise_batch_500_make_2_calls(state_db):
    with CloudflareEmulator(token=TOKEN, zone=ZONE, plan="enterprise") as api:
        send_all(state_db, client_for(api, batch_size=500), urls(1000))
        assert api.snapshot()["calls"] == 2
        assert purged(api) == Counter(urls(1000))


def test_batch_is_capped_by_the_plan(api):
    client = client_for(api, batch_size=500)  # free allows 100 URLs per request
    assert client.batch_size("url") == 100 and client.batch_size("everything") == 1


def test_too_many_halves_the_batch_and_keeps_the_smaller_size(api, state_db):
    api.set_max_files(30)  # the April 2025 report: URL purges still capped at 30
    client = client_for(api, batch_size=100)
    send_all(state_db, client, urls(200))
    sizes = [len(p["body"]["files"]) for p in api.snapshot()["purges"]]
    assert max(sizes) <= 30
    assert purged(api) == Counter(urls(200))  # each exactly once
    assert client.batch_size("url") == 25
    assert api.snapshot()["rejected"] == {"400": 2}  # 100 → 50 → 25, then no more refusals


@pytest.mark.both_backends
def test_invalid_item_is_isolated_and_held(api, state_db):
    values = urls(5)
    client = client_for(api)
    with open_state(state_db) as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue("url", [*values[:2], "/not-absolute", *values[2:]], source="import", now=NOW)
        report = send_outbox(outbox, client, run_id="r", now=lambda: NOW, stop=threading.Event())
        [item] = outbox.open_items()
        assert item.value == "/not-absolute" and item.held and "invalid URL" in (item.last_error or "")
        # held items wait for `outbox --retry`; a normal run does not send them again
        calls = api.snapshot()["calls"]
        send_outbox(outbox, client, run_id="r2", now=lambda: NOW, stop=threading.Event())
        assert api.snapshot()["calls"] == calls
    assert purged(api) == Counter(values)
    assert [v for _, v, _ in report.failed] == ["/not-absolute"]


def test_429_storm_waits_retry_after_and_loses_nothing(api, state_db):
    fake = FakeTime()
    api.throttle(count=6, retry_after=2)
    client = client_for(api, clock=fake.clock, sleep=fake.sleep)
    _, counts = send_all(state_db, client, urls(90))
    assert fake.sleeps.count(2.0) == 6
    assert purged(api) == Counter(urls(90))
    assert counts["pending"] == 0 and client.stats.rate_limited == 6


def test_retry_after_above_60_is_honoured_within_max_wait(api):
    fake = FakeTime()
    api.throttle(count=1, retry_after=90)
    client = client_for(api, clock=fake.clock, sleep=fake.sleep, max_wait=120)
    [outcome] = list(client.purge("url", urls(1)))
    assert outcome.ok and fake.sleeps == [90.0]


def test_retry_after_beyond_max_wait_gives_up_retry_safe(api, state_db):
    fake = FakeTime()
    api.throttle(count=1, retry_after=600)
    client = client_for(api, clock=fake.clock, sleep=fake.sleep, max_wait=300)
    report, counts = send_all(state_db, client, urls(10))
    assert isinstance(report.error, UpstreamUnavailable) and report.error.retry_safe
    assert "429" in report.error.message and fake.sleeps == []
    assert counts["pending"] == 10  # nothing lost: the batch is back to pending


@pytest.mark.both_backends
def test_5xx_on_every_second_call_still_finishes(api, state_db):
    fake = FakeTime()
    api.fail_every_nth(2, status=502)
    client = client_for(api, clock=fake.clock, sleep=fake.sleep)
    _, counts = send_all(state_db, client, urls(300))
    assert purged(api) == Counter(urls(300))
    assert counts["pending"] == 0 and client.stats.server_errors == 9
    assert set(fake.sleeps) == {1.0}  # first backoff step each time


@pytest.mark.both_backends
def test_api_down_raises_unavailable_after_backoff(state_db):
    fake = FakeTime()
    client = CloudflareClient(
        api_url="http://127.0.0.1:9/client/v4",
        zone_id=ZONE,
        token=Secret(TOKEN),
        clock=fake.clock,
        sleep=fake.sleep,
        timeout=2,
    )
    report, counts = send_all(state_db, client, urls(40))
    assert isinstance(report.error, UpstreamUnavailable)
    assert fake.sleeps == [1.0, 2.0, 4.0, 8.0]  # 5 attempts
    assert counts["pending"] == 40
    with open_state(state_db) as state:
        claimed = [i for i in PurgeOutbox(state).open_items() if i.attempts]
        assert len(claimed) == 30 and all("unavailable" in (i.last_error or "") for i in claimed)


@pytest.mark.parametrize(
    ("token", "phrase"), [("wrong", "refused the API token"), ("readonly-tok-9f8e", "for this zone")]
)
def test_auth_errors_are_typed_and_never_show_the_token(token, phrase, state_db):
    with CloudflareEmulator(token=TOKEN, zone=ZONE, readonly_token="readonly-tok-9f8e") as api:
        client = client_for(api, token=token)
        report, counts = send_all(state_db, client, urls(3))
    err = report.error
    assert isinstance(err, PurgeAuthError) and not err.retry_safe
    assert phrase in err.message and "Cache Purge" in (err.expected or "")
    assert token not in str(err.as_dict()) and TOKEN not in str(err.as_dict())
    assert counts["pending"] == 3


def test_local_bucket_paces_free_plan_tag_purges():
    fake = FakeTime()
    bucket = TokenBucket(5 / 60, 25, clock=fake.clock)
    waits = [bucket.reserve(1) for _ in range(27)]
    assert waits[:25] == [0.0] * 25
    assert waits[25] == pytest.approx(12.0) and waits[26] == pytest.approx(24.0)


@pytest.mark.both_backends
def test_enqueue_is_idempotent_and_claims_recover(state_db):
    with open_state(state_db) as state:
        outbox = PurgeOutbox(state)
        assert outbox.enqueue("url", urls(3), source="a", now=NOW) == 3
        assert outbox.enqueue("url", urls(4), source="b", now=NOW) == 1
        claimed = outbox.claim("url", 2, run_id="dead", now=NOW)
        assert [i.status for i in claimed] == ["sending", "sending"]
        assert outbox.enqueue("url", urls(4), source="c", now=NOW) == 0  # claimed items are open too
        assert outbox.recover_claimed() == 2
        assert {i.status for i in outbox.open_items()} == {"pending"}
        assert [i.attempts for i in outbox.open_items()] == [1, 1, 0, 0]


def test_an_error_code_that_is_not_a_number_is_reported_not_a_traceback(state_db, httpserver) -> None:  # type: ignore[no-untyped-def]
    """A proxy or an impostor in front of the API may answer Cloudflare's shape with a text code."""
    body = {"success": False, "errors": [{"code": "E_TOO_BAD", "message": "nope"}], "messages": [], "result": None}
    httpserver.expect_request(f"/client/v4/zones/{ZONE}/purge_cache", method="POST").respond_with_json(body, status=400)
    client = CloudflareClient(api_url=httpserver.url_for("/client/v4"), zone_id=ZONE, token=Secret(TOKEN))
    report, _counts = send_all(state_db, client, urls(3))
    reported = [error for _kind, _value, error in report.failed] + ([report.error.message] if report.error else [])
    assert reported and all("nope" in text for text in reported), reported
