"""`make demo-fleet`: two nodes on one PostgreSQL run each job once per slot, and leave nothing behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from pgcluster import MISSING_REASON, find_pg_bin

ROOT = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, str(ROOT / "demo" / "fleet.py")]
SUMMARY_LINE = re.compile(r"^slot (\d\d:\d\d) UTC\s+([\w-]+)\s+(.+)$", re.M)
COMPLETED = ("ok", "problems")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_pg_bin() is None, reason=MISSING_REASON),
]


def left_behind(output: str) -> list[str]:
    """What the demo started that is still there: its temp dirs, and anything listening on its ports."""
    dirs = re.findall(r"(/tmp/edgecron-(?:fleet|pg)-\w+)", output)
    assert len(set(dirs)) >= 2, "the demo did not name its work dir and cluster dir"
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", output)}
    assert len(ports) >= 3, "the demo did not name its site, emulator and database ports"
    found = [d for d in set(dirs) if Path(d).exists()]
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                found.append(f"port {port}")
    return found


def test_two_nodes_run_each_job_once_per_slot() -> None:
    result = subprocess.run(DEMO, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    per_slot: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for slot, job, outcomes in SUMMARY_LINE.findall(result.stdout):
        per_slot[slot][job] = sorted(outcomes.split(", "))
    assert len(per_slot) == 3, result.stdout
    for slot, jobs in per_slot.items():
        assert set(jobs) == {"warm", "purge"}, (slot, jobs)
        for job, outcomes in jobs.items():
            nodes = sorted(o.split()[0] for o in outcomes)
            statuses = sorted(o.split()[1] for o in outcomes)
            assert nodes == ["node-a", "node-b"], (slot, job, outcomes)
            assert statuses[0] == "done-elsewhere" and statuses[1] in COMPLETED, (slot, job, outcomes)
    assert "15 of 15 queued URLs purged, 0 purged more than once, 0 never" in result.stdout
    status = result.stdout.split("=== jobs.py status", 1)[1].split("=== per slot", 1)[0]
    assert re.search(r"^warm .* scheduler +ok ", status, re.M), status
    assert left_behind(result.stdout) == []


def test_ctrl_c_stops_everything_and_removes_the_temp_dirs() -> None:
    proc = subprocess.Popen(
        DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # Ctrl-C once both nodes are firing the first slot
        seen.append(line)
        if line.startswith("slot "):
            break
    os.killpg(proc.pid, signal.SIGINT)  # the terminal sends it to the whole foreground group
    rest, errors = proc.communicate(timeout=120)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output + errors
    assert "interrupted" in errors
    assert left_behind(output) == []
