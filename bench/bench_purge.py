"""Purge bench: 10,000 URLs through the outbox and client against the emulator on Free limits.

Figures: API calls against ceil(N / batch), and wall time against what the emulator's URL bucket
allows (800 URLs/s, one second of burst): (N - burst) / rate. Measured in one run, never a test.

Then per plan, what one sender reaches in about 6 s past the burst, as calls and URLs (or tags) per
5 minutes: the budget a fleet shares whatever its node count (notes/scaling.md). Cloudflare's global
API limit (1,200 requests per 5 minutes per token) is modelled by neither the emulator nor the client.
"""

from __future__ import annotations

import math
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]

from edgecron.cloudflare import CloudflareClient  # noqa: E402
from edgecron.config import Secret  # noqa: E402
from edgecron.outbox import PurgeOutbox  # noqa: E402
from edgecron.purge import send_outbox  # noqa: E402
from edgecron.state import open_state  # noqa: E402

from demo.cloudflare_api import PLANS, CloudflareEmulator  # noqa: E402

ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "bench-token"


def measure(n: int = 10_000, batch: int = 30, plan: str = "free", kind: str = "url") -> dict[str, float]:
    values = [f"https://www.example.com/post/{i}" if kind == "url" else f"bench-tag-{i}" for i in range(n)]
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp, open_state(Path(tmp) / "state.db") as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue(kind, values, source="bench", now=now)
        with CloudflareEmulator(token=TOKEN, zone=ZONE, plan=plan) as api:
            client = CloudflareClient(
                api_url=api.base_url, zone_id=ZONE, token=Secret(TOKEN), plan=plan, batch_size=batch
            )
            started = time.perf_counter()
            report = send_outbox(outbox, client, run_id="bench", now=lambda: now, stop=threading.Event())
            wall = time.perf_counter() - started
            snap = api.snapshot()
    limits = PLANS[plan]
    if kind == "url":
        allowed = max(0.0, (n - limits.url_rate) / limits.url_rate)  # the bucket starts full with one second of URLs
    else:
        allowed = max(0.0, (math.ceil(n / batch) - limits.selector_burst) / limits.selector_rate)
    return {
        "urls": n,
        "sent": sum(report.sent.values()),
        "calls": snap["calls"],
        "expected_calls": math.ceil(n / batch),
        "rate_limited": client.stats.rate_limited,
        "wall_s": wall,
        "allowed_s": allowed,
    }


PLAN_SECONDS = 6.0  # past the burst: long enough for the bucket's rate to show, short enough for `make bench`


def per_five_minutes(plan: str) -> list[str]:
    """URL and tag purges on `plan`: the rate one sender keeps past the burst, as calls and items per 5 min."""
    limits = PLANS[plan]
    lines = []
    url = measure(n=int(limits.url_rate * (1 + PLAN_SECONDS)), batch=30, plan=plan)
    url_rate = (url["urls"] - limits.url_rate) / url["wall_s"]  # past the one-second burst
    lines.append(
        f"{plan}: URL purge, batch 30: {url_rate:,.0f} URLs/s, {url_rate / 30:,.1f} calls/s past the burst "
        f"(bucket {limits.url_rate:,.0f}/s) = {url_rate * 300:,.0f} URLs, {url_rate / 30 * 300:,.0f} calls per 5 min"
    )
    if plan == "free":  # 5 calls a minute: 25 calls of burst, then 25 more per 5 minutes; measuring takes minutes
        lines.append(
            "free: tag/host/prefix purge: 25 calls of burst + 25 per 5 min (5/min, from the bucket; not timed)"
        )
        return lines
    calls = int(limits.selector_burst + limits.selector_rate * PLAN_SECONDS)
    tag = measure(n=calls * 30, batch=30, plan=plan, kind="tag")
    tag_rate = (tag["calls"] - limits.selector_burst) / tag["wall_s"]
    lines.append(
        f"{plan}: tag purge, 30 tags a call: {tag_rate:,.1f} calls/s past the burst of {limits.selector_burst} "
        f"(bucket {limits.selector_rate:g}/s) = {tag_rate * 300 + limits.selector_burst:,.0f} calls, "
        f"{(tag_rate * 300 + limits.selector_burst) * 30:,.0f} tags per 5 min"
    )
    return lines


def main() -> list[str]:
    fig = measure()
    lines = [
        f"purge {fig['urls']:,} URLs, Free plan, batch 30: {fig['calls']} API calls "
        f"(ceil(N/batch) = {fig['expected_calls']}), {fig['rate_limited']} answered 429",
        f"wall time {fig['wall_s']:.2f} s vs {fig['allowed_s']:.2f} s the URL bucket allows "
        f"({fig['wall_s'] / fig['allowed_s']:.1%} of the limit's time)",
    ]
    for line in lines:
        print(line, flush=True)
    for plan in PLANS:
        for line in per_five_minutes(plan):
            print(line, flush=True)
            lines.append(line)
    lines.append("global API limit: 1,200 requests / 5 min per token (not modelled): compare the calls above with it")
    print(lines[-1])
    return lines


if __name__ == "__main__":
    main()
