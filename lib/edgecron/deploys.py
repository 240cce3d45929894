"""Before and after a deploy: per-slot log figures kept in `log_slots`, and the two windows compared.

Each `check_logs.py` run adds its summary's 10-minute slots (requests, 5xx, static origin hits,
a 10 ms $request_time histogram) to `log_slots`; `deploy_findings` compares the window before the
last recorded deploy with the window after it, from those rows plus the slots of this run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .findings import Finding, Thresholds
from .logsummary import SLOT_SECONDS, percentiles_of
from .state import StateDB, iso


def record_slots(conn: Any, slots: Mapping[int, list[Any]], *, now: datetime) -> None:
    """Add this run's per-slot figures to `log_slots` (inside the caller's transaction).

    Fleet-wide: every node adds its own access log's figures to the same slots (the deploy is the
    whole site's), so counts are added, never replaced; the histogram is read and merged inside
    the write transaction, which serialises writers on both engines (db.Database.transaction).
    """
    for start, (requests, errors, static, hist) in slots.items():
        if not start:
            continue
        row = conn.execute("SELECT rt_hist FROM log_slots WHERE slot_start=?", (start,)).fetchone()
        merged = json.loads(row[0]) if row else {}
        for key, n in hist.items():
            k = key.decode("ascii", "replace")
            merged[k] = merged.get(k, 0) + n
        conn.execute(
            "INSERT INTO log_slots(slot_start, requests, errors_5xx, static_origin, rt_hist, updated_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(slot_start) DO UPDATE SET"
            " requests=log_slots.requests+excluded.requests, errors_5xx=log_slots.errors_5xx+excluded.errors_5xx,"
            " static_origin=log_slots.static_origin+excluded.static_origin, rt_hist=excluded.rt_hist,"
            " updated_at=excluded.updated_at",
            (start, requests, errors, static, json.dumps(merged, sort_keys=True), iso(now)),
        )


def deploy_findings(
    state: StateDB | None,
    pending_slots: Mapping[int, list[Any]],
    *,
    now: datetime,
    limits: Thresholds,
) -> list[Finding]:
    """The windows before and after the last recorded deploy compared; regressions flagged."""
    if state is None:
        return [Finding.skipped("deploy_regression", summary="no state database")]
    row = state.execute("SELECT ref, deployed_at FROM deploys ORDER BY deployed_at DESC LIMIT 1").fetchone()
    if row is None:
        return [Finding.skipped("deploy_regression", summary="no deploy recorded")]
    deployed = datetime.fromisoformat(row["deployed_at"])
    if deployed.tzinfo is None:
        deployed = deployed.replace(tzinfo=UTC)
    at = deployed.timestamp()
    window = limits.deploy_window_minutes * 60
    slots = _merged_slots(state, pending_slots, lo=at - window - SLOT_SECONDS, hi=at + window + SLOT_SECONDS)
    # Slots wholly before / wholly after the deploy; the one it falls in belongs to neither.
    before = _window(slots, lambda s: s >= at - window and s + SLOT_SECONDS <= at)
    after = _window(slots, lambda s: s >= at and s < at + window)
    label = f"deploy {row['ref']} at {iso(deployed)}"
    if min(before["requests"], after["requests"]) < max(1, limits.min_requests):
        few = f"too few requests to compare (before {before['requests']}, after {after['requests']})"
        return [Finding.skipped("deploy_regression", summary=f"{label}: {few}")]
    regressions = []
    if after["rate_5xx"] > limits.rate_5xx and after["rate_5xx"] > 2 * before["rate_5xx"]:
        regressions.append(f"5xx rate {before['rate_5xx']:.2%} → {after['rate_5xx']:.2%}")
    if after["p95"] > max(1.5 * before["p95"], before["p95"] + 0.1):
        regressions.append(f"p95 {before['p95']:.2f}s → {after['p95']:.2f}s")
    if after["static_share"] > 2 * before["static_share"] and after["static"] >= 10:
        regressions.append(f"static origin hits {before['static_share']:.1%} → {after['static_share']:.1%} of requests")
    compare = {k: (before[k], after[k]) for k in ("requests", "rate_5xx", "p95", "static_share")}
    text = f"{label}: " + ("; ".join(regressions) if regressions else "no regression")
    return [
        Finding.judged(
            "deploy_regression",
            breach=bool(regressions),
            severity="warning",
            summary=text,
            value=json.dumps(compare),
            threshold="see notes",
            examples=regressions,
        )
    ]


def _merged_slots(state: StateDB, pending: Mapping[int, list[Any]], *, lo: float, hi: float) -> dict[int, list[Any]]:
    slots: dict[int, list[Any]] = {}
    rows = state.execute(
        "SELECT slot_start, requests, errors_5xx, static_origin, rt_hist FROM log_slots"
        " WHERE slot_start >= ? AND slot_start < ?",
        (int(lo), int(hi)),
    )
    for row in rows:
        slots[row[0]] = [row[1], row[2], row[3], dict(json.loads(row[4]))]
    for start, (req, err, static, hist) in pending.items():
        if not start or not lo <= start < hi:
            continue
        slot = slots.setdefault(start, [0, 0, 0, {}])
        slot[0] += req
        slot[1] += err
        slot[2] += static
        for key, n in hist.items():
            k = key.decode("ascii", "replace") if isinstance(key, bytes) else key
            slot[3][k] = slot[3].get(k, 0) + n
    return slots


def _window(slots: Mapping[int, list[Any]], keep: Callable[[int], bool]) -> dict[str, float]:
    requests = errors = static = 0
    hist: dict[str, int] = {}
    for start, (req, err, st, h) in slots.items():
        if keep(start):
            requests += req
            errors += err
            static += st
            for k, n in h.items():
                hist[k] = hist.get(k, 0) + n
    return {
        "requests": requests,
        "rate_5xx": errors / requests if requests else 0.0,
        "p95": percentiles_of(hist)["p95"],
        "static": static,
        "static_share": static / requests if requests else 0.0,
    }
