"""Cloudflare purge client: batches, local token buckets per plan, Retry-After, typed errors.

Purge limits are token buckets per account (reference warming-purge.md §1.3), so the client paces
itself with the same buckets instead of learning them from 429s. A 429 still waits `Retry-After`
(even above 60 s) up to `max_wait`; 5xx and connection errors are retried with backoff; a 400
that says a batch is too large halves the batch and remembers the working size. The API token is
revealed only when building the Authorization header: it never reaches logs, errors or output.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from .config import Secret, Settings
from .errors import ConfigError, EdgecronError, InputError, UpstreamUnavailable
from .http import make_session, retry_after_seconds
from .ratelimit import TokenBucket
from .redact import redact

SELECTOR_BY_KIND = {
    "url": "files",
    "tag": "tags",
    "prefix": "prefixes",
    "host": "hosts",
    "everything": "purge_everything",
}
TOO_MANY = re.compile(r"too many|more than|maximum|exceed|limit", re.IGNORECASE)
ZONE_ROUTE_CODES = {7000, 7003}
HEADER_CODES = {6003, 6103, 6111, 9106}
BURST_MARGIN = 0.95
RETRY_STATUSES = {408, 409, 500, 502, 503, 504, 520, 521, 522, 523, 524}


@dataclass(frozen=True)
class PlanLimits:
    selector_rate: float  # tag/host/prefix/everything requests refilled per second
    selector_burst: int
    url_rate: float  # single-file purge: URLs per second (moving average)
    max_items: int  # tags/hosts/prefixes per request
    max_files: int  # URLs per request


# cloudflare-docs plans/index.json (purge_limits, single_file_purge), current since 2025-04-01.
PLAN_LIMITS = {
    "free": PlanLimits(5 / 60, 25, 800, 100, 100),
    "pro": PlanLimits(5, 25, 1500, 100, 100),
    "business": PlanLimits(10, 50, 1500, 100, 100),
    "enterprise": PlanLimits(50, 500, 3000, 100, 500),
}


class PurgeRejected(InputError):
    """Cloudflare refused a purge request as invalid (HTTP 400 or `success: false`)."""

    def __init__(self, what: str, *, codes: Sequence[int], too_many: bool, **kw: Any) -> None:
        super().__init__(what, **kw)
        self.codes = list(codes)
        self.too_many = too_many


class PurgeAuthError(ConfigError):
    """The token or zone was refused: nothing can be purged until the config is fixed."""

    default_hint = (
        "Queued purges stay pending; fix CF_API_TOKEN / CF_ZONE_ID in .env, then run `purge_cache.py outbox --retry`."
    )


class WaitInterrupted(UpstreamUnavailable):
    """A stop signal arrived while waiting to send: the batch stays pending."""


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A `sleep` for the client that a SIGTERM/SIGINT (the run's stop event) cuts short."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise WaitInterrupted("stopped while waiting to send a purge batch")

    return sleep


@dataclass
class BatchOutcome:
    """One request's worth of values: sent (`result_id`) or refused (`error`)."""

    kind: str
    values: list[str]
    result_id: str | None = None
    error: EdgecronError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ClientStats:
    calls: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    waited_s: float = 0.0


def effective_batch(kind: str, *, plan: str, batch_size: int) -> int:
    """Items per request: CF_PURGE_BATCH, capped by the plan's per-request limit for the kind."""
    if kind == "everything":
        return 1
    limits = PLAN_LIMITS[plan]
    return max(1, min(batch_size, limits.max_files if kind == "url" else limits.max_items))


def request_body(kind: str, values: Sequence[str]) -> dict[str, Any]:
    """The exact JSON body Cloudflare expects for one batch of one kind."""
    if kind == "everything":
        return {"purge_everything": True}
    return {SELECTOR_BY_KIND[kind]: list(values)}


class CloudflareClient:
    def __init__(
        self,
        *,
        api_url: str,
        zone_id: str,
        token: Secret,
        plan: str = "free",
        batch_size: int = 30,
        max_wait: float = 300.0,
        max_attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        log: Callable[..., None] | None = None,
    ) -> None:
        if not token:
            raise ConfigError("CF_API_TOKEN is not set", expected="an API token with Zone → Cache Purge → Purge")
        self.endpoint = f"{api_url.rstrip('/')}/zones/{zone_id}/purge_cache"
        self.zone_id = zone_id
        self._token = token
        self.limits = PLAN_LIMITS[plan]
        self.max_wait = max_wait
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self.session = session or make_session(retries=0)
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock  # only for a Retry-After given as an HTTP date
        self.log = log or (lambda event, **fields: None)
        self.stats = ClientStats()
        self._last_status = 0
        self._last_problem = ""
        self._batch = {kind: effective_batch(kind, plan=plan, batch_size=batch_size) for kind in SELECTOR_BY_KIND}
        # Slightly smaller bursts than Cloudflare's: its buckets refill from when requests arrive,
        # ours from when they leave, and the first request (new connection) arrives latest.
        self._url_bucket = TokenBucket(self.limits.url_rate, self.limits.url_rate * BURST_MARGIN, clock=clock)
        self._selector_bucket = TokenBucket(
            self.limits.selector_rate, self.limits.selector_burst * BURST_MARGIN, clock=clock
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        max_wait: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[..., None] | None = None,
    ) -> CloudflareClient:
        """The client the settings describe (CF_API_URL, CF_ZONE_ID, the token, CF_PLAN, CF_PURGE_BATCH)."""
        return cls(
            api_url=settings["CF_API_URL"],
            zone_id=settings.require("CF_ZONE_ID"),
            token=settings.api_token,
            plan=settings["CF_PLAN"],
            batch_size=settings["CF_PURGE_BATCH"],
            max_wait=max_wait,
            sleep=sleep,
            log=log,
        )

    def batch_size(self, kind: str) -> int:
        return self._batch[kind]

    def purge(self, kind: str, values: Sequence[str]) -> Iterator[BatchOutcome]:
        """Send `values` in batches; yield each batch's outcome as soon as it is known.

        A batch refused as too large is halved (and the smaller size kept); one refused for
        another reason is split until the bad values are isolated, so good ones still go out.
        Auth errors and an unavailable API raise: nothing more can be sent in this run.
        """
        size = self.batch_size(kind)
        queue = deque(_chunks(list(values), size))
        while queue:
            chunk = queue.popleft()
            try:
                result_id = self._send(kind, chunk)
            except PurgeRejected as exc:
                if len(chunk) == 1 or kind == "everything":
                    yield BatchOutcome(kind, chunk, error=exc)
                    continue
                if exc.too_many:
                    self._batch[kind] = max(1, len(chunk) // 2)
                    self.log("purge-batch-shrunk", kind=kind, batch=self._batch[kind])
                if exc.too_many:  # re-cut everything still queued to the smaller size
                    rest = chunk + [value for part in queue for value in part]
                    queue = deque(_chunks(rest, self._batch[kind]))
                else:  # split to isolate the refused value(s)
                    half = len(chunk) // 2
                    queue.extendleft([chunk[half:], chunk[:half]])
                continue
            yield BatchOutcome(kind, chunk, result_id=result_id)

    def _send(self, kind: str, values: list[str]) -> str | None:
        """One logical request with pacing and retries; returns Cloudflare's result id."""
        bucket = self._url_bucket if kind == "url" else self._selector_bucket
        pace = bucket.reserve(len(values) if kind == "url" else 1)
        if pace:
            self._wait(pace)
        body = request_body(kind, values)
        waited = 0.0
        for attempt in range(1, 1000):
            outcome = self._attempt(kind, body, attempt, bucket)
            if isinstance(outcome, _Sent):
                return outcome.result_id
            delay = outcome
            if waited + delay > self.max_wait:
                rate_limited = self._last_status == 429
                raise UpstreamUnavailable(
                    "Cloudflare kept rate-limiting the purge (HTTP 429)"
                    if rate_limited
                    else "the Cloudflare API is unavailable",
                    got=f"{self._last_problem}; the next wait would bring the total to {waited + delay:.0f} s",
                    expected=f"at most {self.max_wait:.0f} s of waiting per batch (--max-wait)",
                    hint="The batch stays pending; rerun later (`purge_cache.py outbox --retry`) or raise --max-wait.",
                )
            waited += delay
            self._wait(delay)
        raise AssertionError("unreachable")

    def _attempt(self, kind: str, body: dict, attempt: int, bucket: TokenBucket) -> _Sent | float:
        """`_Sent` on success, or the seconds to wait before retrying; raises when hopeless."""
        self.stats.calls += 1
        self._last_status = 0
        self._last_problem = "no answer"
        started = self.clock()
        try:
            response = self.session.post(
                self.endpoint,
                json=body,
                headers={"Authorization": "Bearer " + self._token.reveal()},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            self.log("purge-call", kind=kind, items=_count(body), error=type(exc).__name__)
            self._last_problem = f"no answer ({type(exc).__name__})"
            return self._backoff(attempt, self._last_problem)
        status = response.status_code
        self._last_status = status
        self._last_problem = f"HTTP {status}"
        payload = _json(response)
        self.log(
            "purge-call",
            kind=kind,
            items=_count(body),
            status=status,
            elapsed_ms=round((self.clock() - started) * 1000, 1),
            ratelimit=response.headers.get("Ratelimit"),
        )
        if status == 200 and payload.get("success") is True:
            result = payload.get("result")
            result_id = result.get("id") if isinstance(result, dict) else None
            return _Sent(str(result_id) if result_id else None)
        errors = _errors(payload)
        if status == 429:
            self.stats.rate_limited += 1
            bucket.drain()
            delay = retry_after_seconds(response.headers.get("Retry-After"), now=self.wall_clock())
            return self._default_retry(kind) if delay is None else delay
        if status in RETRY_STATUSES or (status >= 500 and status != 501):
            self.stats.server_errors += 1
            return self._backoff(attempt, f"HTTP {status}")
        raise self._error(status, errors)

    def _backoff(self, attempt: int, reason: str) -> float:
        if attempt >= self.max_attempts:
            raise UpstreamUnavailable(
                "the Cloudflare API is unavailable",
                got=f"{reason} on {attempt} attempts",
                expected="HTTP 200 from " + self.endpoint.split("/zones/")[0],
                hint="The batch stays pending; rerun later (`purge_cache.py outbox --retry`).",
            )
        return min(30.0, self.backoff * 2 ** (attempt - 1))

    def _default_retry(self, kind: str) -> float:
        return 1.0 if kind == "url" else 1 / self.limits.selector_rate

    def _wait(self, seconds: float) -> None:
        self.stats.waited_s += seconds
        self.sleep(seconds)

    def _error(self, status: int, errors: list[tuple[int, str]]) -> EdgecronError:
        codes = [code for code, _ in errors]
        # Cloudflare's messages can quote the request, Authorization header included.
        text = redact("; ".join(f"code {code}: {message}" for code, message in errors)) or f"HTTP {status}"
        if ZONE_ROUTE_CODES & set(codes) or status == 404:
            return PurgeAuthError(
                "Cloudflare does not know the zone in CF_ZONE_ID",
                got=text,
                expected="the zone ID from the dashboard's Overview page (32 hex characters)",
            )
        if status in (401, 403) or HEADER_CODES & set(codes):
            permission = 9109 in codes
            return PurgeAuthError(
                "Cloudflare refused the API token" + (" for this zone" if permission else ""),
                got=text,
                expected=f"a token with Zone → Cache Purge → Purge on zone {self.zone_id}",
            )
        return PurgeRejected(
            "Cloudflare refused the purge request",
            got=text,
            expected="absolute URLs, tags, hosts or prefixes within the plan's limits",
            codes=codes,
            too_many=status == 400 and any(TOO_MANY.search(msg) for _, msg in errors),
            hint="The refused items stay in the outbox as failed; see `purge_cache.py outbox`.",
        )


@dataclass(frozen=True)
class _Sent:
    result_id: str | None


def _chunks(values: list[str], size: int) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _count(body: dict) -> int:
    value = next(iter(body.values()))
    return len(value) if isinstance(value, list) else 1


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _errors(payload: dict[str, Any]) -> list[tuple[int, str]]:
    out = []
    for item in payload.get("errors") or []:
        if isinstance(item, dict):
            out.append((_code(item.get("code")), str(item.get("message") or "")))
    return out


def _code(raw: object) -> int:
    """Cloudflare's numeric error code; anything else (a proxy's or a fake's answer) counts as 0."""
    try:
        return int(raw) if isinstance(raw, int | str) and str(raw).strip().lstrip("-").isdigit() else 0
    except ValueError:
        return 0
