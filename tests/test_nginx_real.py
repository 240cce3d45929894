"""A real nginx writes the access logs, serves the sitemaps and caches the pages.

One nginx per module (tests/real_nginx.py, `TZ` at +0530), five server blocks:
- `front`: every request is logged at once in four formats (`combined`, the `edgecron` preset as
  pasted from notes/nginx-log-format.md, an `escape=json` format, an upstream format); pages are
  proxied to an upstream whose first server is a closed port (`proxy_next_upstream error`, the
  origin as backup: every miss tries the dead one first, so nginx writes two attempts such as
  `0.000, 0.001`) through `proxy_cache`. Behind `/slow/` the backup is a Python origin
  (tests/loopback_site.py) sending its body a byte every 10 ms (`0.000, 0.031`); behind `/flaky/`
  the first server never answers (`proxy_read_timeout 300ms`, then the slow origin: both attempts
  take time, `0.300, 0.021`, so the sum and the last attempt differ; 300 ms, not less: the same
  timeout applies between the slow origin's bytes, which a loaded machine may delay).
- `origin`: static pages, `expires 1h`.
- `fuzz`: the four formats again, for 300 requests of random bytes (seeded).
- `rotate`: a log renamed under nginx, which keeps writing to it until SIGUSR1 (logrotate's way).
- `big`: headers up to 128k, so a request can make nginx write a line over the reader's 64 KiB cap.
- `cdn`: robots.txt and sitemaps (an index with a `.xml.gz` child served as application/gzip, one
  served as application/octet-stream as Debian's mime.types has it, and a child that exists only
  gzipped, served by `gzip_static`), pages through `proxy_cache` with
  `cf-cache-status` taken from `$upstream_cache_status`: what the warmer sees behind Cloudflare.

Requests go over raw sockets with quotes, backslashes, UTF-8, invalid UTF-8 and control bytes in
the URI, the referer and the user agent. Every line nginx wrote must parse through the library
(the way scripts/check_logs.py reads it) and give back exactly what was sent.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from edgecron.logformat import LogFormat, resolve_format, time_parser, upstream_seconds
from edgecron.logsummary import LogSummary
from loopback_site import LoopbackSite, Route
from real_nginx import (
    RawResponse,
    RealNginx,
    has_ipv6_loopback,
    raw_request,
    require_nginx,
    start_nginx,
    unescape,
    wait_for_lines,
)

pytestmark = pytest.mark.slow

JSON_DIRECTIVE = (
    'log_format jsonfmt escape=json \'{"time":"$time_local","remote_addr":"$remote_addr",'
    '"request":"$request","status":"$status","bytes":"$body_bytes_sent","referer":"$http_referer",'
    '"ua":"$http_user_agent","urt":"$upstream_response_time","cs":"$upstream_cache_status"}\';'
)
# Pasted over several lines, as it stands in nginx.conf.
UPSTREAM_DIRECTIVE = """log_format upstreams '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                     'urt="$upstream_response_time" uct="$upstream_connect_time" '
                     'ua="$upstream_addr" us="$upstream_status" cs=$upstream_cache_status';"""


def documented_snippet() -> str:
    """The `map` and `log_format edgecron` an operator copies from notes/nginx-log-format.md."""
    text = (ROOT / "notes" / "nginx-log-format.md").read_text()
    block = re.search(r"## Recommended snippet.*?```nginx\n(.*?)```", text, re.S)
    assert block, "notes/nginx-log-format.md lost its nginx snippet"
    return "\n".join(line for line in block.group(1).splitlines() if not line.strip().startswith("access_log"))


# (name, LOG_FORMAT as an operator sets it, the escaping nginx uses for it)
FORMATS = {
    "combined": ("combined", "default"),
    "edgecron": ("edgecron", "default"),
    "json": (JSON_DIRECTIVE, "json"),
    "upstreams": (UPSTREAM_DIRECTIVE, "default"),
}

HTTP = """
{snippet}
{json_directive}
{upstream_directive}
proxy_cache_path {prefix}/cache-front keys_zone=front:1m;
proxy_cache_path {prefix}/cache-cdn keys_zone=cdn:1m;
upstream dead_first {{
    server 127.0.0.1:{dead} max_fails=0;
    server 127.0.0.1:{port_origin} backup;
}}
upstream dead_then_slow {{
    server 127.0.0.1:{dead} max_fails=0;
    server 127.0.0.1:{slow_port} backup;
}}
upstream hang_then_slow {{
    server 127.0.0.1:{hang_port} max_fails=0;
    server 127.0.0.1:{slow_port} backup;
}}
upstream all_dead {{
    server 127.0.0.1:{dead} max_fails=0;
    server 127.0.0.1:{dead} backup;
}}
server {{
    listen 127.0.0.1:{port_front};
    {listen_v6}
    access_log {prefix}/logs/combined.log combined;
    access_log {prefix}/logs/edgecron.log edgecron;
    access_log {prefix}/logs/json.log jsonfmt;
    access_log {prefix}/logs/upstreams.log upstreams;
    location / {{
        proxy_pass http://dead_first;
        proxy_next_upstream error;
        proxy_cache front;
        proxy_cache_valid 200 10m;
        add_header cf-cache-status $upstream_cache_status always;
    }}
    location /slow/ {{
        proxy_pass http://dead_then_slow;
        proxy_next_upstream error;
        proxy_cache front;
        proxy_cache_valid 200 10m;
        add_header cf-cache-status $upstream_cache_status always;
    }}
    location /flaky/ {{
        proxy_pass http://hang_then_slow;
        proxy_next_upstream error timeout;
        proxy_read_timeout 300ms;
        proxy_cache front;
        proxy_cache_valid 200 10m;
        add_header cf-cache-status $upstream_cache_status always;
    }}
    location = /local {{ return 204; }}
    location /down/ {{ proxy_pass http://all_dead; proxy_next_upstream error; }}
}}
server {{
    listen 127.0.0.1:{port_origin};
    root {prefix}/origin;
    expires 1h;
}}
server {{
    listen 127.0.0.1:{port_fuzz};
    access_log {prefix}/logs/fuzz-combined.log combined;
    access_log {prefix}/logs/fuzz-edgecron.log edgecron;
    access_log {prefix}/logs/fuzz-json.log jsonfmt;
    access_log {prefix}/logs/fuzz-upstreams.log upstreams;
    location / {{ return 204; }}
}}
server {{
    listen 127.0.0.1:{port_rotate};
    access_log {prefix}/logs/rotate/access.log combined;
    location / {{ return 204; }}
}}
server {{
    listen 127.0.0.1:{port_big};
    large_client_header_buffers 4 128k;
    access_log {prefix}/logs/big.log combined;
    location / {{ return 200 "ok"; }}
}}
server {{
    listen 127.0.0.1:{port_cdn};
    access_log {prefix}/logs/cdn.log edgecron;
    root {prefix}/cdn;
    location = /robots.txt {{ }}
    location /sitemaps/ {{ gzip_static on; }}
    # Debian's mime.types has no .gz: with it, nginx serves a .xml.gz as its default_type.
    location /sitemaps/plain-debian/ {{ types {{ }} default_type application/octet-stream; }}
    location / {{
        proxy_pass http://127.0.0.1:{port_origin};
        proxy_cache cdn;
        proxy_cache_valid 200 10m;
        add_header cf-cache-status $upstream_cache_status always;
    }}
}}
"""

IPV6 = has_ipv6_loopback()  # a client at ::1, as in GoAccess's own CI lines
# $time_local in a half-hour zone (+0530): the offset must be applied, not assumed to be UTC.
NGINX_TZ = "XST-5:30"
SLOW_PATHS = {"/slow/a": 1, "/slow/b": 3, "/slow/c": 5, "/flaky/a": 2, "/flaky/b": 4}  # body bytes, one every 10 ms
QUOTED_PAGE = '/caf\u00e9-"q"-\\.html'  # a real file on the origin: quote, backslash, UTF-8 in its name
UA_HOSTILE = b'ua "quoted" \\back\\ \x01\x1b[31mred\x7f\ttab caf\xc3\xa9 \\x22'
REFERER_HOSTILE = b'https://r.example/?q="a\\b"&e=\xc3\xa9&bad=\xff\xfe\x1f'


EMPTY = {"default": b"-", "json": b""}  # how nginx logs a variable with no value


@dataclass(frozen=True)
class Sent:
    """One request as sent, and what nginx must log for it."""

    method: bytes
    target: bytes
    headers: dict[bytes, bytes] = field(default_factory=dict)
    status: int = 200
    route: str = "miss"  # miss (dead server, then origin) | hit | local | down (both dead) | invalid
    host: str = "127.0.0.1"  # the client's address: $remote_addr
    line: bytes | None = None  # bytes sent alone, not an HTTP request at all (TLS to the HTTP port)
    logged_request: bytes | None = None  # $request when nginx logs only part of the request line

    @property
    def mimics(self) -> bool:
        """Sends a header the edgecron preset logs unquoted, with spaces in it."""
        return any(b" " in self.headers.get(name, b"") for name in (b"CF-Ray", b"CF-Connecting-IP"))

    @property
    def logged(self) -> bytes:
        return self.request_line if self.logged_request is None else self.logged_request

    @property
    def slow(self) -> bool:
        """Answered by the Python origin (no Cache-Control), not by nginx's static origin."""
        return self.target.startswith((b"/slow/", b"/flaky/"))

    @property
    def first_attempt(self) -> str:
        """Who the upstream tried first: the closed port, or the server that never answers."""
        return "hang" if self.target.startswith(b"/flaky/") else "dead"

    @property
    def request_line(self) -> bytes:
        return self.line if self.line is not None else self.method + b" " + self.target + b" HTTP/1.1"

    def raw(self) -> bytes:
        if self.line is not None:
            return self.line
        head = [self.request_line, b"Host: front.example", b"Connection: close"]
        head += [name + b": " + value for name, value in self.headers.items()]
        return b"\r\n".join(head) + b"\r\n\r\n"

    def header(self, name: bytes, *, escape: str = "default") -> bytes:
        """What nginx logs for a request header: the bytes sent; when absent or empty, `-`
        (escape=json: nothing, the JSON string is empty)."""
        empty = EMPTY[escape]
        if self.route == "invalid":
            return empty  # a request nginx refuses: the headers are never taken
        return self.headers.get(name) or empty


REQUESTS = [
    Sent(
        b"GET", b"/index.html", {b"User-Agent": b"Mozilla/5.0 (X11; Linux x86_64)", b"Referer": b"https://a.example/"}
    ),
    Sent(b"GET", b"/index.html", {b"User-Agent": b"Mozilla/5.0 (X11; Linux x86_64)"}, route="hit"),
    Sent(b"GET", QUOTED_PAGE.encode(), {b"User-Agent": UA_HOSTILE, b"Referer": REFERER_HOSTILE}),
    Sent(
        b"GET",
        QUOTED_PAGE.encode(),
        {
            b"User-Agent": UA_HOSTILE,
            b"Cookie": b"sessionid=abc",
            b"CF-Ray": b"8f0123456789abcd-FRA",
            b"CF-Connecting-IP": b"2001:db8::7",
        },
        route="hit",
    ),
    Sent(b"GET", b'/missing?q=%22x%22&raw="x"\\y&u=\xc3\xa9', {b"User-Agent": b'"'}, status=404),
    Sent(b"GET", b"/%22pct%5C%0A", {b"Referer": b"-x-", b"User-Agent": b"\\"}, status=404),
    *(Sent(b"GET", path.encode(), {b"User-Agent": b"probe"}) for path in SLOW_PATHS),
    Sent(b"GET", b"/local", status=204, route="local"),
    Sent(b"HEAD", b"/index.html", {b"User-Agent": b"curl/8.5.0"}, route="hit"),
    Sent(b"GET", b"/index.html", {b"User-Agent": b"over IPv6"}, route="hit", host="::1" if IPV6 else "127.0.0.1"),
    # Anyone reaching nginx directly can send these headers; the edgecron preset logs them
    # unquoted, so their spaces can mimic the fields that follow, here `li=1` (logged in) on a
    # cached page: that must not make a "logged-in response served from cache".
    Sent(
        b"GET",
        b"/index.html",
        {b"CF-Ray": b"abc li=1 cip=6.6.6.6", b"CF-Connecting-IP": b"203.0.113.9 li=1 x"},
        route="hit",
    ),
    Sent(b"GET", b"/down/x", {b"User-Agent": b"probe"}, status=502, route="down"),
    Sent(b"GET", b"/ctl\x01byte", status=400, route="invalid"),
    # What every public nginx logs from scanners and broken clients:
    # a URI over large_client_header_buffers (8k): 414, $request is its first 8,192 bytes …
    Sent(b"GET", b"/" + b"u" * 9000, status=414, route="invalid", logged_request=b"GET /" + b"u" * 8187),
    # … a header over it, a NUL in a header: 400 …
    Sent(b"GET", b"/h", {b"User-Agent": b"a" * 9000}, status=400, route="invalid"),
    Sent(b"GET", b"/h", {b"User-Agent": b"a\x00b"}, status=400, route="invalid"),
    # … and a TLS ClientHello sent to the plain HTTP port: 400, the binary bytes as $request.
    Sent(b"", b"", status=400, route="invalid", line=b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
]


@dataclass
class Exchange:
    nginx: RealNginx
    answers: list[RawResponse]
    started: float
    ended: float
    check_logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # format → check_logs.py --json summary

    def log(self, name: str) -> Path:
        return self.nginx.prefix / "logs" / f"{name}.log"

    def read(self, name: str) -> tuple[LogFormat, str, list[bytes]]:
        """The format `name` compiled from its LOG_FORMAT, its escaping, and the lines nginx wrote."""
        log_format, escape = FORMATS[name]
        return resolve_format(log_format), escape, self.log(name).read_bytes().splitlines()


def _write_sites(prefix: Path) -> None:
    origin = prefix / "origin"
    (origin / "pages").mkdir(parents=True)
    (origin / "index.html").write_text("<h1>index</h1>\n")
    (origin / QUOTED_PAGE.lstrip("/")).write_text("<h1>quoted</h1>\n")
    for name in PAGES:
        (origin / "pages" / name).write_text(f"<h1>{name}</h1>\n")
    (prefix / "logs" / "rotate").mkdir(parents=True)
    (prefix / "cdn" / "sitemaps").mkdir(parents=True)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNginx]:
    require_nginx()
    prefix = tmp_path_factory.mktemp("nginx")
    _write_sites(prefix)
    slow = LoopbackSite(name="slow origin")
    for path, size in SLOW_PATHS.items():
        slow.routes[path] = Route(body=b"s" * size, behaviour="trickle", interval=0.01)
    hang = LoopbackSite(name="hanging upstream")
    hang.default = Route(behaviour="silent")
    http = HTTP.replace("{snippet}", documented_snippet().replace("{", "{{").replace("}", "}}"))
    http = http.replace("{json_directive}", JSON_DIRECTIVE.replace("{", "{{").replace("}", "}}"))
    http = http.replace("{upstream_directive}", UPSTREAM_DIRECTIVE).replace("{slow_port}", str(slow.port))
    http = http.replace("{hang_port}", str(hang.port))
    http = http.replace("{listen_v6}", "listen [::1]:{port_front};" if IPV6 else "")
    try:
        with start_nginx(
            prefix, http=http, servers=["front", "origin", "cdn", "big", "fuzz", "rotate"], timezone=NGINX_TZ
        ) as server:
            server.extra.update(slow=slow.port, hang=hang.port)
            _write_sitemaps(server)
            yield server
    finally:
        slow.close()
        hang.close()


@pytest.fixture(scope="module")
def exchange(nginx: RealNginx) -> Exchange:
    started = time.time()
    answers = [raw_request(nginx.ports["front"], sent.raw(), host=sent.host) for sent in REQUESTS]
    ended = time.time()
    for name in FORMATS:
        wait_for_lines(nginx.prefix / "logs" / f"{name}.log", len(REQUESTS))
    return Exchange(nginx, answers, started, ended)


def test_nginx_answered_as_planned(exchange: Exchange) -> None:
    """The premise of the log tests: statuses and cache statuses are the ones each request was built for."""
    assert [a.status for a in exchange.answers] == [s.status for s in REQUESTS], exchange.nginx.error_log
    cache = [a.headers.get("cf-cache-status") for a in exchange.answers]
    assert cache == [{"miss": "MISS", "hit": "HIT"}.get(s.route) for s in REQUESTS]


def _columns(fmt: LogFormat, lines: list[bytes]) -> dict[str, list[bytes]]:
    """Every variable's column, cut by the parser check_logs.py uses; no line may be refused."""
    parser = fmt.column_parser()
    rows, bad = parser.split(lines)
    assert bad == [], f"{len(bad)} of {len(lines)} real nginx lines refused: {bad[:3]}"
    return {var: get(rows) for var, get in parser.columns.items()}


def _summary(fmt: LogFormat, lines: list[bytes]) -> LogSummary:
    summary = LogSummary(fmt)
    summary.feed(lines)
    return summary


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_line_nginx_wrote_parses(exchange: Exchange, name: str) -> None:
    fmt, _, lines = exchange.read(name)
    summary = _summary(fmt, lines)
    assert (summary.lines, summary.requests, summary.malformed) == (len(REQUESTS), len(REQUESTS), 0), (
        summary.malformed_samples
    )
    assert summary.statuses == Counter(str(s.status).encode() for s in REQUESTS)
    if fmt.has("upstream_response_time"):  # every request that reached the upstream retried once
        assert summary.upstream_retries == sum(1 for s in REQUESTS if s.route in ("miss", "down"))
    if summary.can_see_logged_in:  # the request with a session cookie got a cached page
        assert summary.loggedin_cached == sum(1 for s in REQUESTS if b"Cookie" in s.headers and s.route == "hit") == 1


@pytest.mark.parametrize("name", list(FORMATS))
def test_values_are_exactly_what_was_sent(exchange: Exchange, name: str) -> None:
    fmt, escape, lines = exchange.read(name)
    cols = _columns(fmt, lines)
    assert len(cols["status"]) == len(REQUESTS)

    expected = {
        "request": [s.logged for s in REQUESTS],
        "status": [str(s.status).encode() for s in REQUESTS],
        "remote_addr": [s.host.encode() for s in REQUESTS],
        "remote_user": [EMPTY[escape]] * len(REQUESTS),
        "http_referer": [s.header(b"Referer", escape=escape) for s in REQUESTS],
        "http_user_agent": [s.header(b"User-Agent", escape=escape) for s in REQUESTS],
        "body_bytes_sent": [
            b"0" if s.method == b"HEAD" else str(len(a.body)).encode()
            for s, a in zip(REQUESTS, exchange.answers, strict=True)
        ],
        # the edgecron preset (None: a value with spaces, unquoted, cannot be told from what follows)
        "http_cf_ray": [None if s.mimics else s.header(b"CF-Ray", escape=escape) for s in REQUESTS],
        "http_cf_connecting_ip": [None if s.mimics else s.header(b"CF-Connecting-IP", escape=escape) for s in REQUESTS],
        "logged_in": [b"1" if b"Cookie" in s.headers else b"0" for s in REQUESTS],
        "sent_http_cache_control": [
            b"max-age=3600" if s.route in ("miss", "hit") and s.status == 200 and not s.slow else EMPTY[escape]
            for s in REQUESTS
        ],
    }
    checked = [var for var in expected if var in cols]
    assert {"request", "status"} <= set(checked)
    for var in checked:
        got = [unescape(value, escape) for value in cols[var]]
        mismatches = [
            (line, want, have)
            for line, want, have in zip(lines, expected[var], got, strict=True)
            if want is not None and want != have
        ]
        assert not mismatches, f"${var}: (line, expected, got) {mismatches}"
    for raw in cols.get("request_time", []):
        assert re.fullmatch(rb"\d+\.\d{3}", raw), raw
    when = time_parser("time_local")
    for raw in cols["time_local"]:
        moment = when(raw)
        assert moment is not None and exchange.started - 2 <= moment <= exchange.ended + 2, raw


# Bytes nginx takes in a header value (NUL is refused, CR/LF end it; blanks at either end are
# trimmed) and in a path (no controls, no space; no `%`, `.`, `/`, `?`, `#`, which it interprets).
HEADER_BYTES = bytes(b for b in range(1, 256) if b not in b"\r\n")
URI_BYTES = bytes(b for b in range(0x21, 256) if b not in b"%./?#\x7f")


# Pieces that look like the log line itself or its escapes, mixed with single random bytes.
LOOKALIKES = (b'"', b"\\", b'" "', b"\\x22", b"\\u0022", b'\\"', b" rt=", b' urt="', b" li=1", b" HTTP/1.1", b"\t")
LOOKALIKES += (b"\x1b[31m", b"\xc3\xa9", b'{"ua":"', b"- -", b"[01/Dec/2026:00:00:00 +0000]", b'" 200 0 "')


def _random_text(rng: random.Random, alphabet: bytes, most: int, *, blanks: bool = True) -> bytes:
    pieces = []
    for _ in range(rng.randint(1, most)):
        if rng.random() < 0.3:
            pieces.append(rng.choice(LOOKALIKES))
        else:
            pieces.append(bytes([rng.choice(alphabet)]))
    value = b"".join(pieces)
    if not blanks:
        value = bytes(b for b in value if b in alphabet)
    return value.strip(b" \t") or b"x"


def test_random_hostile_requests_parse_exactly(nginx: RealNginx) -> None:
    rng = random.Random(11)
    sent = []
    for _ in range(300):
        target = b"/" + _random_text(rng, URI_BYTES, 30, blanks=False)
        if rng.random() < 0.5:
            target += b"?" + _random_text(rng, URI_BYTES + b"%./?", 30, blanks=False)
        user_agent, referer = _random_text(rng, HEADER_BYTES, 40), _random_text(rng, HEADER_BYTES, 40)
        request = b"GET " + target + b" HTTP/1.1"
        head = [request, b"Host: x", b"User-Agent: " + user_agent, b"Referer: " + referer, b"Connection: close"]
        assert raw_request(nginx.ports["fuzz"], b"\r\n".join(head) + b"\r\n\r\n").status == 204, request
        sent.append({"request": request, "http_user_agent": user_agent, "http_referer": referer, "status": b"204"})
    for name, (log_format, escape) in FORMATS.items():
        fmt = resolve_format(log_format)
        lines = wait_for_lines(nginx.prefix / "logs" / f"fuzz-{name}.log", len(sent))
        cols = _columns(fmt, lines)
        for var in ("request", "http_user_agent", "http_referer", "status"):
            if var in cols:
                got = [unescape(v, escape) for v in cols[var]]
                bad = [(line, s[var], g) for line, s, g in zip(lines, sent, got, strict=True) if s[var] != g]
                assert not bad, f"{name} ${var}: (line, sent, got) {bad[:3]}"


def _expected_cache_status(sent: Sent, escape: str) -> bytes:
    return {"miss": b"MISS", "hit": b"HIT"}.get(sent.route, EMPTY[escape])


@pytest.mark.parametrize("name", [n for n in FORMATS if n != "combined"])
def test_upstream_attempts_and_cache_status_are_exact(exchange: Exchange, name: str) -> None:
    """Every miss tried the dead server first: two attempts, each time, summed by the library."""
    fmt, escape, lines = exchange.read(name)
    cols = _columns(fmt, lines)
    assert [unescape(v, escape) for v in cols["upstream_cache_status"]] == [
        _expected_cache_status(s, escape) for s in REQUESTS
    ]
    for sent, raw in zip(REQUESTS, cols["upstream_response_time"], strict=True):
        raw = unescape(raw, escape)
        if sent.route in ("miss", "down"):
            attempts = raw.split(b", ")
            assert len(attempts) == 2 and all(re.fullmatch(rb"\d+\.\d{3}", a) for a in attempts), raw
            assert upstream_seconds(raw) == pytest.approx(sum(float(a) for a in attempts))
        else:
            assert raw == EMPTY[escape] and upstream_seconds(raw) is None
    if "upstream_addr" in cols:
        ports = {**exchange.nginx.extra, "origin": exchange.nginx.ports["origin"]}
        failed = {"dead": b"502", "hang": b"504"}  # connection refused; no answer within proxy_read_timeout

        def attempts(sent: Sent) -> tuple[bytes, bytes]:
            if sent.route == "down":
                return f"127.0.0.1:{ports['dead']}, 127.0.0.1:{ports['dead']}".encode(), b"502, 502"
            if sent.route != "miss":
                return b"-", b"-"
            first, second = ports[sent.first_attempt], ports["slow" if sent.slow else "origin"]
            status = failed[sent.first_attempt] + b", " + str(sent.status).encode()
            return f"127.0.0.1:{first}, 127.0.0.1:{second}".encode(), status

        assert list(zip(cols["upstream_addr"], cols["upstream_status"], strict=True)) == [attempts(s) for s in REQUESTS]
    if "upstream_connect_time" in cols:  # the closed port: no connection, `-`; the others connected
        assert [c.split(b", ")[0] == b"-" for c in cols["upstream_connect_time"]] == [
            s.route in ("hit", "local", "invalid", "down") or s.first_attempt == "dead" for s in REQUESTS
        ]
    # The premise that makes the sum above mean something: the server that never answers cost
    # nginx its whole proxy_read_timeout, so its attempt is not 0.000 (the sum is not the last one).
    hung = [unescape(v, escape).split(b", ")[0] for s, v in zip(REQUESTS, cols["upstream_response_time"], strict=True)]
    assert all(float(t) >= 0.3 for s, t in zip(REQUESTS, hung, strict=True) if s.first_attempt == "hang")


def _nearest_rank(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{q}": ordered[math.ceil(q / 100 * len(ordered)) - 1] for q in (50, 95, 99)}


URT = {"default": re.compile(rb'urt="([^"]*)"'), "json": re.compile(rb'"urt":"([^"]*)"')}


def _expected_figures(fmt: LogFormat, escape: str, lines: list[bytes]) -> dict[str, Any]:
    """Per status, per cache status, upstream p50/p95/p99 (sum and last attempt): from what was
    sent, and from the attempts as nginx wrote them, read with a regex of our own (not the library)."""
    figures: dict[str, Any] = {
        "statuses": {str(k): n for k, n in sorted(Counter(s.status for s in REQUESTS).items())},
        "cache_status": None,
        "upstream_response_time": None,
    }
    if fmt.has("upstream_cache_status"):
        figures["cache_status"] = dict(Counter(_expected_cache_status(s, "default").decode() for s in REQUESTS))
    if fmt.has("upstream_response_time"):
        attempts = [
            [float(t) for t in m.group(1).split(b", ")]
            for line in lines
            if (m := URT[escape].search(line)) and m.group(1) not in (b"", b"-")
        ]
        assert len(attempts) == sum(1 for s in REQUESTS if s.route in ("miss", "down"))
        figures["upstream_response_time"] = {
            "sum": _nearest_rank([round(sum(a), 3) for a in attempts]),
            "last": _nearest_rank([a[-1] for a in attempts]),
            "requests": len(attempts),
        }
    return figures


@pytest.mark.parametrize("name", list(FORMATS))
def test_figures_operators_ask_for(exchange: Exchange, name: str) -> None:
    fmt, escape, lines = exchange.read(name)
    summary = _summary(fmt, lines)
    want = _expected_figures(fmt, escape, lines)
    assert summary.status_counts() == want["statuses"]
    assert summary.cache_status_counts() == want["cache_status"]
    assert summary.upstream_percentiles() == want["upstream_response_time"]


# --- scripts/check_logs.py --json on the real logs ---------------------------------------------------


def _run_check_logs(run_script, env_file: Path, log: Path, *, settings: str):  # type: ignore[no-untyped-def]
    """`check_logs.py --json` on `log` with `settings` added to the test's .env: its summary."""
    with env_file.open("a") as fh:
        fh.write(settings)
    proc = run_script("check_logs.py", "--json", "--no-state", "--no-jobs", "--log", str(log))
    assert proc.returncode in (0, 1), proc.stderr  # 1: a check breached (the 502 and 4xx are real)
    return json.loads(proc.stdout)["summary"]


def _check_logs_json(exchange: Exchange, run_script, env_file: Path, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """`check_logs.py --json` on one format's log with LOG_FORMAT set in .env as an operator pastes
    it (the upstream format: its directive over three lines): once per format, read by two tests."""
    if name not in exchange.check_logs:
        log_format, _ = FORMATS[name]
        settings = f"LOG_FORMAT={log_format}\n"
        exchange.check_logs[name] = _run_check_logs(run_script, env_file, exchange.log(name), settings=settings)
    return exchange.check_logs[name]


@pytest.mark.parametrize("name", list(FORMATS))
def test_check_logs_json_totals(exchange: Exchange, run_script, env_file: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    summary = _check_logs_json(exchange, run_script, env_file, name)
    n = len(REQUESTS)
    assert (summary["lines"], summary["requests"], summary["malformed"]) == (n, n, 0), summary
    classes = Counter(f"{s.status // 100}xx" for s in REQUESTS)
    assert summary["status_classes"] == dict(sorted(classes.items()))


@pytest.mark.parametrize("name", list(FORMATS))
def test_check_logs_json_figures(exchange: Exchange, run_script, env_file: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    summary = _check_logs_json(exchange, run_script, env_file, name)
    fmt, escape, lines = exchange.read(name)
    want = _expected_figures(fmt, escape, lines)
    assert summary["statuses"] == want["statuses"]
    counts = want["cache_status"]
    assert summary["cache_status"] == (
        None if counts is None else {"variable": "upstream_cache_status", "counts": counts}
    )
    assert summary["upstream_response_time"] == want["upstream_response_time"]
    assert summary["top_404_paths"] == [{"path": "/missing", "count": 1}, {"path": "/%22pct%5C%0A", "count": 1}]
    assert summary["top_5xx_paths"] == [{"path": "/down/x", "count": 1}]
    assert summary["malformed_lines"] == []


# --- sitemaps from nginx, warm → verify through its cache ---------------------------------------------

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
PAGES = ["p1.html", "p2.html", "p3.html", "caf\u00e9.html", "a&b.html", "p6.html"]


def _page_url(server: RealNginx, name: str) -> str:
    from urllib.parse import quote

    return server.url("cdn", "/pages/" + quote(name))


def _urlset(urls: list[str]) -> bytes:
    from xml.sax.saxutils import escape

    items = "".join(f"<url><loc>{escape(u)}</loc></url>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">{items}</urlset>\n'.encode()


def _write_sitemaps(server: RealNginx) -> None:
    root = server.prefix / "cdn"
    urls = [_page_url(server, name) for name in PAGES]
    (root / "robots.txt").write_text(
        f"User-agent: *\nAllow: /\n\nSitemap: {server.url('cdn', '/sitemaps/index.xml')}\n"
    )
    children = ["/sitemaps/pages-1.xml.gz", "/sitemaps/pages-2.xml", "/sitemaps/plain-debian/pages-3.xml.gz"]
    index = "".join(f"<sitemap><loc>{server.url('cdn', c)}</loc></sitemap>" for c in children)
    (root / "sitemaps" / "index.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="{NS}">{index}</sitemapindex>\n'
    )
    (root / "sitemaps" / "pages-1.xml.gz").write_bytes(gzip.compress(_urlset(urls[:3])))
    # Only the .gz is on disk: gzip_static serves it for pages-2.xml to a client that accepts gzip.
    (root / "sitemaps" / "pages-2.xml.gz").write_bytes(gzip.compress(_urlset(urls[3:5])))
    (root / "sitemaps" / "plain-debian").mkdir()
    (root / "sitemaps" / "plain-debian" / "pages-3.xml.gz").write_bytes(gzip.compress(_urlset(urls[5:])))


def test_nginx_serves_the_sitemaps_as_real_sites_do(nginx: RealNginx) -> None:
    gz = raw_request(
        nginx.ports["cdn"], b"GET /sitemaps/pages-1.xml.gz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert gz.status == 200 and gz.headers["content-type"] == "application/gzip" and gz.body[:2] == b"\x1f\x8b"
    request = b"GET /sitemaps/plain-debian/pages-3.xml.gz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    octets = raw_request(nginx.ports["cdn"], request)
    assert octets.status == 200 and octets.headers["content-type"] == "application/octet-stream"
    request = b"GET /sitemaps/pages-2.xml HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    static = raw_request(nginx.ports["cdn"], request)
    assert static.status == 200 and static.headers.get("content-encoding") == "gzip"
    plain = raw_request(
        nginx.ports["cdn"], b"GET /sitemaps/pages-2.xml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert plain.status == 404  # no uncompressed file: only a client accepting gzip gets it


def test_warm_then_verify_through_nginx_cache(nginx: RealNginx, run_script, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    site = f"http://127.0.0.1:{nginx.ports['cdn']}"
    proc = run_script("warm_cache.py", "--verify", "--json", env={"SITE_URL": site, "WARM_RATE": "0"})
    assert proc.returncode == 0, proc.stderr + nginx.error_log
    doc = json.loads(proc.stdout)
    expected = sorted(_page_url(nginx, name) for name in PAGES)
    assert doc["summary"]["requested"] == len(PAGES)
    assert doc["summary"]["cache_status"] == {"MISS": len(PAGES)}
    assert doc["summary"]["outcomes"] == {"filled": len(PAGES)}
    assert doc["still_not_cached"] == [] and doc["sitemap_problems"] == []
    conn = sqlite3.connect(workdir / "state" / "state.db")
    rows = conn.execute("SELECT pass, url, http_status, cache_status FROM warm_results ORDER BY id").fetchall()
    conn.close()
    first = sorted((url, status, cache) for p, url, status, cache in rows if p == 1)
    second = sorted((url, status, cache) for p, url, status, cache in rows if p == 2)
    assert first == [(url, 200, "MISS") for url in expected]
    assert second == [(url, 200, "HIT") for url in expected]
    # nginx's own account of it, read through the library: each page a MISS, then a HIT.
    lines = wait_for_lines(nginx.prefix / "logs" / "cdn.log", 3 + 2 * len(PAGES))
    cols = _columns(resolve_format("edgecron"), lines)
    pages = [
        (req.split(b" ")[1].decode(), cs)
        for req, cs in zip(cols["request"], cols["upstream_cache_status"], strict=True)
        if b" /pages/" in req
    ]
    assert sorted(pages) == sorted(
        [(u.removeprefix(site), b"MISS") for u in expected] + [(u.removeprefix(site), b"HIT") for u in expected]
    )


def test_a_line_over_the_cap_is_one_malformed_line(nginx: RealNginx, run_script, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    port, log = nginx.ports["big"], nginx.prefix / "logs" / "big.log"
    for user_agent in (b"before", b'"' * 20_000, b"after"):  # nginx writes each " as \x22: an 80 KB line
        raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: " + user_agent + b"\r\nConnection: close\r\n\r\n")
    lines = wait_for_lines(log, 3)
    assert [len(line) > 64 * 1024 for line in lines] == [False, True, False]  # the premise
    summary = _run_check_logs(run_script, env_file, log, settings="LOG_FORMAT=combined\n")
    assert (summary["lines"], summary["requests"], summary["malformed"]) == (3, 2, 1), summary
    assert [(m["file"], m["line"]) for m in summary["malformed_lines"]] == [(str(log), 2)]


def test_rotation_under_a_real_nginx_loses_and_repeats_nothing(nginx: RealNginx, run_script) -> None:  # type: ignore[no-untyped-def]
    """Renamed, nginx still appending to the renamed file, SIGUSR1, a new file: each line read once."""
    log = nginx.prefix / "logs" / "rotate" / "access.log"
    rotated = log.with_name("access.log.1")

    def send(*paths: str) -> None:
        for path in paths:
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            assert raw_request(nginx.ports["rotate"], request).status == 204

    def reopen() -> None:
        """What logrotate's postrotate does (SIGUSR1), then wait for nginx to create the log again."""
        nginx.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def new_lines() -> int:
        """What a check-logs run (positions kept in the state database) reads."""
        proc = run_script("check_logs.py", "--json", "--no-jobs", "--log", str(log), "--format", "combined")
        assert proc.returncode in (0, 1), proc.stderr
        summary = json.loads(proc.stdout)["summary"]
        assert summary["malformed"] == 0 and summary["requests"] == summary["lines"], summary
        return int(summary["lines"])

    send("/a1", "/a2", "/a3")
    assert len(wait_for_lines(log, 3)) == 3
    assert new_lines() == 3
    log.rename(rotated)
    send("/b1", "/b2")  # nginx keeps writing to the renamed file: its descriptor is still open
    assert len(wait_for_lines(rotated, 5)) == 5 and not log.exists()
    reopen()
    send("/c1", "/c2")
    assert len(wait_for_lines(log, 2)) == 2 and len(rotated.read_bytes().splitlines()) == 5
    assert new_lines() == 4  # /b1 /b2 from the renamed file, /c1 /c2 from the new one
    assert new_lines() == 0
    # The next day with delaycompress: .1 becomes .2.gz, the log becomes .1, nginx reopens.
    send("/d1")
    assert len(wait_for_lines(log, 3)) == 3
    rotated.with_name("access.log.2.gz").write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()
    log.rename(rotated)
    send("/e1")
    reopen()
    send("/f1")
    assert len(wait_for_lines(log, 1)) == 1
    assert new_lines() == 3  # /d1 and /e1 from access.log.1, /f1 from the new log


# --- a bare JSON format string: LOG_ESCAPE says how nginx escaped it ----------------------------------


def test_bare_json_format_with_log_escape_json(exchange: Exchange, run_script, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    bare = JSON_DIRECTIVE.split("escape=json ", 1)[1].rstrip(";").strip("'")
    settings = f"LOG_FORMAT='{bare}'\nLOG_ESCAPE=json\n"
    summary = _run_check_logs(run_script, env_file, exchange.log("json"), settings=settings)
    n = len(REQUESTS)
    assert (summary["lines"], summary["requests"], summary["malformed"]) == (n, n, 0), summary
