"""scripts/purge_cache.py as a real subprocess against the emulator: faults, kills, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from statedb import state_exists, state_rows

from demo.cloudflare_api import CloudflareEmulator

ROOT = Path(__file__).resolve().parent.parent
ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "tok-7c1d9e2b-secret"


@pytest.fixture
def api():
    with CloudflareEmulator(token=TOKEN, zone=ZONE, plan="free") as emulator:
        yield emulator


@pytest.fixture
def configured(env_file: Path, api: CloudflareEmulator) -> Path:
    with env_file.open("a") as fh:
        fh.write(
            f"SITE_URL=https://www.example.com\nCF_API_TOKEN={TOKEN}\nCF_ZONE_ID={ZONE}\nCF_API_URL={api.base_url}\n"
        )
    return env_file


def urls(n: int) -> list[str]:
    return [f"https://www.example.com/p/{i}" for i in range(n)]


def purged(api: CloudflareEmulator) -> Counter[str]:
    return Counter(u for p in api.snapshot()["purges"] for u in p["body"].get("files", []))


def open_items(state_db: Path | str) -> list[tuple[str, str]]:
    return state_rows(state_db, "SELECT value, status FROM outbox WHERE status != 'done' ORDER BY id")


def popen(base_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "purge_cache.py"), *args],
        env=base_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.both_backends
def test_dry_run_prints_exact_bodies_and_changes_nothing(configured, run_cli, api, state_db):
    result = run_cli("purge_cache.py", "urls", "/a", "https://www.example.com/b", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["requests"] == [{"files": ["https://www.example.com/a", "https://www.example.com/b"]}]
    assert doc["endpoint"].endswith(f"/zones/{ZONE}/purge_cache")
    assert TOKEN not in result.stdout + result.stderr
    assert api.snapshot()["calls"] == 0
    assert not state_exists(state_db)


@pytest.mark.both_backends
def test_bad_input_is_reported_and_the_rest_is_purged(configured, run_cli, api):
    result = run_cli("purge_cache.py", "urls", "/ok", "https://other.example.net/x", "/blog/*")
    assert result.returncode == 1
    assert "other.example.net is not in ALLOWED_HOSTS" in result.stderr
    assert "use `purge_cache.py prefixes`" in result.stderr
    assert purged(api) == Counter(["https://www.example.com/ok"])


def test_nothing_valid_or_empty_is_a_usage_error(configured, run_cli, api):
    assert run_cli("purge_cache.py", "urls", "*").returncode == 2
    empty = run_cli("purge_cache.py", "urls", "-", input="\n# nothing\n")
    assert empty.returncode == 2 and "no urls to purge" in empty.stderr
    assert run_cli("purge_cache.py", "everything").returncode == 2
    assert api.snapshot()["calls"] == 0


@pytest.mark.both_backends
def test_wrong_token_exits_2_keeps_items_and_never_prints_the_token(configured, run_script, api, state_db):
    result = run_script("purge_cache.py", "urls", "/a", "--json", env={"CF_API_TOKEN": "wrong-token-abc"})
    assert result.returncode == 2
    assert "refused the API token" in result.stderr
    out = result.stdout + result.stderr
    logs = (configured.parent / "state" / "logs" / "purge.jsonl").read_text()
    assert "wrong-token-abc" not in out + logs and TOKEN not in out + logs
    assert open_items(state_db) == [("https://www.example.com/a", "pending")]


@pytest.mark.slow
@pytest.mark.both_backends
def test_api_down_exits_75_then_retry_sends(configured, run_script, api, state_db):
    down = {"CF_API_URL": "http://127.0.0.1:9/client/v4"}
    result = run_script("purge_cache.py", "urls", *urls(40), "--max-wait", "2", env=down)
    assert result.returncode == 75, result.stderr
    assert "unavailable" in result.stderr
    assert len(open_items(state_db)) == 40
    retry = run_script("purge_cache.py", "outbox", "--retry")
    assert retry.returncode == 0, retry.stderr
    assert purged(api) == Counter(urls(40)) and open_items(state_db) == []


@pytest.mark.slow
def test_429_storm_waits_and_every_url_is_purged_once(configured, run_script, api, state_db):
    api.throttle(count=2, retry_after=2)  # by count, not seconds: a slow start must not miss the storm
    result = run_script("purge_cache.py", "urls", *urls(90), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["rate_limited"] >= 1
    assert purged(api) == Counter(urls(90))
    assert open_items(state_db) == []


@pytest.mark.slow
@pytest.mark.both_backends
def test_kill_9_mid_send_then_rerun(configured, base_env, run_script, api, state_db):
    api.set_latency(0.3)
    proc = popen(base_env, "urls", *urls(300))
    wait_for(lambda: api.snapshot()["accepted"] >= 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.5)  # the request in flight at the kill still lands at the API
    first_run = [p["body"]["files"] for p in api.snapshot()["purges"]]
    api.set_latency(0)
    rerun = run_script("purge_cache.py", "outbox", "--retry")
    assert rerun.returncode == 0, rerun.stderr
    counts = purged(api)
    assert set(counts) == set(urls(300))
    twice = {u for u, n in counts.items() if n > 1}
    assert all(n <= 2 for n in counts.values())
    assert any(twice <= set(body) for body in first_run)  # only the batch in flight
    assert open_items(state_db) == []


@pytest.mark.slow
def test_two_runs_at_once_second_exits_75(configured, base_env, run_script, api, state_db):
    api.set_latency(
        1.5
    )  # the first run holds the lock for seconds: a second one starting late on a busy machine still meets it
    first = popen(base_env, "urls", *urls(150))
    wait_for(lambda: api.snapshot()["calls"] >= 1)
    second = run_script("purge_cache.py", "urls", "/other")
    assert second.returncode == 75
    assert "another purge run holds" in second.stderr
    assert first.wait(timeout=30) == 0
    assert purged(api) == Counter(urls(150))
    assert open_items(state_db) == []


@pytest.mark.both_backends
def test_deploy_purges_exactly_what_changed(configured, run_script, api, tmp_path, state_db):
    first = tmp_path / "m1.json"
    first.write_text(json.dumps({"ref": "v1", "urls": {"/a/": "h1", "/b/": "h2", "/c/": "h3"}}))
    second = tmp_path / "m2.txt"
    second.write_text("# ref: v2\nh1  ./a/index.html\nh2-new  b/index.html\nh4  d.html\n")
    assert run_script("purge_cache.py", "deploy", "-m", str(first), "--record-only").returncode == 0
    assert api.snapshot()["calls"] == 0
    result = run_script("purge_cache.py", "deploy", "-m", str(second), "--json")
    assert result.returncode == 0, result.stderr
    site = "https://www.example.com"
    assert purged(api) == Counter([f"{site}/b/", f"{site}/d.html", f"{site}/c/"])
    rows = state_rows(state_db, "SELECT ref, changed, removed FROM deploys ORDER BY id")
    assert rows == [("v1", 3, 0), ("v2", 2, 1)]


def test_malformed_manifest_names_the_line(configured, run_cli, api, tmp_path):
    bad = tmp_path / "m.txt"
    bad.write_text("h1  /a\nonlyonefield\n")
    result = run_cli("purge_cache.py", "deploy", "-m", str(bad))
    assert result.returncode == 2 and "line 2" in result.stderr
    assert api.snapshot()["calls"] == 0
