"""Healthchecks-style pings: start, then success or fail with the exit code, paired by run id.

`HEALTHCHECKS_URL` is a base URL; each job pings `<base>/<check>` where the check is the job name
(slug form, base `https://hc-ping.com/<ping-key>`) or the UUID given in `HEALTHCHECKS_CHECKS`
(`warm=<uuid>,…`, base `https://hc-ping.com`). Suffixes follow the healthchecks API: `/start`,
`/<exit code>` (0 is success); `?rid=<uuid>` pairs the two so overlapping runs measure correctly.

A ping never raises and never changes a job's result: each attempt has a 10 s timeout, server
errors and connection failures are retried, and what is left is returned as a short error text
(without the URL, whose path is a secret) for the caller to log as a warning.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import requests

from . import USER_AGENT
from .config import Settings
from .redact import redact

TIMEOUT_SECONDS = 10.0
RETRIES = 2  # so three attempts, as healthchecks' reliability tips suggest
BACKOFF_SECONDS = 1.0
BODY_LIMIT = 10_000  # self-hosted healthchecks' default PING_BODY_LIMIT; the server may say less


@dataclass(frozen=True)
class PingResult:
    sent: bool
    status: int | None = None
    error: str | None = None
    attempts: int = 0


class Pinger:
    """Pings for one job. Build it with `pinger_for(settings, job)`."""

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        timeout: float = TIMEOUT_SECONDS,
        retries: int = RETRIES,
        backoff: float = BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.body_limit = BODY_LIMIT
        self.session = session or _session()

    def start(self, run_id: str) -> PingResult:
        return self._ping("/start", run_id, body="")

    def finish(self, run_id: str, exit_code: int, *, body: str = "") -> PingResult:
        """`/0` is success; any other code marks the check failed (codes above 255 as 255)."""
        return self._ping(f"/{min(max(int(exit_code), 0), 255)}", run_id, body=body)

    def _ping(self, suffix: str, run_id: str, *, body: str) -> PingResult:
        url = f"{self.url}{suffix}?rid={_canonical_rid(run_id)}"
        data = tail_bytes(redact(body), self.body_limit)  # the body goes to a third party
        error = None
        status = None
        attempts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            attempts += 1
            try:
                response = self.session.post(url, data=data, timeout=self.timeout)
            except requests.RequestException as exc:
                error = type(exc).__name__  # the message would repeat the secret URL
                continue
            except Exception as exc:  # a ping must never break the job, whatever goes wrong
                return PingResult(False, None, f"{type(exc).__name__}", attempts)
            status = response.status_code
            self._learn_body_limit(response.headers)
            response.close()
            if status < 400:
                return PingResult(True, status, None, attempts)
            error = f"HTTP {status}"
            if status < 500 and status != 429:
                break  # 404 unknown check, 409 ambiguous slug, 400 bad rid: retrying won't help
        return PingResult(False, status, error, attempts)

    def _learn_body_limit(self, headers: Mapping[str, str]) -> None:
        limit = headers.get("Ping-Body-Limit", "")
        if limit.isdigit():
            self.body_limit = min(BODY_LIMIT, int(limit))


def pinger_for(settings: Settings, job: str) -> Pinger | None:
    """The job's pinger, or None when HEALTHCHECKS_URL is not set."""
    base = settings.get("HEALTHCHECKS_URL") or ""
    if not base:
        return None
    checks = dict(settings.get("HEALTHCHECKS_CHECKS") or ())
    check = checks.get(job, job)
    return Pinger(f"{base.rstrip('/')}/{quote(check, safe='')}")


def tail_bytes(text: str, limit: int) -> bytes:
    """The last `limit` bytes of text as UTF-8 (the end of a log says why it failed)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    return data[-limit:].decode("utf-8", "ignore").encode("utf-8")


def _canonical_rid(run_id: str) -> str:
    """healthchecks wants a canonical UUID (with dashes); run ids are uuid4().hex."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, run_id))


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"User-Agent": USER_AGENT})
    return session
