"""Sitemap sources and hostile sitemaps, through the real script against a real loopback server.

Each bad input must end in the documented exit code with one `Error: …` line (what was wrong and
what was expected) and no traceback; partial problems keep what was read and exit 1.
"""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from edgecron.http import make_session
from edgecron.sitemap import SitemapReader
from pytest_httpserver import HTTPServer

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def urlset(urls: list[str]) -> bytes:
    items = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">{items}</urlset>\n'.encode()


def sitemap_index(urls: list[str]) -> bytes:
    items = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="{NS}">{items}</sitemapindex>\n'.encode()


def gzip_of_repeated(prefix: bytes, filler: bytes, total: int) -> bytes:
    """`prefix` then `total` bytes of `filler`, gzipped in a stream (never held uncompressed)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(prefix)]
    block = filler * (1024 * 1024 // len(filler))
    for _ in range(total // len(block)):
        out.append(packer.compress(block))
    out.append(packer.flush())
    return b"".join(out)


def serve_pages(server: HTTPServer, paths: list[str], cache_status: str = "MISS") -> list[str]:
    for path in paths:
        server.expect_request(path).respond_with_data("page", headers={"cf-cache-status": cache_status})
    return [server.url_for(p) for p in paths]


def requested_paths(server: HTTPServer) -> list[str]:
    return [request.path for request, _ in server.log]


def error_line(proc) -> str:  # type: ignore[no-untyped-def]
    """The one `Error: …` line on stderr (and no traceback anywhere)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, proc.stderr
    assert "expected" in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def warm(run_cli, httpserver: HTTPServer):  # type: ignore[no-untyped-def]
    """Run warm_cache.py with SITE_URL on the loopback server and no rate limit."""

    def run(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        full = {"SITE_URL": httpserver.url_for("/").rstrip("/"), "WARM_RATE": "0"}
        full.update(env or {})
        return run_cli("warm_cache.py", *args, env=full)

    return run


# --- hostile or broken XML ---------------------------------------------------------------------


def test_truncated_xml_with_nothing_readable_is_an_input_error(warm, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sitemap.xml").respond_with_data(f'<urlset xmlns="{NS}"><url><lo')
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"))
    assert proc.returncode == 2
    line = error_line(proc)
    assert "not well-formed XML" in line and "sitemap.xml" in line


def test_truncated_xml_keeps_the_urls_read_before_the_cut(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a", "/b"])
    body = urlset(pages).decode()
    httpserver.expect_request("/sitemap.xml").respond_with_data(body[: body.index("</urlset>") + 4])
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "not well-formed XML" in proc.stderr
    assert sorted(p for p in requested_paths(httpserver) if p != "/sitemap.xml") == ["/a", "/b"]


BILLION_LAUGHS = f"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<urlset xmlns="{NS}"><url><loc>http://localhost/&lol4;</loc></url></urlset>
"""

XXE = f"""<?xml version="1.0"?>
<!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<urlset xmlns="{NS}"><url><loc>http://localhost/&xxe;</loc></url></urlset>
"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, XXE], ids=["entity-expansion", "external-entity"])
def test_entity_declarations_are_refused(warm, httpserver: HTTPServer, body: str) -> None:
    httpserver.expect_request("/sitemap.xml").respond_with_data(body, content_type="application/xml")
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"), "--json")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "DOCTYPE" in line and "refused for safety" in line
    assert "root:" not in proc.stdout + proc.stderr
    assert requested_paths(httpserver) == ["/sitemap.xml"]


def test_gzip_bomb_stops_at_the_configured_decompressed_cap(warm, httpserver: HTTPServer) -> None:
    # 100 MB of whitespace inside <urlset>, ~100 KB on the wire: only the decompressed cap stops it.
    bomb = gzip_of_repeated(f'<urlset xmlns="{NS}">'.encode(), b" ", 100 * 1024 * 1024)
    httpserver.expect_request("/sitemap.xml.gz").respond_with_data(bomb, content_type="application/octet-stream")
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml.gz"), env={"SITEMAP_MAX_BYTES": "1048576"})
    assert proc.returncode == 2
    line = error_line(proc)
    assert "larger than 1048576 bytes once decompressed" in line


@pytest.mark.parametrize(
    "prefix,filler",
    [(b"", b"\0"), (f'<urlset xmlns="{NS}">'.encode(), b" ")],
    ids=["zeros", "xml-whitespace"],
)
@pytest.mark.slow
def test_gzip_bomb_stops_at_the_default_cap(warm, httpserver: HTTPServer, prefix: bytes, filler: bytes) -> None:
    bomb = gzip_of_repeated(prefix, filler, 100 * 1024 * 1024)
    httpserver.expect_request("/sitemap.xml.gz").respond_with_data(bomb, content_type="application/gzip")
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml.gz"))
    assert proc.returncode == 2
    line = error_line(proc)
    # Zeros are no URL list: refused at the first over-long "line"; XML is refused at the cap.
    assert "52428800 bytes" in line or "longer than" in line


def test_gzip_bomb_in_content_encoding_is_capped_too(warm, httpserver: HTTPServer) -> None:
    bomb = gzip_of_repeated(f'<urlset xmlns="{NS}">'.encode(), b" ", 100 * 1024 * 1024)
    httpserver.expect_request("/sitemap.xml").respond_with_data(
        bomb, content_type="application/xml", headers={"Content-Encoding": "gzip"}
    )
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"), env={"SITEMAP_MAX_BYTES": "1048576"})
    assert proc.returncode == 2
    assert "larger than 1048576 bytes once decompressed" in error_line(proc)


@pytest.mark.parametrize(
    "body",
    [
        "<!DOCTYPE html>\n<html><head><title>Oops</title></head><body>Not found</body></html>",
        "<html><head><title>Oops</title></head><body>Not found</body></html>",
        "<!doctype html>\n<html><body><p>soft 404<br></body></html>",
    ],
    ids=["doctype", "no-doctype", "lowercase-doctype"],
)
def test_html_page_instead_of_a_sitemap(warm, httpserver: HTTPServer, body: str) -> None:
    httpserver.expect_request("/sitemap.xml").respond_with_data(body, content_type="text/html")
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"))
    assert proc.returncode == 2
    line = error_line(proc)
    assert "HTML page" in line
    assert requested_paths(httpserver) == ["/sitemap.xml"]


@pytest.mark.parametrize("status,exit_code", [(404, 2), (500, 75)])
def test_sitemap_http_errors(warm, httpserver: HTTPServer, status: int, exit_code: int) -> None:
    httpserver.expect_request("/sitemap.xml").respond_with_data("nope", status=status)
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"))
    assert proc.returncode == exit_code
    line = error_line(proc)
    assert f"HTTP {status}" in line
    if exit_code == 75:
        assert "rerun" in proc.stderr.lower()


def test_redirect_to_another_host_is_refused_not_followed(
    warm, httpserver: HTTPServer, httpserver_ipv4: HTTPServer
) -> None:
    other = httpserver_ipv4.url_for("/sitemap.xml")  # 127.0.0.1: not the allowed host "localhost"
    httpserver_ipv4.expect_request("/sitemap.xml").respond_with_data(urlset([other]))
    httpserver.expect_request("/sitemap.xml").respond_with_data("", status=302, headers={"Location": other})
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"))
    assert proc.returncode == 2
    line = error_line(proc)
    assert "not allowed" in line and "127.0.0.1" in line
    assert httpserver_ipv4.log == []


def test_redirect_on_the_same_host_is_followed(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a"])
    httpserver.expect_request("/old.xml").respond_with_data("", status=301, headers={"Location": "/new.xml"})
    httpserver.expect_request("/new.xml").respond_with_data(urlset(pages))
    proc = warm("--sitemap", httpserver.url_for("/old.xml"))
    assert proc.returncode == 0, proc.stderr
    assert requested_paths(httpserver) == ["/old.xml", "/new.xml", "/a"]


def test_index_that_includes_itself_skips_the_loop(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a", "/b"])
    index = httpserver.url_for("/sitemap.xml")
    child = httpserver.url_for("/pages.xml")
    httpserver.expect_request("/sitemap.xml").respond_with_data(sitemap_index([index, child, child]))
    httpserver.expect_request("/pages.xml").respond_with_data(urlset(pages))
    proc = warm("--sitemap", index, "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["summary"]["requested"] == 2
    assert any("loop" in p for p in doc["sitemap_problems"])
    assert sorted(requested_paths(httpserver)) == ["/a", "/b", "/pages.xml", "/sitemap.xml"]


def test_off_host_and_overlong_locs_are_skipped_and_counted(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a"])
    long_loc = httpserver.url_for("/" + "x" * 2100)
    body = urlset([*pages, "https://evil.example/steal", long_loc, "/relative/path"])
    httpserver.expect_request("/sitemap.xml").respond_with_data(body)
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["summary"]["requested"] == 1
    assert doc["dropped"]["counts"] == {"off-host": 1, "too-long": 1, "invalid": 1}
    assert requested_paths(httpserver) == ["/sitemap.xml", "/a"]


def test_loc_of_2047_characters_is_accepted(httpserver: HTTPServer) -> None:
    base = httpserver.url_for("/")
    ok = base + "y" * (2047 - len(base))
    too_long = base + "z" * (2048 - len(base))
    httpserver.expect_request("/sitemap.xml").respond_with_data(urlset([ok, too_long]))
    reader = SitemapReader(make_session(), allowed_hosts=["localhost"])
    urls = [e.url for e in reader.iter_entries([httpserver.url_for("/sitemap.xml")])]
    assert urls == [ok]
    assert reader.report.dropped.counts == {"too-long": 1}


@pytest.mark.slow
def test_more_than_50000_urls_keeps_the_first_50000(warm, httpserver: HTTPServer) -> None:
    base = httpserver.url_for("/p")
    httpserver.expect_request("/big.xml").respond_with_data(urlset([f"{base}{i}" for i in range(50_005)]))
    proc = warm("--sitemap", httpserver.url_for("/big.xml"), "--dry-run")
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 50_000
    assert lines[-1].endswith(f"{base}49999")
    assert "more than 50000 URLs" in proc.stderr
    assert requested_paths(httpserver) == ["/big.xml"]


def test_max_urls_per_file_in_a_real_run(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, [f"/p{i}" for i in range(5)])
    httpserver.expect_request("/sitemap.xml").respond_with_data(urlset(pages))
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"), "--json", env={"SITEMAP_MAX_URLS": "3"})
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["summary"]["requested"] == 3
    assert any("more than 3 URLs" in p for p in doc["sitemap_problems"])


# --- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xml", "text"])
def test_byte_order_mark_is_tolerated(warm, httpserver: HTTPServer, kind: str) -> None:
    pages = serve_pages(httpserver, ["/a", "/b"])
    body = urlset(pages) if kind == "xml" else "\n".join(pages).encode()
    httpserver.expect_request("/sitemap.xml").respond_with_data(b"\xef\xbb\xbf" + body)
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(requested_paths(httpserver)) == ["/a", "/b", "/sitemap.xml"]


def test_plain_text_sitemap(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a", "/b", "/c"])
    body = "# comment\n" + pages[0] + "\r\n\n" + pages[1] + "\n  " + pages[2]  # CRLF, blank, no final newline
    httpserver.expect_request("/sitemap.txt").respond_with_data(body, content_type="text/plain")
    proc = warm("--sitemap", httpserver.url_for("/sitemap.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["requested"] == 3
    assert sorted(requested_paths(httpserver)) == ["/a", "/b", "/c", "/sitemap.txt"]


def test_plain_text_that_is_not_a_url_list(warm, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sitemap.txt").respond_with_data("hello world\n", content_type="text/plain")
    proc = warm("--sitemap", httpserver.url_for("/sitemap.txt"))
    assert proc.returncode == 2
    assert "neither XML nor a plain-text URL list" in error_line(proc)


def test_gzip_served_as_octet_stream_without_content_encoding(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a", "/b"])
    index = sitemap_index([httpserver.url_for("/posts.xml.gz")])
    httpserver.expect_request("/sitemap.xml").respond_with_data(index)
    httpserver.expect_request("/posts.xml.gz").respond_with_data(
        gzip.compress(urlset(pages)), content_type="application/octet-stream"
    )
    proc = warm("--sitemap", httpserver.url_for("/sitemap.xml"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["requested"] == 2


def test_truncated_gzip_is_reported(warm, httpserver: HTTPServer) -> None:
    packed = gzip.compress(urlset([httpserver.url_for("/a")]))
    httpserver.expect_request("/s.xml.gz").respond_with_data(packed[: len(packed) // 2])
    proc = warm("--sitemap", httpserver.url_for("/s.xml.gz"))
    assert proc.returncode == 2
    assert "gzip" in error_line(proc)


def test_index_nested_deeper_than_the_cap(httpserver: HTTPServer) -> None:
    for level in range(4):
        httpserver.expect_request(f"/s{level}.xml").respond_with_data(
            sitemap_index([httpserver.url_for(f"/s{level + 1}.xml")])
        )
    httpserver.expect_request("/s4.xml").respond_with_data(urlset([httpserver.url_for("/deep")]))
    reader = SitemapReader(make_session(), allowed_hosts=["localhost"], max_depth=2)
    assert list(reader.iter_entries([httpserver.url_for("/s0.xml")])) == []
    assert "/s4.xml" not in requested_paths(httpserver)
    assert any("nested too deep" in p.message for p in reader.report.problems)


def test_missing_namespace_and_whitespace_in_loc(httpserver: HTTPServer) -> None:
    body = f"<urlset><url><loc>\n   {httpserver.url_for('/a')}  \n</loc><lastmod>2026-11-01</lastmod></url></urlset>"
    httpserver.expect_request("/s.xml").respond_with_data(body)
    reader = SitemapReader(make_session(), allowed_hosts=["localhost"])
    entries = list(reader.iter_entries([httpserver.url_for("/s.xml")]))
    assert [(e.url, e.lastmod) for e in entries] == [(httpserver.url_for("/a"), "2026-11-01")]


# --- discovery ---------------------------------------------------------------------------------


def test_robots_txt_discovery(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a"])
    robots = f"User-agent: *\nDisallow: /admin\nSitemap: {httpserver.url_for('/maps/main.xml')}\n"
    httpserver.expect_request("/robots.txt").respond_with_data(robots, content_type="text/plain")
    httpserver.expect_request("/maps/main.xml").respond_with_data(urlset(pages))
    proc = warm()
    assert proc.returncode == 0, proc.stderr
    assert requested_paths(httpserver) == ["/robots.txt", "/maps/main.xml", "/a"]


def test_robots_txt_listing_itself_falls_back_to_sitemap_xml(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a"])
    robots = f"Sitemap: {httpserver.url_for('/robots.txt')}\n"
    httpserver.expect_request("/robots.txt").respond_with_data(robots, content_type="text/plain")
    httpserver.expect_request("/sitemap.xml").respond_with_data(urlset(pages))
    proc = warm()
    assert proc.returncode == 0, proc.stderr
    assert requested_paths(httpserver) == ["/robots.txt", "/sitemap.xml", "/a"]


def test_no_robots_txt_falls_back_to_sitemap_xml(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a"])
    httpserver.expect_request("/robots.txt").respond_with_data("not found", status=404)
    httpserver.expect_request("/sitemap.xml").respond_with_data(urlset(pages))
    proc = warm()
    assert proc.returncode == 0, proc.stderr
    assert requested_paths(httpserver) == ["/robots.txt", "/sitemap.xml", "/a"]


def test_sitemap_urls_setting_is_used_without_discovery(warm, httpserver: HTTPServer) -> None:
    pages = serve_pages(httpserver, ["/a"])
    httpserver.expect_request("/s.xml").respond_with_data(urlset(pages))
    proc = warm(env={"SITEMAP_URLS": httpserver.url_for("/s.xml")})
    assert proc.returncode == 0, proc.stderr
    assert requested_paths(httpserver) == ["/s.xml", "/a"]
