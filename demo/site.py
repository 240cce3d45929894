"""A loopback demo site that behaves like an origin behind Cloudflare, for `make demo` and tests.

It answers with Cloudflare-like headers from an emulated edge cache:
- cacheable routes (static assets, and HTML pages under the "cache everything" rule): MISS, then HIT
  with an `Age`, until purged through `POST /__edgecron/purge`;
- BYPASS when a login cookie is sent or the path is a bypass path; DYNAMIC for uncached HTML (/search);
- one planted misconfiguration: /pricing is cached even for logged-in visitors (the bypass rule
  forgot it), which `check_cache_rules.py` should report;
- a `cf-ray` on every response, `<16 hex>-<data centre>`, the data centre taken in turn from
  `--data-centres` (default FRA: one VPS usually reaches one data centre).
Only requests that miss the emulated edge reach the "origin", and only those are written to the
nginx-style access log, exactly as an origin behind Cloudflare sees its traffic.

Run: python demo/site.py --port 0 --access-log /tmp/access.log [--pages 40] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

STATIC_TYPES = {".css": "text/css", ".js": "application/javascript", ".png": "image/png", ".svg": "image/svg+xml"}
BYPASS_PREFIXES = ("/account", "/admin", "/login", "/cart")
LOGIN_COOKIES = ("sessionid=", "wordpress_logged_in_")
DYNAMIC_PATHS = ("/search",)
PLANTED_CACHED_FOR_LOGGED_IN = ("/pricing",)  # the deliberate misconfiguration
# Access log lines use the `edgecron` preset of lib/edgecron/logformat.py (see notes/nginx-log-format.md).
FIXED_PAGES = ("/", "/about", "/pricing", "/search", "/account")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class Cached:
    stored_at: float
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class SiteState:
    pages: int = 40
    latency: float = 0.0
    access_log: Path | None = None
    cache: dict[str, Cached] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    purges: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    log_lock: threading.Lock = field(default_factory=threading.Lock)
    slow_paths: dict[str, float] = field(default_factory=dict)
    versions: Counter[str] = field(default_factory=Counter)  # bumped by POST /__edgecron/edit
    error_paths: dict[str, int] = field(default_factory=dict)
    data_centres: tuple[str, ...] = ("FRA",)  # IATA codes put in cf-ray, in turn
    responses: itertools.count[int] = field(default_factory=itertools.count)

    def next_ray(self) -> str:
        """A Ray ID as Cloudflare sends it: 16 hex digits, then the answering data centre."""
        turn = next(self.responses)
        return f"{random.getrandbits(64):016x}-{self.data_centres[turn % len(self.data_centres)]}"

    def page_version(self, path: str) -> int:
        return self.versions[path] + 1

    def page_paths(self) -> list[str]:
        posts = [f"/blog/post-{i}" for i in range(1, self.pages + 1)]
        return [*FIXED_PAGES, *posts]

    def is_page(self, path: str) -> bool:
        if path in FIXED_PAGES:
            return True
        number = path.removeprefix("/blog/post-")
        return number != path and number.isdigit() and 1 <= int(number) <= self.pages

    def asset_paths(self) -> list[str]:
        return ["/static/app.css", "/static/app.js", "/static/logo.svg", "/static/hero.png"]


class DemoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-origin"
    sys_version = ""
    site: SiteState  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY a keep-alive response stalls ~40 ms on Nagle + delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the access log is ours
        pass

    # --- routing ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._started = time.monotonic()
        parts = urlsplit(self.path)
        path = parts.path
        site = self.site
        site.stats["requests"] += 1
        if self.headers.get("Cookie"):
            site.stats["requests_with_cookie"] += 1
        if self.headers.get("Authorization"):
            site.stats["requests_with_authorization"] += 1
        if self.headers.get("Origin"):
            site.stats["requests_with_origin"] += 1
        if path == "/__edgecron/stats":
            return self._send(200, {"Content-Type": "application/json"}, json.dumps(self._stats()).encode())
        logged_in = any(marker in (self.headers.get("Cookie") or "") for marker in LOGIN_COOKIES)
        cacheable = self._cacheable(path)
        bypass = path.startswith(BYPASS_PREFIXES) or (logged_in and path not in PLANTED_CACHED_FOR_LOGGED_IN)
        key = self.path
        if cacheable and not bypass:
            with site.lock:
                hit = site.cache.get(key)
            if hit is not None:
                site.stats["edge_hits"] += 1
                headers = dict(hit.headers, **{"cf-cache-status": "HIT", "Age": str(int(time.time() - hit.stored_at))})
                return self._send(hit.status, headers, hit.body, origin=False)
        status, headers, body = self._origin(path, parts.query, logged_in=logged_in)
        if site.latency:
            time.sleep(site.latency)
        if not cacheable:
            cache_status = "DYNAMIC"
        elif bypass:
            cache_status = "BYPASS"
        else:
            cache_status = "MISS"
            if status == 200:
                stored = {k: v for k, v in headers.items() if k.lower() != "set-cookie"}
                with site.lock:
                    site.cache[key] = Cached(time.time(), status, stored, body)
        headers["cf-cache-status"] = cache_status
        self._send(status, headers, body, origin=True, cache_status=cache_status)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        if path == "/__edgecron/purge":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._send(400, {"Content-Type": "text/plain"}, b"bad json\n")
            dropped = purge_site_cache(self.site, body)
            return self._send(200, {"Content-Type": "application/json"}, json.dumps({"dropped": dropped}).encode())
        if path == "/__edgecron/edit":  # a "deploy" changes these pages' content
            with self.site.lock:
                for page in json.loads(raw or b"{}").get("paths", []):
                    self.site.versions[page] += 1
            return self._send(200, {"Content-Type": "application/json"}, b"{}")
        if path == "/__edgecron/fault":
            spec = json.loads(raw or b"{}")
            with self.site.lock:
                for p, seconds in spec.get("slow", {}).items():
                    self.site.slow_paths[p] = float(seconds)
                for p, status in spec.get("error", {}).items():
                    self.site.error_paths[p] = int(status)
            return self._send(200, {"Content-Type": "application/json"}, b"{}")
        self._send(405, {"Content-Type": "text/plain"}, b"method not allowed\n")

    # --- content ---------------------------------------------------------------------------------

    def _cacheable(self, path: str) -> bool:
        # Sitemaps and robots.txt are fetched from the origin (a cached sitemap would hide new URLs).
        return not (path in DYNAMIC_PATHS or path.startswith("/api/") or path.endswith((".xml", ".gz", ".txt")))

    def _origin(self, path: str, query: str, *, logged_in: bool) -> tuple[int, dict[str, str], bytes]:
        site = self.site
        if path in site.slow_paths:
            time.sleep(site.slow_paths[path])
        if path in site.error_paths:
            return site.error_paths[path], {"Content-Type": "text/plain"}, b"planted error\n"
        mounted = _mounted_routes(path, query)
        if mounted is not None:
            return mounted
        base = self._base_url()
        if path == "/robots.txt":
            return (
                200,
                {"Content-Type": "text/plain"},
                f"User-agent: *\nDisallow: /account\nSitemap: {base}/sitemap.xml\n".encode(),
            )
        if path in ("/sitemap.xml", "/sitemap_index.xml"):  # the second is the name WordPress SEO plugins use
            return (
                200,
                {"Content-Type": "application/xml"},
                sitemap_index(base, ["sitemap-pages.xml", "sitemap-posts.xml.gz"]),
            )
        if path == "/sitemap-pages.xml":
            # not /account: robots.txt disallows it and it is a bypass path (a warm run would warn)
            urls = [base + p for p in ("/", "/about", "/pricing", "/search")]
            urls += [base + a for a in site.asset_paths()]
            return 200, {"Content-Type": "application/xml"}, urlset(urls)
        if path == "/sitemap-posts.xml.gz":
            posts = [f"{base}/blog/post-{i}" for i in range(1, site.pages + 1)]
            return 200, {"Content-Type": "application/gzip"}, gzip.compress(urlset(posts), mtime=0)
        suffix = Path(path).suffix
        if suffix in STATIC_TYPES and path in site.asset_paths():
            body = f"/* {path} */\n".encode() * 20
            return 200, {"Content-Type": STATIC_TYPES[suffix], "Cache-Control": "public, max-age=86400"}, body
        if site.is_page(path):
            headers = {"Content-Type": "text/html; charset=utf-8"}
            if path in ("/account",) or (logged_in and path not in PLANTED_CACHED_FOR_LOGGED_IN):
                headers["Cache-Control"] = "private, no-store"
            else:
                headers["Cache-Control"] = "public, max-age=300"
            if path == "/":
                headers["Set-Cookie"] = "demo_seen=1; Path=/"  # a warmer must never send this back
            title = path.strip("/") or "home"
            version = site.versions[path] + 1
            return 200, headers, f"<!doctype html><title>{title}</title><h1>{title}</h1><p>v{version}</p>\n".encode()
        return 404, {"Content-Type": "text/html"}, b"<h1>not found</h1>\n"

    def _logged_in(self) -> bool:
        return any(marker in (self.headers.get("Cookie") or "") for marker in LOGIN_COOKIES)

    def _base_url(self) -> str:
        port = getattr(self.server, "server_port", 0)  # an HTTPServer bound to 127.0.0.1
        return f"http://127.0.0.1:{port}"

    def _stats(self) -> dict[str, Any]:
        with self.site.lock:
            return {**self.site.stats, "cached": sorted(self.site.cache), "purges": list(self.site.purges)}

    # --- wire --------------------------------------------------------------------------------------

    def _send(
        self, status: int, headers: dict[str, str], body: bytes, *, origin: bool = False, cache_status: str = "-"
    ) -> None:
        headers = dict(headers)
        headers.setdefault("cf-ray", self.site.next_ray())
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head += [f"Content-Length: {len(body)}", "Server: demo-origin", "", ""]
        payload = "\r\n".join(head).encode("latin-1") + (b"" if self.command == "HEAD" else body)
        self.wfile.write(payload)  # one send: headers and body together
        if origin and self.site.access_log is not None:
            self._log(status, len(body), cache_status, headers.get("cf-ray", "-"), headers.get("Cache-Control", "-"))

    def _log(self, status: int, size: int, cache_status: str, ray: str, cache_control: str) -> None:
        elapsed = time.monotonic() - self._started
        now = time.localtime()
        offset = time.strftime("%z", now)
        stamp = f"{now.tm_mday:02d}/{MONTHS[now.tm_mon - 1]}/{now.tm_year}:{time.strftime('%H:%M:%S', now)} {offset}"
        agent = (self.headers.get("User-Agent") or "-").replace('"', "\\x22")
        request = f"{self.command} {self.path} {self.request_version}".replace('"', "\\x22")
        line = (
            f'{self.client_address[0]} - - [{stamp}] "{request}" {status} {size} "-" "{agent}" '
            f'rt={elapsed:.3f} urt="{elapsed:.3f}" cs={cache_status} ray={ray} cip={self.client_address[0]} '
            f'li={1 if self._logged_in() else 0} cc="{cache_control}"\n'
        )
        with self.site.log_lock, open(self.site.access_log, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
            fh.write(line)


def purge_site_cache(site: SiteState, body: dict[str, Any]) -> int:
    """Drop cache entries matching a Cloudflare purge body; returns how many were dropped."""
    with site.lock:
        site.purges.append(body)
        keys = list(site.cache)
        if body.get("purge_everything"):
            doomed = keys
        elif "files" in body:
            paths = set()
            for item in body["files"]:
                url = item["url"] if isinstance(item, dict) else item
                parts = urlsplit(url)
                paths.add(parts.path + (f"?{parts.query}" if parts.query else ""))
            doomed = [k for k in keys if k in paths]
        elif "prefixes" in body:
            prefixes = ["/" + p.split("/", 1)[1] if "/" in p else "/" for p in body["prefixes"]]
            doomed = [k for k in keys if k.startswith(tuple(prefixes))]
        else:  # hosts and tags: this one-host demo has no tags, so both drop everything
            doomed = keys
        for key in doomed:
            del site.cache[key]
        return len(doomed)


def _mounted_routes(path: str, query: str) -> tuple[int, dict[str, str], bytes] | None:
    """Routes other demo modules provide (e.g. the content store's feed and article pages)."""
    try:
        from demo import content_routes
    except ImportError:
        return None
    handle = getattr(content_routes, "handle", None)
    return handle(path, parse_qs(query)) if handle else None


def urlset(urls: list[str]) -> bytes:
    items = "".join(f"<url><loc>{u}</loc><lastmod>2026-11-01</lastmod></url>" for u in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{items}</urlset>\n'
    ).encode()


def sitemap_index(base: str, children: list[str]) -> bytes:
    items = "".join(f"<sitemap><loc>{base}/{c}</loc></sitemap>" for c in children)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{items}</sitemapindex>\n'
    ).encode()


class DemoSite:
    """The demo site in a background thread: `with DemoSite(access_log=p) as site: site.url`."""

    def __init__(
        self,
        *,
        port: int = 0,
        access_log: Path | None = None,
        pages: int = 40,
        latency: float = 0.0,
        data_centres: tuple[str, ...] = ("FRA",),
    ) -> None:
        self.state = SiteState(pages=pages, latency=latency, access_log=access_log, data_centres=data_centres)
        handler = type("BoundDemoHandler", (DemoHandler,), {"site": self.state})
        ThreadingHTTPServer.daemon_threads = True
        ThreadingHTTPServer.request_queue_size = 256
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> DemoSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()  # serve_forever polls every 0.05 s (below)
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgecron demo site (loopback only)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--access-log", type=Path, default=None)
    parser.add_argument("--pages", type=int, default=40, help="number of /blog/post-N pages")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each origin response")
    parser.add_argument(
        "--data-centres", default="FRA", help="IATA codes the cf-ray names, in turn, comma-separated (e.g. FRA,AMS)"
    )
    args = parser.parse_args(argv)
    site = DemoSite(
        port=args.port,
        access_log=args.access_log,
        pages=args.pages,
        latency=args.latency,
        data_centres=tuple(code.strip().upper() for code in args.data_centres.split(",") if code.strip()) or ("FRA",),
    )
    print(f"listening on {site.url}", flush=True)
    try:
        site.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        site.server.server_close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
