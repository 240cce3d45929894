"""`make demo`: start the demo site (and helpers) on free loopback ports, run the jobs, stop everything.

No credentials and nothing outside a temporary directory are used; every process started here is
stopped in `finally`, so the demo leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
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

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> str:
        """Start a demo server that prints `listening on URL`; return the URL."""
        proc = subprocess.Popen(
            [PYTHON, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.processes.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening on "):
            raise SystemExit(f"demo: {name} did not start: {line.strip()}")
        self.urls[name] = line.split()[-1]
        return self.urls[name]

    def write_env(self, **values: str) -> None:
        self.env_file.touch(mode=0o600)  # it holds the (demo) token: private, as a real .env must be
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
    print(
        "(data centre: the cf-ray suffix, e.g. -FRA, names the Cloudflare data centre that answered. Warming from\n"
        " one VPS fills the cache there, plus the upper tier when Tiered Cache is on; elsewhere the first visitor\n"
        " still misses, but fills from the upper tier instead of the origin.)"
    )
    demo.run("Warm again with --verify (now served from cache: HIT)", "warm_cache.py", "--summary", "--verify")


DEMO_TOKEN = "demo-token-not-a-secret"
DEMO_ZONE = "0123456789abcdef0123456789abcdef"


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def manifest(demo: Demo, ref: str, pages: list[str], *, edited: tuple[str, ...] = ()) -> Path:
    """What a static site generator would write: URL → hash of the page's built bytes."""
    urls = {}
    for page in pages:
        version = 2 if page in edited else 1
        urls[page] = "sha256:" + hashlib.sha256(f"{page} v{version}".encode()).hexdigest()[:16]
    path = demo.workdir / f"manifest-{ref}.json"
    path.write_text(json.dumps({"version": 1, "ref": ref, "urls": urls}, indent=1))
    return path


def emulator_purged_urls(demo: Demo) -> list[str]:
    with urllib.request.urlopen(demo.urls["cloudflare-api"] + "/__emulator/purges", timeout=10) as response:
        record = json.loads(response.read())
    return sorted(url for p in record.get("purges", []) for url in p.get("body", {}).get("files", []))


def step_purge_deploy(demo: Demo) -> None:
    site = demo.urls["site"]
    api = demo.start(
        "cloudflare-api",
        "demo/cloudflare_api.py", "--port", "0", "--token", DEMO_TOKEN, "--zone", DEMO_ZONE, "--plan", "free",
        "--site-purge-url", site + "/__edgecron/purge",
    )  # fmt: skip
    demo.write_env(CF_API_URL=api + "/client/v4", CF_API_TOKEN=DEMO_TOKEN, CF_ZONE_ID=DEMO_ZONE, CF_PLAN="free")
    pages = ["/", "/about", "/pricing", *[f"/blog/post-{i}" for i in range(1, 41)]]
    demo.run("Record the current deploy as the baseline", "purge_cache.py", "deploy", "--manifest",
             str(manifest(demo, "v1", pages)), "--record-only")  # fmt: skip
    changed = ["/about", "/blog/post-3", "/blog/post-7"]
    post(site + "/__edgecron/edit", {"paths": changed})
    print(f"\n(deploy v2 changes {', '.join(changed)} on the demo site)")
    demo.run("Deploy v2: purge exactly what changed through the Cloudflare emulator, then re-warm it",
             "purge_cache.py", "deploy", "--manifest", str(manifest(demo, "v2", pages, edited=tuple(changed))), "--warm")  # fmt: skip
    purged = emulator_purged_urls(demo)
    print("Cloudflare emulator accepted purges of:\n  " + "\n  ".join(purged))
    if sorted(site + c for c in changed) != purged:
        raise SystemExit(f"demo: expected exactly {changed} to be purged, got {purged}")


def step_import(demo: Demo) -> None:
    site = demo.urls["site"]
    demo.run("Import the demo site's article feed (12 new articles), purge and warm them",
             "import_stale.py", "run", "--source", f"{site}/api/feed?page=1", "--purge", "--warm")  # fmt: skip
    demo.run("Import the same feed again: nothing changed, nothing written, nothing purged",
             "import_stale.py", "run", "--source", f"{site}/api/feed?page=1", "--purge")  # fmt: skip
    before = emulator_purged_urls(demo)
    demo.run("The feed's revision 2 edits two articles, adds one, deletes one: purge and re-warm exactly those",
             "import_stale.py", "run", "--source", f"{site}/api/feed?page=1&rev=2", "--purge", "--warm")  # fmt: skip
    after = emulator_purged_urls(demo)
    for url in before:
        after.remove(url)
    print("Cloudflare emulator accepted purges of:\n  " + "\n  ".join(after))
    if len(after) != 4 or not all("/articles/" in url for url in after):
        raise SystemExit(f"demo: expected the 4 changed articles to be purged, got {after}")
    demo.run("Import runs so far", "import_stale.py", "runs")


def get(url: str, *, cookie: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.status


def step_check_logs(demo: Demo) -> None:
    site = demo.urls["site"]
    # Visitors: anonymous readers, and a logged-in customer who opens the pricing page from a mail link.
    for i in range(30):
        get(f"{site}/blog/post-{i % 10 + 1}?utm_source=mail{i}")
    get(f"{site}/account", cookie="sessionid=demo-customer")
    get(f"{site}/pricing?utm_source=mail", cookie="sessionid=demo-customer")
    demo.write_env(ACCESS_LOGS=str(demo.workdir / "access.log"), LOG_FORMAT="edgecron")
    demo.run("Check the origin's access log and the jobs (planted: a logged-in page served cacheable)",
             "check_logs.py", "--summary", expect=(1,))  # fmt: skip


def step_operations(demo: Demo) -> None:
    demo.run("Check the cache rules in notes/cache-rules.toml against the demo site (planted: /pricing)",
             "check_cache_rules.py", "check", "--site", demo.urls["site"], expect=(1,))  # fmt: skip
    demo.run("What ran, what is due, who holds a lock, what is pending: the first command over SSH",
             "jobs.py", "status")  # fmt: skip


STEPS: list[Callable[[Demo], None]] = [step_warm, step_purge_deploy, step_import, step_check_logs, step_operations]


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgecron-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            access_log = Path(tmp) / "access.log"
            site_env = {"PATH": "/usr/bin:/bin", "EDGECRON_DEMO_CONTENT_DB": str(Path(tmp) / "state" / "content.db")}
            site = demo.start("site", "demo/site.py", "--port", "0", "--access-log", str(access_log), env=site_env)
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
