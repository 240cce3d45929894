"""The demo site behaves like an origin behind Cloudflare (the warmer's tests rely on it)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from edgecron.http import make_session
from edgecron.sitemap import SitemapReader

from demo.site import DemoSite

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    with DemoSite(access_log=tmp_path / "access.log", pages=3) as demo:
        yield demo


def get(site: DemoSite, path: str, **kwargs: object) -> requests.Response:
    return requests.get(site.url + path, timeout=5, **kwargs)  # type: ignore[arg-type]


def status(site: DemoSite, path: str, **kwargs: object) -> str:
    return get(site, path, **kwargs).headers["cf-cache-status"]


def read_log(path: Path, *, expect: int) -> list[str]:
    """The access log once `expect` lines are there (the server writes a line after responding)."""
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= expect:
            break
        time.sleep(0.01)
    time.sleep(0.05)  # and no extra line follows
    lines = path.read_text().splitlines()
    assert len(lines) == expect, lines
    return lines


def test_cacheable_routes_miss_then_hit(site: DemoSite) -> None:
    for path in ("/", "/blog/post-1", "/static/app.css"):
        first, second = get(site, path), get(site, path)
        assert first.headers["cf-cache-status"] == "MISS" and "Age" not in first.headers
        assert second.headers["cf-cache-status"] == "HIT" and int(second.headers["Age"]) >= 0
        assert first.content == second.content
        assert re.fullmatch(r"[0-9a-f]{16}-FRA", second.headers["cf-ray"])


def test_bypass_for_login_cookie_and_bypass_paths(site: DemoSite) -> None:
    get(site, "/about")
    assert status(site, "/about") == "HIT"
    logged_in = get(site, "/about", cookies={"sessionid": "abc"})
    assert logged_in.headers["cf-cache-status"] == "BYPASS"
    assert "private" in logged_in.headers["Cache-Control"]
    assert status(site, "/account") == "BYPASS"
    assert status(site, "/account") == "BYPASS"
    assert site.state.stats["requests_with_cookie"] == 1


def test_dynamic_html_and_the_planted_misconfiguration(site: DemoSite) -> None:
    assert status(site, "/search") == status(site, "/search") == "DYNAMIC"
    get(site, "/pricing")
    assert status(site, "/pricing", cookies={"sessionid": "abc"}) == "HIT"  # cached for logged-in users too


def test_home_page_sets_a_cookie(site: DemoSite) -> None:
    assert "demo_seen=1" in get(site, "/").headers["Set-Cookie"]


def test_purge_endpoint_drops_entries(site: DemoSite) -> None:
    for path in ("/", "/about", "/blog/post-1", "/blog/post-2", "/static/app.css"):
        get(site, path)

    def purge(body: dict[str, object]) -> int:
        response = requests.post(site.url + "/__edgecron/purge", json=body, timeout=5)
        assert response.status_code == 200
        return response.json()["dropped"]

    assert purge({"files": [site.url + "/about"]}) == 1
    assert status(site, "/about") == "MISS"
    assert status(site, "/blog/post-1") == "HIT"
    host = site.url.split("//", 1)[1].split(":")[0]
    assert purge({"prefixes": [f"{host}/blog"]}) == 2
    assert status(site, "/blog/post-2") == "MISS"
    assert status(site, "/static/app.css") == "HIT"
    assert purge({"purge_everything": True}) >= 3
    assert status(site, "/static/app.css") == "MISS"
    assert len(site.state.purges) == 3


def test_access_log_has_only_origin_requests(site: DemoSite, tmp_path: Path) -> None:
    get(site, "/about", headers={"User-Agent": "probe/1"})
    get(site, "/about", headers={"User-Agent": "probe/1"})  # an edge HIT never reaches the origin
    get(site, "/nope")
    lines = read_log(tmp_path / "access.log", expect=2)
    pattern = (
        r'127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET /about HTTP/1\.1" 200 \d+ "-" '
        r'"probe/1" rt=\d+\.\d{3} urt="\d+\.\d{3}" cs=MISS ray=[0-9a-f]{16}-FRA cip=127\.0\.0\.1 '
        r'li=0 cc="public, max-age=300"'
    )
    assert re.fullmatch(pattern, lines[0]), lines[0]
    assert '"GET /nope HTTP/1.1" 404' in lines[1]


def test_sitemaps_list_every_page_and_asset(site: DemoSite) -> None:
    robots = get(site, "/robots.txt").text
    assert f"Sitemap: {site.url}/sitemap.xml" in robots
    reader = SitemapReader(make_session(), allowed_hosts=["127.0.0.1"])
    urls = [e.url for e in reader.iter_entries(reader.discover(site.url))]
    paths = [u.removeprefix(site.url) for u in urls]
    listed = [p for p in site.state.page_paths() if p != "/account"]  # disallowed in robots.txt
    assert sorted(paths) == sorted(listed + site.state.asset_paths())
    assert reader.report.sitemaps_read == 3 and reader.report.problems == []
    assert status(site, "/sitemap.xml") == "DYNAMIC"  # sitemaps come from the origin, never the cache


def test_fault_injection(site: DemoSite) -> None:
    requests.post(site.url + "/__edgecron/fault", json={"error": {"/about": 503}}, timeout=5)
    assert get(site, "/about").status_code == 503


def test_demo_site_as_a_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "demo" / "site.py"), "--port", "0", "--access-log", str(tmp_path / "a.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        assert requests.get(match.group(1) + "/static/app.js", timeout=5).headers["cf-cache-status"] == "MISS"
        assert "GET /static/app.js" in read_log(tmp_path / "a.log", expect=1)[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cf_ray_names_the_data_centres_in_turn(tmp_path: Path) -> None:
    with DemoSite(pages=1, data_centres=("FRA", "AMS")) as demo:
        rays = [get(demo, "/about").headers["cf-ray"] for _ in range(4)]
    assert [ray.rsplit("-", 1)[1] for ray in rays] == ["FRA", "AMS", "FRA", "AMS"]
    assert all(re.fullmatch(r"[0-9a-f]{16}-[A-Z]{3}", ray) for ray in rays)
    assert len(set(rays)) == 4  # each response has its own Ray ID, a HIT too
