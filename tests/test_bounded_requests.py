"""Bounded requests against real loopback servers that trickle, never end, or say nothing.

WARM_TIMEOUT / IMPORT_TIMEOUT bound the whole response, not each socket read: before, a page
trickling a byte a second with WARM_TIMEOUT=2 took as long as its body and was counted "filled",
and the sitemap reader always used 30 s per read. A warm body over the byte cap is read that far
and counted "truncated". SIGTERM ends a warm run whatever the server does: exit 143, lock free.
Elapsed times are asserted only against the generous bounds the issue sets (~2x the timeout, 10 s).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from conftest import ROOT
from edgecron.config import load_settings
from edgecron.errors import UpstreamUnavailable
from edgecron.feedhttp import HttpSource
from edgecron.http import MAX_RETRY_AFTER, make_session
from edgecron.lock import current_holder
from edgecron.sitemap import SitemapReader
from edgecron.warm import Warmer, WarmOptions, warm_urls
from loopback_site import LoopbackSite, Route

TIMEOUT = 2.0
WITHIN = 2 * TIMEOUT + 1.0  # "ends within ~2x the timeout", with a second for a loaded machine
TRICKLE = Route(body=b"<urlset>" + b" " * 52 + b"</urlset>", headers={"cf-cache-status": "MISS"}, behaviour="trickle")


@pytest.fixture
def site() -> Iterator[LoopbackSite]:
    server = LoopbackSite("127.0.0.1")
    yield server
    server.close()


@pytest.mark.slow
def test_a_trickling_page_is_cut_at_the_timeout_and_counted_failed_not_filled(site: LoopbackSite) -> None:
    site.routes["/slow"] = TRICKLE
    started = time.monotonic()
    result = Warmer(WarmOptions(rate=0, retries=2, timeout=TIMEOUT, allowed_hosts=("127.0.0.1",))).fetch_one(
        site.url("/slow")
    )
    elapsed = time.monotonic() - started
    assert (result.outcome, result.attempts) == ("failed", 1)  # a timeout is not retried into 3x the time
    assert (result.error or "").startswith("timed out")
    assert 0 < result.bytes < len(TRICKLE.body)
    assert elapsed < WITHIN


@pytest.mark.slow
def test_warm_timeout_from_the_settings_bounds_the_script_run(run_script, env_file: Path, site: LoopbackSite) -> None:  # type: ignore[no-untyped-def]
    site.routes["/slow"] = TRICKLE
    site.routes["/fine"] = Route(body=b"ok", headers={"cf-cache-status": "HIT"})
    urls = env_file.parent / "urls.txt"
    urls.write_text(f"{site.url('/slow')}\n{site.url('/fine')}\n")
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL=http://127.0.0.1:{site.port}\nWARM_TIMEOUT={TIMEOUT:g}\nWARM_RATE=0\n")
    proc = run_script("warm_cache.py", "--urls-file", str(urls), "--json", "--max-failure-rate", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"]["outcomes"] == {"failed": 1, "warm": 1}
    [failure] = report["failures"]
    assert failure["url"] == site.url("/slow") and failure["error"].startswith("timed out")
    assert failure["elapsed_ms"] < WITHIN * 1000


@pytest.mark.slow
def test_the_sitemap_reader_honours_warm_timeout_for_the_whole_sitemap(site: LoopbackSite, tmp_path: Path) -> None:
    site.routes["/sitemap.xml"] = TRICKLE
    environ = {"STATE_DIR": str(tmp_path), "ALLOWED_HOSTS": "127.0.0.1", "WARM_TIMEOUT": f"{TIMEOUT:g}"}
    cfg = load_settings(environ=environ, env_file=None)
    reader = SitemapReader.from_settings(make_session(retries=0), cfg)
    started = time.monotonic()
    assert list(reader.iter_entries([site.url("/sitemap.xml")])) == []
    assert time.monotonic() - started < WITHIN
    [problem] = reader.report.problems
    assert f"took longer than {TIMEOUT:g} s in all" in problem.message


@pytest.mark.slow
def test_a_trickling_feed_page_is_cut_at_import_timeout(site: LoopbackSite) -> None:
    site.routes["/feed"] = Route(body=b'{"items": []}' + b" " * 40, behaviour="trickle")
    source = HttpSource(
        site.url("/feed"),
        session=make_session(retries=0),
        allowed_hosts=("127.0.0.1",),
        timeout=TIMEOUT,
        max_page_bytes=1 << 20,
        attempts=1,
    )
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as failed:
        list(source.records())
    assert "timed out" in failed.value.message
    assert time.monotonic() - started < WITHIN


def test_a_slow_consumer_does_not_spend_the_servers_time(site: LoopbackSite) -> None:
    """Only waiting on the server counts: a sitemap is parsed while its URLs are warmed."""
    body = "".join(f"<url><loc>{site.url(f'/p{i}')}</loc></url>" for i in range(3))
    site.routes["/s.xml"] = Route(body=f"<urlset>{body}</urlset>".encode())
    reader = SitemapReader(make_session(retries=0), allowed_hosts=("127.0.0.1",), timeout=0.5)
    seen = []
    for entry in reader.iter_entries([site.url("/s.xml")]):
        seen.append(entry.url)
        time.sleep(0.3)  # the warm run busy with what was listed so far
    assert len(seen) == 3 and reader.report.problems == []


def test_warm_max_bytes_from_the_settings_caps_the_script_run(run_cli, env_file: Path, site: LoopbackSite) -> None:  # type: ignore[no-untyped-def]
    site.routes["/huge"] = Route(body=b"x" * (1 << 20), headers={"cf-cache-status": "MISS"})
    urls = env_file.parent / "urls.txt"
    urls.write_text(site.url("/huge") + "\n")
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL=http://127.0.0.1:{site.port}\nWARM_MAX_BYTES=262144\nWARM_RATE=0\n")
    proc = run_cli("warm_cache.py", "--urls-file", str(urls), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["outcomes"] == {"truncated": 1}


def test_a_retry_after_of_an_hour_is_shortened_so_a_fetch_stays_bounded() -> None:
    retry = make_session().get_adapter("http://x/").max_retries
    assert retry.get_retry_after(urllib3.HTTPResponse(headers={"Retry-After": "3600"})) == MAX_RETRY_AFTER
    assert retry.get_retry_after(urllib3.HTTPResponse(headers={"Retry-After": "2"})) == 2


def test_a_body_over_the_cap_is_read_that_far_and_counted_truncated(site: LoopbackSite) -> None:
    site.routes["/huge"] = Route(body=b"x" * (1 << 20), headers={"cf-cache-status": "MISS"})
    site.routes["/small"] = Route(body=b"x" * 1000, headers={"cf-cache-status": "MISS"})
    options = WarmOptions(rate=0, allowed_hosts=("127.0.0.1",), max_body_bytes=256 << 10)
    results = []
    summary = warm_urls(
        [site.url("/huge"), site.url("/small")], options=options, stop=threading.Event(), on_result=results.append
    )
    by_url = {r.url: r for r in results}
    huge = by_url[site.url("/huge")]
    assert huge.outcome == "truncated" and (256 << 10) <= huge.bytes < (1 << 20)
    assert by_url[site.url("/small")].outcome == "filled"
    assert summary.failure_rate == 0


# --- SIGTERM to a real warm_cache.py ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "behaviour"),
    [("page", "endless"), ("page", "silent"), ("page", "trickle"), ("sitemap", "silent")],
)
@pytest.mark.slow
def test_sigterm_ends_a_stuck_warm_run_within_10_s_with_143_and_the_lock_free(
    base_env: dict[str, str], workdir: Path, site: LoopbackSite, source: str, behaviour: str
) -> None:
    interval = 0.01 if behaviour == "endless" else 0.5  # endless: 100 KiB/s, far below the body cap
    site.routes["/stuck"] = Route(body=b"<urlset>" + b" " * 1000, behaviour=behaviour, interval=interval)
    args = ["--sitemap", site.url("/stuck")]
    if source == "page":
        urls = workdir / "urls.txt"
        urls.write_text(site.url("/stuck") + "\n")
        args = ["--urls-file", str(urls)]
    env = {**base_env, "SITE_URL": f"http://127.0.0.1:{site.port}", "WARM_TIMEOUT": "600", "WARM_RATE": "0"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "warm_cache.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert site.started.wait(30), "the warm run never reached the server"
        time.sleep(0.3)  # well into the download
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _out, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert current_holder(workdir / "state" / "locks", "warm") is None
