"""`make bench` is not a test (timings never gate CI), but its entry point must answer sensibly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_bench_section_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "nosuch"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: unknown bench section 'nosuch': expected one of warm, purge, import, logs, sources, storage."
    )


def test_every_bench_section_module_exists_and_has_main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import run  # type: ignore[import-not-found]

    for module_name in run.SECTIONS.values():
        module = __import__(module_name)
        assert callable(getattr(module, "main", None)), module_name
