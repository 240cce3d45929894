"""`make bench`: every benchmark section, measured in one run, printed as ratios.

Run one section with `make bench ARGS=warm` (sections: warm, purge, import, logs, sources, storage).
Figures are never pass/fail tests; they are for the closing notes and for spotting regressions.
"""

from __future__ import annotations

import importlib
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SECTIONS = {
    "warm": "bench_warm",
    "purge": "bench_purge",
    "import": "bench_import",
    "logs": "bench_logs",
    "sources": "bench_sources",
    "storage": "bench_storage",
}


def main(argv: list[str]) -> int:
    wanted = argv or list(SECTIONS)
    unknown = [name for name in wanted if name not in SECTIONS]
    if unknown:
        print(f"Error: unknown bench section {unknown[0]!r}: expected one of {', '.join(SECTIONS)}.", file=sys.stderr)
        return 2
    print(f"edgecron bench on {platform.node()} ({platform.machine()}, Python {platform.python_version()})")
    summary: list[str] = []
    for name in wanted:
        try:
            module = importlib.import_module(SECTIONS[name])
        except ModuleNotFoundError:
            print(f"\n## {name}: not available yet (bench/{SECTIONS[name]}.py missing)")
            continue
        print(f"\n## {name}", flush=True)
        started = time.perf_counter()
        lines = module.main() or []
        summary += [f"[{name}] {line}" for line in lines]
        print(f"({name}: {time.perf_counter() - started:.0f} s)")
    if summary:
        print("\n## summary\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
