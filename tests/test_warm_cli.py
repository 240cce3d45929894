"""scripts/warm_cache.py end to end: real subprocesses, real loopback servers, the real state.db."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from edgecron import USER_AGENT
from pytest_httpserver import HTTPServer
from statedb import state_records
from werkzeug.wrappers import Request, Response

from demo.site import DemoSite

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def urlset(urls: list[str]) -> bytes:
    items = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">{items}</urlset>\n'.encode()


def requested_paths(server: HTTPServer) -> list[str]:
    return [request.path for request, _ in server.log]


def warm_rows(state_db: Path | str, **where: object) -> list[dict[str, Any]]:
    clause = " AND ".join(f"{k} = ?" for k in where) or "1 = 1"
    return state_records(state_db, f"SELECT * FROM warm_results WHERE {clause} ORDER BY id", tuple(where.values()))


def run_rows(state_db: Path | str) -> list[dict[str, Any]]:
    return state_records(state_db, "SELECT * FROM runs ORDER BY id")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Flaky:
    """A handler answering `statuses` in turn (then 200), with the given headers on each."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        self.calls += 1
        if self.statuses:
            return Response("busy", status=self.statuses.pop(0), headers=self.headers)
        return Response("ok", status=200, headers={"cf-cache-status": "MISS"})


@pytest.fixture
def warm(run_cli, httpserver: HTTPServer):  # type: ignore[no-untyped-def]
    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None):  # type: ignore[no-untyped-def]
        full = {"SITE_URL": httpserver.url_for("/").rstrip("/"), "WARM_RATE": "0"}
        full.update(env or {})
        return run_cli("warm_cache.py", *args, env=full, input=input)

    return run


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    with DemoSite(access_log=tmp_path / "access.log", pages=5) as demo:
        yield demo


# --- security ----------------------------------------------------------------------------------


def test_requests_are_anonymous_even_when_the_site_sets_cookies(warm, httpserver: HTTPServer) -> None:
    cookie = {"Set-Cookie": "sessionid=secret; Path=/", "cf-cache-status": "MISS"}
    index = (
        f'<sitemapindex xmlns="{NS}"><sitemap><loc>{httpserver.url_for("/pages.xml")}</loc></sitemap></sitemapindex>'
    )
    httpserver.expect_request("/robots.txt").respond_with_data(
        f"Sitemap: {httpserver.url_for('/sitemap.xml')}\n", headers=cookie
    )
    httpserver.expect_request("/sitemap.xml").respond_with_data(index, headers=cookie)
    pages = [f"/p{i}" for i in range(4)]
    httpserver.expect_request("/pages.xml").respond_with_data(
        urlset([httpserver.url_for(p) for p in pages]), headers=cookie
    )
    for path in pages:
        httpserver.expect_request(path).respond_with_data("page", headers=cookie)
    proc = warm("--verify", env={"WARM_CONCURRENCY": "1"})
    assert proc.returncode == 0, proc.stderr
    log = httpserver.log
    assert len(log) == 3 + 2 * len(pages)  # robots, index, child; each page twice (warm + verify)
    for request, _ in log:
        assert "Cookie" not in request.headers, request.path
        assert "Authorization" not in request.headers, request.path
        assert "Origin" not in request.headers, request.path
        assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("edgecron/") and "+http" in USER_AGENT


def test_demo_site_sees_no_cookie_from_the_warmer(warm, site: DemoSite) -> None:
    proc = warm("--verify", env={"SITE_URL": site.url})
    assert proc.returncode == 0, proc.stderr
    stats = site.state.stats
    assert stats["requests"] > 20
    assert stats["requests_with_cookie"] == 0
    assert stats["requests_with_authorization"] == 0
    assert stats["requests_with_origin"] == 0


def test_only_allowed_hosts_are_fetched(warm, httpserver: HTTPServer, httpserver_ipv4: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data("a", headers={"cf-cache-status": "HIT"})
    httpserver_ipv4.expect_request("/b").respond_with_data("b")
    urls = f"{httpserver.url_for('/a')}\n{httpserver_ipv4.url_for('/b')}\nftp://localhost/c\n"
    proc = warm("--urls-file", "-", "--json", input=urls)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["summary"]["requested"] == 1
    assert doc["dropped"]["counts"] == {"off-host": 1, "invalid": 1}
    assert httpserver_ipv4.log == []
    assert requested_paths(httpserver) == ["/a"]


def test_allowed_hosts_setting_admits_a_second_host(warm, httpserver: HTTPServer, httpserver_ipv4: HTTPServer) -> None:
    httpserver_ipv4.expect_request("/b").respond_with_data("b", headers={"cf-cache-status": "HIT"})
    proc = warm(
        "--urls-file", "-", input=httpserver_ipv4.url_for("/b") + "\n", env={"ALLOWED_HOSTS": "localhost,127.0.0.1"}
    )
    assert proc.returncode == 0, proc.stderr
    assert requested_paths(httpserver_ipv4) == ["/b"]


def test_bypass_paths_and_duplicates_are_skipped_and_counted(warm, httpserver: HTTPServer) -> None:
    for path in ("/a", "/b"):
        httpserver.expect_request(path).respond_with_data("x", headers={"cf-cache-status": "HIT"})
    lines = ["/a", "/b", "/a", "/admin/users", "/cart", "/private/x", "/a", "# comment", ""]
    proc = warm("--urls-file", "-", "--json", input="\n".join(lines), env={"BYPASS_PATHS": "/admin,/cart,/private"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["dropped"]["counts"] == {"bypass-path": 3, "duplicate": 2}
    assert sorted(requested_paths(httpserver)) == ["/a", "/b"]


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.both_backends
@pytest.mark.slow
def test_429_with_retry_after_then_200(warm, state_db: Path | str, httpserver: HTTPServer) -> None:
    flaky = Flaky(429, headers={"Retry-After": "1"})
    httpserver.expect_request("/slow").respond_with_handler(flaky)
    proc = warm("--urls-file", "-", input="/slow\n")
    assert proc.returncode == 0, proc.stderr
    assert flaky.calls == 2
    [row] = warm_rows(state_db)
    assert (row["outcome"], row["http_status"], row["attempts"]) == ("filled", 200, 2)


@pytest.mark.slow
def test_503_twice_then_200(warm, state_db: Path | str, httpserver: HTTPServer) -> None:
    flaky = Flaky(503, 503)
    httpserver.expect_request("/busy").respond_with_handler(flaky)
    proc = warm("--urls-file", "-", input="/busy\n")
    assert proc.returncode == 0, proc.stderr
    assert flaky.calls == 3
    [row] = warm_rows(state_db)
    assert (row["outcome"], row["attempts"]) == ("filled", 3)


@pytest.mark.both_backends
def test_retry_after_beyond_max_retry_wait_fails_without_waiting(
    warm, state_db: Path | str, httpserver: HTTPServer
) -> None:
    flaky = Flaky(429, 429, 429, headers={"Retry-After": "120"})
    httpserver.expect_request("/limited").respond_with_handler(flaky)
    proc = warm("--urls-file", "-", "--max-retry-wait", "1", input="/limited\n")
    assert proc.returncode == 1
    assert flaky.calls == 1
    [row] = warm_rows(state_db)
    assert (row["outcome"], row["http_status"], row["attempts"]) == ("failed", 429, 1)
    assert "limited: HTTP 429" in proc.stderr


@pytest.mark.parametrize("threshold,exit_code", [(None, 1), ("0.5", 0)])
@pytest.mark.slow
def test_connection_refused_is_counted_and_the_run_continues(
    warm, state_db: Path | str, httpserver: HTTPServer, threshold: str | None, exit_code: int
) -> None:
    for path in ("/a", "/b", "/c"):
        httpserver.expect_request(path).respond_with_data("x", headers={"cf-cache-status": "HIT"})
    dead = f"http://localhost:{free_port()}/gone"
    urls = "\n".join(["/a", dead, "/b", "/c"])
    args = ["--urls-file", "-", "--json"] + (["--max-failure-rate", threshold] if threshold else [])
    proc = warm(*args, input=urls)
    assert proc.returncode == exit_code, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["summary"]["outcomes"] == {"warm": 3, "failed": 1}
    assert [f["url"] for f in doc["failures"]] == [dead]
    assert doc["failures"][0]["error"] == "connection refused"
    assert sorted(requested_paths(httpserver)) == ["/a", "/b", "/c"]
    assert {r["url"]: r["outcome"] for r in warm_rows(state_db)}[dead] == "failed"


# --- classification and storage ----------------------------------------------------------------

CASES = {
    "/hit": (200, {"cf-cache-status": "HIT", "Age": "42", "cf-ray": "8f0123456789abcd-SJC"}, "warm"),
    "/revalidated": (200, {"cf-cache-status": "REVALIDATED"}, "warm"),
    "/miss": (200, {"cf-cache-status": "MISS"}, "filled"),
    "/expired": (200, {"cf-cache-status": "EXPIRED"}, "filled"),
    "/bypass": (200, {"cf-cache-status": "BYPASS"}, "not-cacheable"),
    "/dynamic": (200, {"cf-cache-status": "dynamic"}, "not-cacheable"),
    "/no-header": (200, {}, "not-cacheable"),
    "/challenge": (403, {"cf-mitigated": "challenge", "cf-cache-status": "DYNAMIC"}, "challenge"),
    "/missing": (404, {"cf-cache-status": "MISS"}, "failed"),
}


@pytest.mark.both_backends
def test_each_response_is_classified_and_stored(warm, state_db: Path | str, httpserver: HTTPServer) -> None:
    for path, (status, headers, _) in CASES.items():
        httpserver.expect_request(path).respond_with_data("body!", status=status, headers=headers)
    proc = warm("--urls-file", "-", "--json", input="\n".join(CASES))
    assert proc.returncode == 1  # 2 of 9 failed (challenge, 404) > 5%
    rows = {r["url"].removeprefix(httpserver.url_for("/").rstrip("/")): r for r in warm_rows(state_db)}
    assert {path: row["outcome"] for path, row in rows.items()} == {p: c[2] for p, c in CASES.items()}
    hit = rows["/hit"]
    assert (hit["http_status"], hit["cache_status"], hit["age"], hit["cf_ray"], hit["bytes"]) == (
        200,
        "HIT",
        42,
        "8f0123456789abcd-SJC",
        5,
    )
    assert rows["/no-header"]["cache_status"] is None
    assert rows["/dynamic"]["cache_status"] == "DYNAMIC"
    assert rows["/missing"]["error"] == "HTTP 404"
    assert {row["pass"] for row in rows.values()} == {1}
    [run] = run_rows(state_db)
    assert {row["run_id"] for row in rows.values()} == {run["run_id"]}
    assert (run["status"], run["exit_code"]) == ("problems", 1)
    counts = json.loads(run["counts"])
    assert counts["requested"] == 9 and counts["warm"] == 2 and counts["challenge"] == 1
    doc = json.loads(proc.stdout)
    assert sorted(f["outcome"] for f in doc["failures"]) == ["challenge", "failed"]


@pytest.mark.both_backends
def test_verify_lists_urls_still_not_served_from_cache(warm, state_db: Path | str, site: DemoSite) -> None:
    proc = warm("--verify", "--json", env={"SITE_URL": site.url})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [item["url"] for item in doc["still_not_cached"]] == [site.url + "/search"]
    assert doc["still_not_cached"][0]["cache_status"] == "DYNAMIC"
    first, second = warm_rows(state_db, **{"pass": 1}), warm_rows(state_db, **{"pass": 2})
    assert len(first) == len(second) == doc["summary"]["requested"]
    assert {r["cache_status"] for r in second} == {"HIT", "DYNAMIC"}
    assert json.loads(run_rows(state_db)[0]["counts"])["still_not_cached"] == 1


def test_verify_table_names_the_cold_urls(warm, site: DemoSite) -> None:
    proc = warm("--verify", "--summary", env={"SITE_URL": site.url})
    assert proc.returncode == 0, proc.stderr
    assert "1 URLs still not served from cache" in proc.stdout
    assert f"DYNAMIC  {site.url}/search" in proc.stdout
    assert "cf-cache-status" in proc.stdout and "slowest URLs" in proc.stdout


# --- modes and output --------------------------------------------------------------------------


@pytest.mark.both_backends
def test_dry_run_requests_no_page_and_records_nothing(
    warm, workdir: Path, state_db: Path | str, httpserver: HTTPServer
) -> None:
    pages = [httpserver.url_for(f"/p{i}") for i in range(3)]
    for i in range(3):
        httpserver.expect_request(f"/p{i}").respond_with_data("x")
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    httpserver.expect_request("/sitemap.xml").respond_with_data(urlset(pages))
    proc = warm("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"[dry-run] GET {u}" for u in pages]
    assert requested_paths(httpserver) == ["/robots.txt", "/sitemap.xml"]
    assert run_rows(state_db) == []
    assert not (workdir / "state" / "locks" / "warm.lock").exists()


def test_dry_run_json(warm, httpserver: HTTPServer) -> None:
    pages = [httpserver.url_for(f"/p{i}") for i in range(3)]
    httpserver.expect_request("/s.xml").respond_with_data(urlset([*pages, pages[0]]))
    proc = warm("--dry-run", "--json", "--sitemap", httpserver.url_for("/s.xml"))
    assert proc.returncode == 0, proc.stderr
    dropped = {
        "total": 1,
        "counts": {"duplicate": 1},
        "first": [{"url": pages[0], "reason": "duplicate", "sitemap": httpserver.url_for("/s.xml")}],
    }
    assert json.loads(proc.stdout) == {"dry_run": True, "would_request": pages, "count": 3, "dropped": dropped}


@pytest.mark.both_backends
def test_limit(warm, state_db: Path | str, httpserver: HTTPServer) -> None:
    for i in range(6):
        httpserver.expect_request(f"/p{i}").respond_with_data("x", headers={"cf-cache-status": "HIT"})
    proc = warm("--urls-file", "-", "--limit", "2", input="\n".join(f"/p{i}" for i in range(6)))
    assert proc.returncode == 0, proc.stderr
    assert sorted(requested_paths(httpserver)) == ["/p0", "/p1"]
    assert len(warm_rows(state_db)) == 2


def test_json_document_shape(warm, site: DemoSite) -> None:
    proc = warm("--json", env={"SITE_URL": site.url})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"summary", "failures", "slowest", "sitemap_problems", "dropped", "still_not_cached"}
    summary = doc["summary"]
    assert set(summary) == {
        "requested",
        "outcomes",
        "cache_status",
        "data_centres",
        "failure_rate",
        "interrupted",
    }
    # 5 pages + 4 fixed pages (not /account: a bypass path, not in the sitemap) + 4 assets
    assert summary["requested"] == 13
    assert summary["outcomes"] == {"filled": 12, "not-cacheable": 1}
    assert summary["cache_status"] == {"MISS": 12, "DYNAMIC": 1}
    assert summary["data_centres"] == {"FRA": 13}  # the demo site's cf-ray suffix
    assert doc["dropped"] == {"total": 0, "counts": {}, "first": []}
    assert summary["failure_rate"] == 0 and summary["interrupted"] is False
    assert doc["failures"] == [] and doc["sitemap_problems"] == [] and doc["still_not_cached"] is None
    assert {"url", "outcome", "http_status", "cache_status", "age", "cf_ray", "elapsed_ms", "bytes"} <= set(
        doc["slowest"][0]
    )


def test_summary_names_the_data_centres_that_answered(warm, tmp_path: Path) -> None:
    with DemoSite(pages=5, data_centres=("FRA", "AMS")) as two:
        proc = warm("--summary", env={"SITE_URL": two.url})
    assert proc.returncode == 0, proc.stderr
    rows = dict(re.findall(r"^(FRA|AMS)\s+(\d+)$", proc.stdout, re.M))
    assert set(rows) == {"FRA", "AMS"} and sum(map(int, rows.values())) == 13, proc.stdout


def test_a_hostile_cf_ray_is_counted_as_unknown_and_never_printed(warm, httpserver: HTTPServer) -> None:
    hostile = "\x1b]0;owned\x07-FRA"
    httpserver.expect_request("/a").respond_with_data("x", headers={"cf-cache-status": "HIT", "cf-ray": hostile})
    httpserver.expect_request("/b").respond_with_data("x", headers={"cf-cache-status": "HIT"})
    table = warm("--urls-file", "-", "--summary", input="/a\n/b\n")
    document = warm("--urls-file", "-", "--json", input="/a\n/b\n")
    assert (table.returncode, document.returncode) == (0, 0), table.stderr + document.stderr
    assert re.search(r"^unknown\s+2$", table.stdout, re.M), table.stdout
    assert json.loads(document.stdout)["summary"]["data_centres"] == {"unknown": 2}
    for output in (table.stdout, table.stderr, document.stdout, document.stderr):
        assert "\x1b" not in output and "owned" not in output


def test_silent_under_cron_on_success(warm, site: DemoSite) -> None:
    proc = warm(env={"SITE_URL": site.url})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_a_sitemap_listing_a_bypass_path_is_one_warning_under_cron(warm, workdir: Path, httpserver: HTTPServer) -> None:
    """A sitemap listing a BYPASS_PATHS page (WooCommerce's /cart/ in a page sitemap): warmed without
    it, exit 0, and one line that reaches cron mail and the event log (hence the ping body)."""
    httpserver.expect_request("/").respond_with_data("home", headers={"cf-cache-status": "HIT"})
    httpserver.expect_request("/sitemap-pages.xml").respond_with_data(
        urlset([httpserver.url_for("/"), httpserver.url_for("/cart/")])
    )
    proc = warm("--sitemap", httpserver.url_for("/sitemap-pages.xml"))
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("warning: 1 listed URLs were dropped, not warmed: bypass path 1 ")
    assert httpserver.url_for("/cart/") in line and httpserver.url_for("/sitemap-pages.xml") in line
    assert requested_paths(httpserver) == ["/sitemap-pages.xml", "/"]
    events = [json.loads(e) for e in (workdir / "state" / "logs" / "warm.jsonl").read_text().splitlines()]
    assert [e["text"] for e in events if e["event"] == "said"] == [line]


def test_every_drop_reason_is_counted_once_and_listed(
    warm, httpserver: HTTPServer, httpserver_ipv4: HTTPServer
) -> None:
    base = httpserver.url_for("").rstrip("/")
    other = httpserver_ipv4.url_for("/x.xml")  # 127.0.0.1: not an allowed host
    httpserver.expect_request("/a").respond_with_data("x", headers={"cf-cache-status": "HIT"})
    httpserver.expect_request("/sitemap.xml").respond_with_data(
        f'<sitemapindex xmlns="{NS}"><sitemap><loc>{other}</loc></sitemap>'
        f"<sitemap><loc>{base}/pages.xml</loc></sitemap><sitemap><loc>{base}/list.txt</loc></sitemap></sitemapindex>"
    )
    long_url = f"{base}/{'l' * 2100}"
    httpserver.expect_request("/pages.xml").respond_with_data(
        urlset(
            [
                f"{base}/a",
                f"{base}/a",
                "https://evil.example/x",
                long_url,
                f"{base}/cart/1",
                f"{base}/a?token=s3cr3t-value",
            ]
        )
    )
    httpserver.expect_request("/list.txt").respond_with_data(f"{base}/a\nnot a url\n")
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"), "--json")
    assert proc.returncode == 0, proc.stderr  # warming worked: drops alone do not fail a run
    doc = json.loads(proc.stdout)
    assert doc["summary"]["requested"] == 2
    dropped = doc["dropped"]
    assert dropped["counts"] == {
        "off-host-child": 1,
        "duplicate": 2,
        "off-host": 1,
        "too-long": 1,
        "bypass-path": 1,
        "invalid": 1,
    }
    assert dropped["total"] == 7 == len(dropped["first"])
    by_reason = {item["reason"]: item for item in dropped["first"]}
    assert by_reason["off-host-child"] == {"url": other, "reason": "off-host-child", "sitemap": f"{base}/sitemap.xml"}
    assert by_reason["invalid"] == {"url": "not a url", "reason": "invalid", "sitemap": f"{base}/list.txt"}
    assert by_reason["too-long"]["url"].startswith(long_url[:300]) and len(by_reason["too-long"]["url"]) < 400
    assert by_reason["bypass-path"]["sitemap"] == f"{base}/pages.xml"
    assert httpserver_ipv4.log == []
    [line] = proc.stderr.splitlines()
    assert "off-host 1, invalid 1, too long 1, duplicate 2, bypass path 1, off-host child 1" in line


def test_dropped_urls_are_redacted_and_capped_at_100(warm, httpserver: HTTPServer) -> None:
    base = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/a").respond_with_data("x")
    listed = [f"{base}/a"] + [f"https://evil.example/p{i}?api_key=leaked-key-{i}" for i in range(150)]
    httpserver.expect_request("/sitemap.xml").respond_with_data(urlset(listed))
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"), "--json")
    assert proc.returncode == 0, proc.stderr
    dropped = json.loads(proc.stdout)["dropped"]
    assert dropped["counts"] == {"off-host": 150} and len(dropped["first"]) == 100
    assert dropped["first"][99]["url"] == "https://evil.example/p99?api_key=***"
    assert "leaked-key" not in proc.stdout + proc.stderr


def test_a_dry_run_warns_about_drops_too(warm, httpserver: HTTPServer) -> None:
    base = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/sitemap.txt").respond_with_data(f"{base}/a\n{base}/a\n<junk>\n")
    proc = warm("--dry-run", "--sitemap", httpserver.url_for("/sitemap.txt"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"[dry-run] GET {base}/a"]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "invalid 1, duplicate 1" in warnings[0]


def test_failures_go_to_stderr_under_cron(warm, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ok").respond_with_data("x", headers={"cf-cache-status": "HIT"})
    httpserver.expect_request("/broken").respond_with_data("x", status=500)
    proc = warm("--urls-file", "-", input="/ok\n/broken\n", env={"WARM_MAX_FAILURE_RATE": "0.1"})
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"failed: {httpserver.url_for('/broken')}: HTTP 500" in proc.stderr
    assert "1 of 2 URLs failed" in proc.stderr


def test_urls_file_with_relative_paths_needs_site_url(warm, workdir: Path) -> None:
    listing = workdir / "urls.txt"
    listing.write_text("/a\n")
    proc = warm("--urls-file", str(listing), env={"SITE_URL": ""})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "needs SITE_URL" in errors[0] and "expected" in errors[0]
    assert "Traceback" not in proc.stderr


def test_missing_urls_file(warm, workdir: Path) -> None:
    proc = warm("--urls-file", str(workdir / "nope.txt"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("Error: ")] == [
        f"Error: --urls-file {workdir / 'nope.txt'} cannot be read: got 'No such file or directory', "
        "expected a readable text file."
    ]


@pytest.mark.slow
def test_unreachable_site_is_a_temporary_failure(warm) -> None:
    proc = warm(env={"SITE_URL": f"http://localhost:{free_port()}"})
    assert proc.returncode == 75
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "robots.txt" in errors[0]


def test_help_ends_with_examples(run_cli) -> None:  # type: ignore[no-untyped-def]
    proc = run_cli("warm_cache.py", "--help")
    assert proc.returncode == 0
    tail = proc.stdout.rstrip().splitlines()
    examples = next(i for i, line in enumerate(tail) if line.strip() == "Examples:")
    assert all("warm_cache.py" in line for line in tail[examples + 1 : examples + 4])
    assert tail[-1].strip().startswith(("warm_cache.py", "git diff"))


def test_negative_rate_option_is_a_usage_error(run_cli) -> None:  # type: ignore[no-untyped-def]
    proc = run_cli("warm_cache.py", "--rate", "-1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--rate" in proc.stderr


@pytest.mark.parametrize("dry_run", [False, True])
def test_every_url_skipped_is_an_error_not_a_quiet_success(
    warm, httpserver: HTTPServer, httpserver_ipv4: HTTPServer, dry_run: bool
) -> None:
    # SITE_URL says localhost, the sitemap lists 127.0.0.1: a classic host mismatch.
    other = [httpserver_ipv4.url_for("/a"), httpserver_ipv4.url_for("/b")]
    httpserver.expect_request("/s.xml").respond_with_data(urlset(other))
    proc = warm("--sitemap", httpserver.url_for("/s.xml"), *(["--dry-run"] if dry_run else []))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("Error: ")]
    assert "no URL was warmed" in line and "off-host 2" in line and "ALLOWED_HOSTS (localhost)" in line
    assert httpserver_ipv4.log == []


def test_sitemap_without_site_url_or_allowed_hosts(warm, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/s.xml").respond_with_data(urlset([httpserver.url_for("/a")]))
    proc = warm("--sitemap", httpserver.url_for("/s.xml"), env={"SITE_URL": ""})
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("Error: ")]
    assert "set SITE_URL or ALLOWED_HOSTS" in line
    assert httpserver.log == []
