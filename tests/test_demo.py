"""`make demo` runs end to end and leaves no server behind (its duration is printed, not asserted)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_runs_and_stops_everything() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run_demo.py")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all demo processes stopped" in result.stdout
    ports = {int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", result.stdout)}
    assert ports, "the demo printed no server address"
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"a demo server still listens on {port}"
    # The warm step shows the edge filling then serving from cache.
    assert re.search(r"MISS\s+4\d", result.stdout) and re.search(r"HIT\s+4\d", result.stdout)
    # ... and which Cloudflare data centre answered (the demo site's cf-ray suffix).
    assert re.search(r"^data centre \(cf-ray\)\s+responses$", result.stdout, re.M)
    assert re.search(r"^FRA\s+4\d$", result.stdout, re.M)
