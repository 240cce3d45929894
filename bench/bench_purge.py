"""Purge bench: 10,000 URLs through the outbox and client against the emulator on Free limits.

Figures: API calls against ceil(N / batch), and wall time against what the emulator's URL bucket
allows (800 URLs/s, one second of burst): (N - burst) / rate. Measured in one run, never a test.
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


def measure(n: int = 10_000, batch: int = 30, plan: str = "free") -> dict[str, float]:
    urls = [f"https://www.example.com/post/{i}" for i in range(n)]
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp, open_state(Path(tmp) / "state.db") as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue("url", urls, source="bench", now=now)
        with CloudflareEmulator(token=TOKEN, zone=ZONE, plan=plan) as api:
            client = CloudflareClient(
                api_url=api.base_url, zone_id=ZONE, token=Secret(TOKEN), plan=plan, batch_size=batch
            )
            started = time.perf_counter()
            report = send_outbox(outbox, client, run_id="bench", now=lambda: now, stop=threading.Event())
            wall = time.perf_counter() - started
            snap = api.snapshot()
    rate = PLANS[plan].url_rate
    allowed = max(0.0, (n - rate) / rate)  # the bucket starts full with one second of URLs
    return {
        "urls": n,
        "sent": sum(report.sent.values()),
        "calls": snap["calls"],
        "expected_calls": math.ceil(n / batch),
        "rate_limited": client.stats.rate_limited,
        "wall_s": wall,
        "allowed_s": allowed,
    }


def main() -> list[str]:
    fig = measure()
    lines = [
        f"purge {fig['urls']:,} URLs, Free plan, batch 30: {fig['calls']} API calls "
        f"(ceil(N/batch) = {fig['expected_calls']}), {fig['rate_limited']} answered 429",
        f"wall time {fig['wall_s']:.2f} s vs {fig['allowed_s']:.2f} s the URL bucket allows "
        f"({fig['wall_s'] / fig['allowed_s']:.1%} of the limit's time)",
    ]
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    main()
