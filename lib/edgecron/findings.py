"""What `check_logs.py` reports: a `Finding` per check, judged against `Thresholds`.

Every check gives a `Finding` (ok, breach or skipped) with a severity, the measured value, the
threshold it was judged against and a few examples, so the operator sees why without digging.
This module judges the access-log figures and the log files; `health.py` judges the jobs and
`deploys.py` the last deploy.

Access logs are per node, so a finding about them names the node whose logs it judged (`node`);
job health, the outbox and the deploy comparison are fleet-wide (`node` None).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from .accesslog import LogEvent
from .config import KEYS, Settings
from .db import is_postgres_url
from .logformat import display
from .logsummary import LogSummary

Value = float | int | str | None


@dataclass(kw_only=True)
class Finding:
    check: str
    status: str  # ok | breach | skipped
    severity: str  # critical | warning | info
    summary: str
    value: Value = None
    threshold: Value = None
    examples: list[str] = field(default_factory=list)
    node: str | None = None  # the node whose access logs this judges; None: fleet-wide

    @classmethod
    def judged(
        cls,
        check: str,
        *,
        breach: bool,
        severity: str,
        summary: str,
        value: Value = None,
        threshold: Value = None,
        examples: Sequence[str] = (),
    ) -> Finding:
        """A breach at `severity`, or ok (info) when the measured value is within the threshold."""
        return cls(
            check=check,
            status="breach" if breach else "ok",
            severity=severity if breach else "info",
            summary=summary,
            value=value,
            threshold=threshold,
            examples=list(examples),
        )

    @classmethod
    def skipped(
        cls, check: str, *, summary: str, value: Value = None, threshold: Value = None, examples: Sequence[str] = ()
    ) -> Finding:
        """Not judged (too few requests, a variable the log lacks, no state): `summary` says why."""
        return cls(
            check=check,
            status="skipped",
            severity="info",
            summary=summary,
            value=value,
            threshold=threshold,
            examples=list(examples),
        )

    @property
    def breached(self) -> bool:
        return self.status == "breach"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self, *, with_node: bool) -> str:
        """The check's name, and the node it is about when nodes are named (`names_nodes`)."""
        return f"{self.check} on {self.node}" if with_node and self.node else self.check


def on_node(findings: Sequence[Finding], node: str) -> list[Finding]:
    """The findings as judged on `node`'s own logs."""
    return [replace(f, node=node) for f in findings]


def names_nodes(settings: Settings) -> bool:
    """Whether text output names nodes: NODE_NAME is set, or the state is shared (PostgreSQL)."""
    return bool(settings.parsed.get("NODE_NAME")) or is_postgres_url(settings.state_db)


def _setting(name: str) -> Any:
    """A threshold whose default is the config table's (`KEYS`) and whose value is that setting's."""
    key = next(k for k in KEYS if k.name == name)
    return field(default=key.parse(key.default), metadata={"setting": name})


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    rate_5xx: float = _setting("CHECK_5XX_RATE")
    p95_seconds: float = _setting("CHECK_P95_SECONDS")
    min_requests: int = _setting("CHECK_MIN_REQUESTS")
    static_origin_hits: int = _setting("CHECK_STATIC_ORIGIN_HITS")
    lock_max_seconds: int = _setting("CHECK_LOCK_MAX_SECONDS")
    outbox_max_attempts: int = _setting("CHECK_OUTBOX_MAX_ATTEMPTS")
    deploy_window_minutes: int = _setting("CHECK_DEPLOY_WINDOW_MINUTES")
    malformed_rate: float = 0.01  # not a setting: more unparsable lines than this is a LOG_FORMAT problem

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Thresholds:
        configured: tuple[Field[Any], ...] = tuple(f for f in fields(cls) if "setting" in f.metadata)
        return cls(**{f.name: settings[f.metadata["setting"]] for f in configured})


def log_findings(summary: LogSummary, limits: Thresholds) -> list[Finding]:
    """One finding per log check, in the order check_logs.py reports them."""
    return [check(summary, limits) for check in LOG_CHECKS]


def _too_few(summary: LogSummary, limits: Thresholds) -> str | None:
    """Why a rate cannot be judged from this window (None: enough requests to judge it)."""
    total = summary.requests
    if total >= limits.min_requests and total > 0:
        return None
    return f"only {total} requests (judged from {limits.min_requests})"


def _rate_5xx(summary: LogSummary, limits: Thresholds) -> Finding:
    total = summary.requests
    errors = summary.count_5xx()
    rate = errors / total if total else 0.0
    examples = [f"{p}: {n}×5xx" for p, n in summary.top_5xx_paths()]
    if few := _too_few(summary, limits):
        return Finding.skipped(
            "5xx_rate", summary=few, value=round(rate, 4), threshold=limits.rate_5xx, examples=examples
        )
    return Finding.judged(
        "5xx_rate",
        breach=rate > limits.rate_5xx,
        severity="critical",
        summary=f"{errors} of {total} responses were 5xx ({rate:.2%})",
        value=round(rate, 4),
        threshold=limits.rate_5xx,
        examples=examples,
    )


def _p95_request_time(summary: LogSummary, limits: Thresholds) -> Finding:
    if not summary.has_request_time:
        return Finding.skipped("p95_request_time", summary="LOG_FORMAT has no $request_time")
    pct = summary.percentiles()
    slow = [f"{p}: p95 {v:.2f}s over {n} requests" for p, n, v in summary.slowest_paths()]
    text = f"p50 {pct['p50']:.3f}s, p95 {pct['p95']:.3f}s, p99 {pct['p99']:.3f}s"
    if few := _too_few(summary, limits):
        return Finding.skipped(
            "p95_request_time", summary=f"{text}; {few}", value=pct["p95"], threshold=limits.p95_seconds, examples=slow
        )
    return Finding.judged(
        "p95_request_time",
        breach=pct["p95"] > limits.p95_seconds,
        severity="warning",
        summary=text,
        value=pct["p95"],
        threshold=limits.p95_seconds,
        examples=slow,
    )


def _static_origin_hits(summary: LogSummary, limits: Thresholds) -> Finding:
    static = summary.static_origin()
    worst = static[0][1] if static else 0
    breach = worst > limits.static_origin_hits
    return Finding.judged(
        "static_origin_hits",
        breach=breach,
        severity="warning",
        summary=(
            f"{static[0][0]} reached the origin {worst} times: Cloudflare is not caching it"
            if breach
            else f"busiest static URL reached the origin {worst} times"
        ),
        value=worst,
        threshold=limits.static_origin_hits,
        examples=[f"{p}: {n}" for p, n in static[:5]],
    )


def _loggedin_cacheable(summary: LogSummary, limits: Thresholds) -> Finding:
    if not summary.can_see_logged_in:
        return Finding.skipped(
            "loggedin_cacheable",
            summary="LOG_FORMAT lacks $logged_in with $upstream_cache_status or $sent_http_cache_control"
            " (see notes/nginx-log-format.md)",
        )
    n = summary.loggedin_cached
    return Finding.judged(
        "loggedin_cacheable",
        breach=n > 0,
        severity="critical",
        summary=f"{n} responses to logged-in visitors were cached or marked cacheable",
        value=n,
        threshold=0,
        examples=summary.loggedin_examples,
    )


def _upstream_errors(summary: LogSummary, limits: Thresholds) -> Finding:
    total = summary.requests
    bad_gateway = summary.statuses.get(b"502", 0) + summary.statuses.get(b"503", 0)
    timeouts = summary.statuses.get(b"504", 0)
    upstream_rate = (bad_gateway + timeouts) / total if total else 0.0
    text = (
        f"{bad_gateway} bad gateway/unavailable (502/503), {timeouts} timeouts (504), "
        f"{summary.upstream_retries} retries on another upstream"
    )
    if few := _too_few(summary, limits):
        return Finding.skipped(
            "upstream_errors", summary=f"{text}; {few}", value=round(upstream_rate, 4), threshold=limits.rate_5xx
        )
    return Finding.judged(
        "upstream_errors",
        breach=upstream_rate > limits.rate_5xx,
        severity="critical",
        summary=text,
        value=round(upstream_rate, 4),
        threshold=limits.rate_5xx,
    )


def _malformed_lines(summary: LogSummary, limits: Thresholds) -> Finding:
    lines = summary.lines
    bad_rate = summary.malformed / lines if lines else 0.0
    return Finding.judged(
        "malformed_lines",
        breach=bad_rate > limits.malformed_rate,
        severity="warning",
        summary=f"{summary.malformed} of {lines} lines did not match LOG_FORMAT",
        value=summary.malformed,
        threshold=limits.malformed_rate,
        examples=summary.malformed_samples,
    )


LOG_CHECKS: tuple[Callable[[LogSummary, Thresholds], Finding], ...] = (
    _rate_5xx,
    _p95_request_time,
    _static_origin_hits,
    _loggedin_cacheable,
    _upstream_errors,
    _malformed_lines,
)


def file_findings(
    events: Sequence[LogEvent],
    *,
    unmatched: Sequence[str],
    overlong: int,
    refused: Sequence[str] = (),
    max_line: int = 65536,
) -> list[Finding]:
    """Rotation handled (info), truncation/gaps/missing/unreadable files (breach), long lines."""
    findings = []
    for event in events:
        findings.append(
            Finding.judged(
                f"log_file_{event.kind}",
                breach=event.problem,
                severity="warning",
                summary=event.message,
                value=event.path,
            )
        )
    for link in refused:
        findings.append(
            Finding.judged(
                "log_file_refused",
                breach=True,
                severity="warning",
                summary=f"{display(link.encode())} is a symlink out of its directory: not read"
                " (ACCESS_LOGS globs stay put)",
                value=link,
            )
        )
    for pattern in unmatched:
        findings.append(
            Finding.judged(
                "log_file_missing",
                breach=True,
                severity="warning",
                summary=f"ACCESS_LOGS pattern {pattern} matches no file",
                value=pattern,
            )
        )
    if overlong:
        findings.append(
            Finding.judged(
                "overlong_lines",
                breach=False,
                severity="info",
                summary=f"{overlong} lines over {max_line} bytes (LOG_MAX_LINE_BYTES) were counted as malformed",
                value=overlong,
            )
        )
    return findings
