"""The Cloudflare emulator behaves like the real purge API where our client depends on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer

from demo.cloudflare_api import CloudflareEmulator

ROOT = Path(__file__).resolve().parent.parent
ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "emulator-token-123"


@pytest.fixture
def api():
    with CloudflareEmulator(token=TOKEN, zone=ZONE, plan="free", readonly_token="read-only") as emulator:
        yield emulator


def purge(api: CloudflareEmulator, body: object, *, token: str | None = TOKEN, zone: str = ZONE):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{api.base_url}/zones/{zone}/purge_cache", json=body, headers=headers, timeout=5)


def test_success_body_is_cloudflares(api):
    response = purge(api, {"files": ["https://www.example.com/a"]})
    assert response.status_code == 200
    assert response.json() == {"success": True, "errors": [], "messages": [], "result": {"id": ZONE}}
    assert api.snapshot()["purges"][0]["body"] == {"files": ["https://www.example.com/a"]}


@pytest.mark.parametrize(
    ("token", "zone", "status", "code"),
    [
        ("wrong", ZONE, 403, 10000),
        ("read-only", ZONE, 403, 9109),
        (TOKEN, "f" * 32, 403, 9109),
        (TOKEN, "example.com", 400, 7003),
        (None, ZONE, 400, 9106),
    ],
)
@pytest.mark.slow
def test_auth_and_zone_errors(api, token, zone, status, code):
    response = purge(api, {"files": ["https://www.example.com/a"]}, token=token, zone=zone)
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False and body["errors"][0]["code"] == code
    assert api.snapshot()["accepted"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"files": ["https://www.example.com/a"], "tags": ["x"]},
        {"files": "https://www.example.com/a"},
        {"files": ["/relative/path"]},
        {"files": [{"url": "https://www.example.com/a", "headers": {"CF-Device-Type": None}}]},
        {"prefixes": ["https://www.example.com/blog"]},
        {"purge_everything": False},
        {"files": [f"https://www.example.com/{i}" for i in range(101)]},
    ],
)
@pytest.mark.slow
def test_malformed_bodies_are_refused(api, body):
    response = purge(api, body)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert api.snapshot()["accepted"] == 0


def test_files_with_headers_and_other_selectors_are_accepted(api):
    for body in (
        {"files": [{"url": "https://www.example.com/a", "headers": {}}]},
        {"tags": ["post-1"]},
        {"hosts": ["www.example.com"]},
        {"prefixes": ["www.example.com/blog"]},
        {"purge_everything": True},
    ):
        assert purge(api, body).status_code == 200, body


def test_free_plan_selector_bucket_empties_after_25_requests(api):
    statuses = [purge(api, {"tags": [f"t{i}"]}).status_code for i in range(26)]
    assert statuses[:25] == [200] * 25
    assert statuses[25] == 429
    last = purge(api, {"tags": ["again"]})
    assert last.status_code == 429
    assert 1 <= int(last.headers["Retry-After"]) <= 12  # one token refills every 12 s on Free


def test_url_bucket_counts_urls_not_requests():
    big = [f"https://www.example.com/{i}" for i in range(100)]
    # The clock stands still: on a busy machine nine requests may take long enough to refill a token.
    with CloudflareEmulator(token=TOKEN, zone=ZONE, plan="free", clock=lambda: 0.0) as api:
        statuses = [purge(api, {"files": big}).status_code for _ in range(9)]
    assert statuses[:8] == [200] * 8  # 800 URLs per second
    assert statuses[8] == 429


def test_control_endpoints_over_http(api):
    control = api.url + "/__emulator"
    requests.post(control + "/fail", json={"count": 2, "status": 502}, timeout=5)
    assert [purge(api, {"tags": ["a"]}).status_code for _ in range(3)] == [502, 502, 200]
    requests.post(control + "/throttle", json={"count": 1, "retry_after": 7}, timeout=5)
    throttled = purge(api, {"tags": ["b"]})
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    requests.post(control + "/limits", json={"max_files": 30}, timeout=5)
    assert purge(api, {"files": [f"https://www.example.com/{i}" for i in range(31)]}).status_code == 400
    state = requests.get(control + "/purges", timeout=5).json()
    assert state["calls"] == 5 and state["accepted"] == 1
    requests.post(control + "/reset", timeout=5)
    assert requests.get(control + "/purges", timeout=5).json() == {
        "calls": 0,
        "accepted": 0,
        "rejected": {},
        "purges": [],
    }


def test_accepted_purges_are_forwarded_to_the_site(httpserver: HTTPServer):
    httpserver.expect_request("/__edgecron/purge", method="POST").respond_with_json({"ok": True})
    site = httpserver.url_for("/__edgecron/purge")
    with CloudflareEmulator(token=TOKEN, zone=ZONE, site_purge_url=site) as api:
        purge(api, {"files": ["https://www.example.com/a"]})
        purge(api, {"files": ["/bad"]})
    forwarded = [json.loads(req.get_data()) for req, _ in httpserver.log]
    assert forwarded == [{"files": ["https://www.example.com/a"]}]


def test_runs_as_a_script_and_prints_its_address():
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "demo" / "cloudflare_api.py"), "--port", "0", "--token", "T", "--zone", ZONE],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        response = requests.post(
            f"{url}/client/v4/zones/{ZONE}/purge_cache",
            json={"hosts": ["www.example.com"]},
            headers={"Authorization": "Bearer T"},
            timeout=5,
        )
        assert response.json()["success"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=5)
