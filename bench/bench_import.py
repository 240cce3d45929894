"""Import benchmark (issue 4): 100,000 JSONL items, first import and unchanged rerun, measured
beside a plain `executemany` insert of the same rows in the same run.

The import path is the real one (validation, content hash, versions, checkpoint per batch, purge
relay into the state.db outbox); only process start-up is left out. Targets: first import
≥ 20,000 items/s, unchanged rerun ≥ 100,000 items/s with zero writes.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

from edgecron.content import ContentStore  # noqa: E402
from edgecron.feed import Validator  # noqa: E402
from edgecron.feedfiles import JsonlSource  # noqa: E402
from edgecron.importer import Importer, ImportOptions, forward_purges  # noqa: E402
from edgecron.outbox import PurgeOutbox  # noqa: E402
from edgecron.state import open_state  # noqa: E402

N_ITEMS = 100_000
HOST = "www.example.com"


def write_feed(path: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with path.open("w") as fh:
        for i in range(N_ITEMS):
            stamp = (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
            doc = {
                "id": f"item-{i}",
                "url": f"https://{HOST}/articles/item-{i}",
                "updated_at": stamp,
                "title": f"Article {i}",
                "body": f"<p>Body of article {i}. " + "Lorem ipsum dolor sit amet. " * 8,
                "tags": ["news", f"t{i % 50}"],
            }
            fh.write(json.dumps(doc) + "\n")


def timed_import(
    store: ContentStore, feed: Path, state_dir: Path, *, run_id: str, **options: object
) -> tuple[float, dict, int]:
    now = datetime.now(UTC)
    with open_state(state_dir / "state.db") as state:
        outbox = PurgeOutbox(state)
        importer = Importer(
            store=store,
            source=JsonlSource(feed),
            validator=Validator(allowed_hosts=(HOST,), max_body_bytes=1 << 20),
            options=ImportOptions(**options),
            run_id=run_id,
            now=lambda: now,
            forward_purges=lambda: forward_purges(store, outbox, now=now),
        )
        writes_before = store.conn.total_changes
        started = time.perf_counter()
        report = importer.run()
        elapsed = time.perf_counter() - started
    return elapsed, report.counts, store.conn.total_changes - writes_before


def plain_executemany(feed: Path, db: Path) -> tuple[float, float]:
    """(seconds to insert pre-parsed rows, seconds to parse the JSONL and insert)."""
    started = time.perf_counter()
    rows = []
    with feed.open("rb") as fh:
        for line in fh:
            d = json.loads(line)
            rows.append((d["id"], d["url"], d["updated_at"], d["title"], d["body"], json.dumps(d["tags"])))
    parsed = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE items (key TEXT PRIMARY KEY, url, updated_at, title, body, extra)")
    insert_started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    done = time.perf_counter()
    conn.close()
    return done - insert_started, (parsed - started) + (done - insert_started)


def main() -> list[str]:
    report: list[str] = []

    def say(line: str) -> None:
        report.append(line)
        print(line, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        feed = base / "feed.jsonl"
        write_feed(feed)
        insert_only, parse_and_insert = plain_executemany(feed, base / "plain.db")
        with ContentStore(base / "content.db") as store:
            first, counts, writes = timed_import(store, feed, base / "state", run_id="first", batch_size=500)
            assert counts["inserted"] == N_ITEMS, counts
            rerun, counts2, writes2 = timed_import(store, feed, base / "state", run_id="rerun", batch_size=500)
            assert counts2["unchanged"] == N_ITEMS, counts2
            # Every item re-hashed and compared (as with --max-age 0): the cursor's shortcut off.
            full, counts3, writes3 = timed_import(
                store, feed, base / "state", run_id="full", batch_size=500, max_age=timedelta(0)
            )
            assert counts3["unchanged"] == N_ITEMS and counts3["behind_cursor"] == 0, counts3
        say(
            f"{N_ITEMS:,} JSONL items, plain executemany of the same rows: {N_ITEMS / insert_only:,.0f} rows/s "
            f"(json.loads + executemany: {N_ITEMS / parse_and_insert:,.0f} items/s)"
        )
        say(
            f"first import: {N_ITEMS / first:,.0f} items/s (target ≥ 20,000; "
            f"{insert_only / first:.0%} of the bare insert's speed, "
            f"{parse_and_insert / first:.0%} of parse + insert), {writes:,} rows written incl. versions and purge relay"
        )
        say(
            f"unchanged rerun: {N_ITEMS / rerun:,.0f} items/s (target ≥ 100,000), {writes2} rows written, "
            f"{counts2['behind_cursor']:,} skipped behind the cursor"
        )
        say(
            f"unchanged rerun re-hashing every item (--max-age 0): {N_ITEMS / full:,.0f} items/s, {writes3} rows written"
        )
    return report


if __name__ == "__main__":
    main()
