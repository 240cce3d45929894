"""A local emulator of Cloudflare's purge API, faithful enough to test a purge client against.

It serves `POST /client/v4/zones/{zone_id}/purge_cache` with Cloudflare's auth checks, body rules,
per-request item caps and per-plan token buckets (reference: warming-purge.md §1.2-1.4), answers
429 with `Retry-After` when a bucket is empty, and records every accepted purge.

Control endpoints for tests and the demo (JSON in, JSON out):
  GET  /__emulator/purges    accepted purges, call counts, rejected counts
  POST /__emulator/fail      {"count": N, "status": 503} or {"every": K}: 5xx answers
  POST /__emulator/throttle  {"seconds": S, "retry_after": 2} or {"count": N, ...}: 429 storm
  POST /__emulator/latency   {"seconds": 0.2}: sleep before answering each purge
  POST /__emulator/limits    {"max_files": 30}: override the plan's per-request cap
  POST /__emulator/reset     forget purges, faults and bucket levels

Run: python demo/cloudflare_api.py --port 0 --token T --zone Z --plan free [--site-purge-url URL]
In tests: `with CloudflareEmulator(token=..., zone=...) as api: api.base_url`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

SELECTORS = ("files", "tags", "hosts", "prefixes", "purge_everything")
ZONE_ID = re.compile(r"[0-9a-f]{32}")
PURGE_PATH = re.compile(r"^/client/v4/zones/([^/]+)/purge_cache/?$")


@dataclass(frozen=True)
class PlanLimits:
    """Per-plan limits from Cloudflare's plan table (cloudflare-docs plans/index.json).

    Written out here on purpose rather than imported from lib/edgecron/cloudflare.py: the emulator
    stands in for Cloudflare, so a wrong figure in the client must show up as a test failure.
    """

    selector_rate: float  # tag/host/prefix/everything requests refilled per second
    selector_burst: int
    url_rate: float  # single-file purge: URLs per second (moving average)
    max_items: int  # tags/hosts/prefixes per request
    max_files: int  # URLs per request


PLANS = {
    "free": PlanLimits(5 / 60, 25, 800, 100, 100),
    "pro": PlanLimits(5, 25, 1500, 100, 100),
    "business": PlanLimits(10, 50, 1500, 100, 100),
    "enterprise": PlanLimits(50, 500, 3000, 100, 500),
}


class Bucket:
    """A token bucket that starts full; `take` returns 0 or the seconds until `cost` fits."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self.tokens = capacity
        self.updated = clock()

    def take(self, cost: float) -> float:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class ApiError(Exception):
    def __init__(self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None):
        super().__init__(errors[0]["message"])
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def _err(status: int, code: int, message: str, **headers: str) -> ApiError:
    return ApiError(status, [{"code": code, "message": message}], headers)


class CloudflareEmulator:
    """The emulated API plus its fault controls. Thread-safe; usable as a context manager."""

    def __init__(
        self,
        *,
        token: str,
        zone: str,
        plan: str = "free",
        readonly_token: str | None = None,
        site_purge_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if plan not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)}")
        self.token = token
        self.zone = zone
        self.plan = plan
        self.readonly_token = readonly_token
        self.site_purge_url = site_purge_url
        self.clock = clock
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self.reset()

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """What CF_API_URL should be set to."""
        return self.url + "/client/v4"

    def start(self) -> CloudflareEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CloudflareEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- controls ---------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            limits = PLANS[self.plan]
            self.limits = limits
            self.purges: list[dict[str, Any]] = []
            self.calls = 0
            self.rejected: dict[str, int] = {}
            self.fail_count = 0
            self.fail_every = 0
            self.fail_status = 503
            self.throttle_until = 0.0
            self.throttle_count = 0
            self.throttle_retry_after = 2
            self.latency = 0.0
            self.selector_bucket = Bucket(limits.selector_rate, limits.selector_burst, self.clock)
            self.url_bucket = Bucket(limits.url_rate, limits.url_rate, self.clock)

    def fail_next(self, count: int, *, status: int = 503) -> None:
        with self._lock:
            self.fail_count, self.fail_status = count, status

    def fail_every_nth(self, every: int, *, status: int = 503) -> None:
        with self._lock:
            self.fail_every, self.fail_status = every, status

    def throttle(self, *, seconds: float = 0.0, count: int = 0, retry_after: int = 2) -> None:
        with self._lock:
            self.throttle_until = self.clock() + seconds if seconds else 0.0
            self.throttle_count = count
            self.throttle_retry_after = retry_after

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self.latency = seconds

    def set_max_files(self, max_files: int) -> None:
        with self._lock:
            self.limits = PlanLimits(**{**self.limits.__dict__, "max_files": max_files})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "accepted": len(self.purges),
                "rejected": dict(self.rejected),
                "purges": list(self.purges),
            }

    # --- the API ----------------------------------------------------------------------------

    def handle_purge(self, zone: str, headers: Any, raw: bytes) -> tuple[int, dict, dict[str, str]]:
        """One purge call → (status, body, extra headers). Records accepted purges."""
        with self._lock:
            self.calls += 1
            call_no = self.calls
            latency = self.latency
        if latency:
            time.sleep(latency)
        try:
            self._fault(call_no)
            self._auth(zone, headers.get("Authorization"))
            body = self._body(raw)
            with self._lock:
                self._rate_limit(body)
                record = {"id": len(self.purges) + 1, "at": time.time(), "body": body}
                self.purges.append(record)
        except ApiError as exc:
            with self._lock:
                key = str(exc.status)
                self.rejected[key] = self.rejected.get(key, 0) + 1
            payload = {"success": False, "errors": exc.errors, "messages": [], "result": None}
            return exc.status, payload, exc.headers
        self._forward(body)
        payload = {"success": True, "errors": [], "messages": [], "result": {"id": self.zone}}
        return 200, payload, {}

    def _fault(self, call_no: int) -> None:
        with self._lock:
            status = self.fail_status
            if self.fail_count > 0:
                self.fail_count -= 1
                raise _err(status, 10000, "Internal server error (emulated fault)")
            if self.fail_every and call_no % self.fail_every == 0:
                raise _err(status, 10000, "Internal server error (emulated fault)")
            storm = self.throttle_count > 0 or self.clock() < self.throttle_until
            if self.throttle_count > 0:
                self.throttle_count -= 1
            if storm:
                raise _err(
                    429,
                    971,
                    "Please wait and consider throttling your request speed",
                    **{"Retry-After": str(self.throttle_retry_after)},
                )

    def _auth(self, zone: str, header: str | None) -> None:
        if not header:
            raise _err(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        if not ZONE_ID.fullmatch(zone):
            raise ApiError(
                400,
                [
                    {
                        "code": 7003,
                        "message": f"Could not route to /zones/{zone}/purge_cache, "
                        "perhaps your object identifier is invalid?",
                    },
                    {"code": 7000, "message": "No route for that URI"},
                ],
            )
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or token not in (self.token, self.readonly_token):
            raise _err(403, 10000, "Authentication error")
        if token == self.readonly_token or zone != self.zone:
            raise _err(403, 9109, "Unauthorized to access requested resource")

    def _body(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise _err(400, 6007, "Malformed JSON in request body") from None
        if not isinstance(body, dict):
            raise _err(400, 6007, "Malformed JSON in request body")
        present = [key for key in SELECTORS if key in body]
        if len(present) != 1:
            raise _err(
                400,
                1012,
                'Request must contain one of "purge_everything" or "files", or "tags", or "hosts", or "prefixes"',
            )
        key = present[0]
        value = body[key]
        if key == "purge_everything":
            if value is not True:
                raise _err(400, 1012, "purge_everything must be true")
            return body
        if not isinstance(value, list) or not value:
            raise _err(400, 1014, f"{key} must be a non-empty array")
        limit = self.limits.max_files if key == "files" else self.limits.max_items
        if len(value) > limit:
            raise _err(400, 1019, f"Too many {key} in one request: {len(value)}, the limit is {limit}")
        check = {"files": _check_file, "tags": _check_tag, "hosts": _check_host}.get(key, _check_prefix)
        for item in value:
            check(item)
        return body

    def _rate_limit(self, body: dict[str, Any]) -> None:
        files = body.get("files")
        wait = self.url_bucket.take(len(files)) if files else self.selector_bucket.take(1)
        if wait:
            raise _err(
                429,
                971,
                "Please wait and consider throttling your request speed",
                **{"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _forward(self, body: dict[str, Any]) -> None:
        """Tell the demo site to drop what was purged, as the real edge would."""
        if not self.site_purge_url:
            return
        request = urllib.request.Request(
            self.site_purge_url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except OSError as exc:
            print(f"cloudflare_api: forwarding to {self.site_purge_url} failed: {exc}", file=sys.stderr)


def _check_file(item: Any) -> None:
    url = item
    if isinstance(item, dict):
        url = item.get("url")
        headers = item.get("headers", {})
        if not isinstance(headers, dict) or any(v is None for v in headers.values()):
            raise _err(400, 1016, "files[].headers must be an object of strings")
    if not isinstance(url, str):
        raise _err(400, 1016, "files must hold URLs as strings or {url, headers} objects")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _err(400, 1016, f"Unable to purge {url}, which is an invalid URL")


def _check_tag(item: Any) -> None:
    if not isinstance(item, str) or not item or len(item) > 1024 or not item.isprintable():
        raise _err(400, 1016, f"Invalid cache tag {item!r}")
    if " " in item:
        raise _err(400, 1016, f"Invalid cache tag {item!r}: tags cannot contain spaces")


def _check_host(item: Any) -> None:
    if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z0-9.-]+", item):
        raise _err(400, 1016, f"Invalid host {item!r}")


def _check_prefix(item: Any) -> None:
    if not isinstance(item, str) or not item:
        raise _err(400, 1016, "prefixes must be strings")
    if "://" in item or "?" in item or "#" in item:
        raise _err(400, 1016, f"Invalid prefix {item}: no scheme, query string or fragment")
    if item.count("/") > 31:
        raise _err(400, 1016, f"Invalid prefix {item}: more than 31 path separators")


class _Handler(BaseHTTPRequestHandler):
    server_version = "cloudflare-emulator"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    @property
    def emulator(self) -> CloudflareEmulator:
        return self.server.emulator  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the demo read the recorded purges instead

    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/__emulator/purges", "/__emulator/calls"):
            self._send(200, self.emulator.snapshot())
        else:
            self._send(404, {"success": False, "errors": [{"code": 7000, "message": "No route"}]})

    def do_POST(self) -> None:
        raw = self._read()
        match = PURGE_PATH.match(self.path)
        if match:
            status, body, headers = self.emulator.handle_purge(match.group(1), self.headers, raw)
            self._send(status, body, headers)
            return
        if self.path.startswith("/__emulator/"):
            self._control(self.path.removeprefix("/__emulator/").rstrip("/"), raw)
            return
        self._send(404, {"success": False, "errors": [{"code": 7000, "message": "No route"}]})

    def _control(self, action: str, raw: bytes) -> None:
        try:
            args = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, {"error": "body must be JSON"})
            return
        api = self.emulator
        if action == "fail":
            if "every" in args:
                api.fail_every_nth(int(args["every"]), status=int(args.get("status", 503)))
            else:
                api.fail_next(int(args.get("count", 1)), status=int(args.get("status", 503)))
        elif action == "throttle":
            api.throttle(
                seconds=float(args.get("seconds", 0)),
                count=int(args.get("count", 0)),
                retry_after=int(args.get("retry_after", 2)),
            )
        elif action == "latency":
            api.set_latency(float(args.get("seconds", 0)))
        elif action == "limits":
            api.set_max_files(int(args["max_files"]))
        elif action == "reset":
            api.reset()
        else:
            self._send(404, {"error": f"unknown control {action!r}"})
            return
        self._send(200, {"ok": True})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Cloudflare purge API emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True, help="the API token to accept")
    parser.add_argument("--zone", required=True, help="the zone id (32 hex) to serve")
    parser.add_argument("--plan", default="free", choices=sorted(PLANS))
    parser.add_argument("--readonly-token", help="a valid token without purge permission")
    parser.add_argument("--site-purge-url", help="forward accepted purges here (demo site)")
    args = parser.parse_args(argv)
    api = CloudflareEmulator(
        token=args.token,
        zone=args.zone,
        plan=args.plan,
        readonly_token=args.readonly_token,
        site_purge_url=args.site_purge_url,
        host=args.host,
        port=args.port,
    )
    print(f"listening on {api.url}", flush=True)
    try:
        api._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        api._server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
