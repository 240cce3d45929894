"""`make demo-serve`: keep the demo site and the Cloudflare API emulator running, for trying the
crontab and the scheduler by hand. Writes `.env.demo` (every job scheduled every minute) and waits
for Ctrl-C or SIGTERM. Nothing outside the checkout's `.env.demo` and `demo-state/` is touched.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo import content_routes  # noqa: E402
from demo.cloudflare_api import CloudflareEmulator  # noqa: E402
from demo.site import DemoSite  # noqa: E402

TOKEN = "demo-token-not-a-secret"
ZONE = "0123456789abcdef0123456789abcdef"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep the demo site and Cloudflare emulator running.")
    parser.add_argument("--dir", type=Path, default=ROOT, help="where .env.demo and demo-state/ go")
    where = parser.parse_args(argv).dir.resolve()
    state = where / "demo-state"
    state.mkdir(parents=True, exist_ok=True)
    content_routes.configure(content_db=state / "content.db")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with DemoSite(access_log=state / "access.log") as site:
        api = CloudflareEmulator(token=TOKEN, zone=ZONE, site_purge_url=site.url + "/__edgecron/purge").start()
        env_file = where / ".env.demo"
        env_file.touch(mode=0o600)  # it holds the (demo) token: private, as a real .env must be
        env_file.chmod(0o600)
        env_file.write_text(
            "# Written by `make demo-serve`: the demo site and the Cloudflare emulator on loopback.\n"
            f"SITE_URL={site.url}\nSTATE_DIR={state}\n"
            f"CF_API_URL={api.base_url}\nCF_API_TOKEN={TOKEN}\nCF_ZONE_ID={ZONE}\nCF_PLAN=free\n"
            f"IMPORT_SOURCE={site.url}/api/feed?page=1\n"
            f"ACCESS_LOGS={state / 'access.log'}\nLOG_FORMAT=edgecron\nWARM_RATE=0\n"
            "SCHEDULE_WARM=* * * * *\nSCHEDULE_PURGE=* * * * *\nSCHEDULE_IMPORT=* * * * *\n"
            "SCHEDULE_CHECK_LOGS=* * * * *\nSCHEDULE_CACHE_RULES=* * * * *\n"
        )
        print(f"demo site:       {site.url}", flush=True)
        print(f"Cloudflare API:  {api.base_url}", flush=True)
        print(f"settings:        {env_file}  (state in {state})", flush=True)
        print("In another terminal:", flush=True)
        print(f"  export EDGECRON_ENV_FILE={env_file}", flush=True)
        print("  .venv/bin/python scripts/jobs.py crontab      # the crontab for these settings", flush=True)
        print("  .venv/bin/python scripts/jobs.py schedule     # run every job each minute; Ctrl-C stops", flush=True)
        print("  .venv/bin/python scripts/jobs.py status       # what ran", flush=True)
        print("Ctrl-C here stops the demo servers.", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            api.stop()
    print("demo servers stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
