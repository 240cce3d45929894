"""`make demo`: start the demo site (and helpers) on free loopback ports, run the jobs, stop everything.

No credentials and nothing outside a temporary directory are used; every process started here is
stopped in `finally`, so the demo leaves nothing behind.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env_file = workdir / ".env"
        self.processes: list[subprocess.Popen[str]] = []
        self.urls: dict[str, str] = {}

    def start(self, name: str, *args: str) -> str:
        """Start a demo server that prints `listening on URL`; return the URL."""
        proc = subprocess.Popen([PYTHON, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.processes.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening on "):
            raise SystemExit(f"demo: {name} did not start: {line.strip()}")
        self.urls[name] = line.split()[-1]
        return self.urls[name]

    def write_env(self, **values: str) -> None:
        with self.env_file.open("a", encoding="utf-8") as fh:
            for key, value in values.items():
                fh.write(f"{key}={value}\n")

    def run(self, title: str, script: str, *args: str, expect: tuple[int, ...] = (0,)) -> int:
        print(f"\n=== {title}\n$ scripts/{script} {' '.join(args)}", flush=True)
        env = {"EDGECRON_ENV_FILE": str(self.env_file), "PATH": "/usr/bin:/bin", "HOME": str(self.workdir)}
        result = subprocess.run([PYTHON, str(ROOT / "scripts" / script), *args], env=env, cwd=self.workdir)
        print(f"(exit {result.returncode})", flush=True)
        if result.returncode not in expect:
            raise SystemExit(f"demo: step {title!r} exited {result.returncode}, expected {expect}")
        return result.returncode

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def step_warm(demo: Demo) -> None:
    demo.run("Warm the cache from the sitemap index (first pass fills: MISS)", "warm_cache.py", "--summary")
    demo.run("Warm again with --verify (now served from cache: HIT)", "warm_cache.py", "--summary", "--verify")


STEPS: list[Callable[[Demo], None]] = [step_warm]


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgecron-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            access_log = Path(tmp) / "access.log"
            site = demo.start("site", "demo/site.py", "--port", "0", "--access-log", str(access_log))
            demo.write_env(SITE_URL=site, STATE_DIR=str(Path(tmp) / "state"), WARM_RATE="0")
            print(f"demo site: {site} (state in {tmp})")
            for step in STEPS:
                step(demo)
        finally:
            demo.stop_all()
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s; all demo processes stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
