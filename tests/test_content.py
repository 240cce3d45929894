"""The content store and the import flow over real stores: content.db (a SQLite file) or a real
PostgreSQL database (tests using `store` run on both), and state.db."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from content_stores import tables_in, written
from edgecron import content as module
from edgecron.contentschema import SCHEMA, SCHEMA_VERSION
from edgecron.durations import parse_duration
from edgecron.errors import InputError
from edgecron.feed import Validator
from edgecron.feedfiles import JsonlSource
from edgecron.importer import Importer, ImportOptions, forward_purges
from edgecron.outbox import PurgeOutbox
from edgecron.state import open_state

pytestmark = pytest.mark.both_content_backends
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOSTS = ("www.example.com",)


def item(key: str, body: str = "b", *, stamp: str = "2026-02-01T00:00:00Z", **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": key,
        "url": f"https://www.example.com/{key}",
        "updated_at": stamp,
        "title": key.upper(),
        "body": body,
    }
    doc.update(over)
    return doc


def write_feed(path: Path, items: list[object]) -> Path:
    path.write_text("".join((json.dumps(i) if not isinstance(i, str) else i) + "\n" for i in items))
    return path


def run_import(store: module.ContentStore, feed: Path, *, run_id: str, now: datetime = NOW, **options: object):
    importer = Importer(
        store=store,
        source=JsonlSource(feed),
        validator=Validator(allowed_hosts=HOSTS, max_body_bytes=1000),
        options=ImportOptions(**{"batch_size": 3, **options}),  # type: ignore[arg-type]
        run_id=run_id,
        now=lambda: now,
    )
    return importer.run()


@pytest.fixture
def store(content_db: Path | str) -> module.ContentStore:
    with module.ContentStore(content_db) as opened:
        yield opened


def writes(store: module.ContentStore, location: Path | str) -> object:
    """SQLite's count of rows this connection changed; on PostgreSQL every row with its xmin."""
    return store.conn.total_changes if isinstance(location, Path) else written(location)


def test_importing_twice_changes_nothing_the_second_time(
    store: module.ContentStore, tmp_path: Path, content_db: Path | str
) -> None:
    feed = write_feed(tmp_path / "f.jsonl", [item(f"k{i}") for i in range(10)])
    first = run_import(store, feed, run_id="r1")
    after_first = writes(store, content_db)
    second = run_import(store, feed, run_id="r2")
    assert first.counts["inserted"] == 10
    assert (second.counts["inserted"], second.counts["updated"], second.counts["unchanged"]) == (0, 0, 10)
    assert writes(store, content_db) == after_first  # not one row written
    assert store.pending_purges() == [] or all(r[2] == "r1" for r in store.pending_purges())


def test_an_update_keeps_the_previous_version_and_rollback_restores_exact_rows(
    store: module.ContentStore, tmp_path: Path
) -> None:
    run_import(store, write_feed(tmp_path / "a.jsonl", [item("a"), item("b"), item("c")]), run_id="r1")
    before = store.snapshot()
    feed2 = [item("a", "changed", url="https://www.example.com/moved"), {"id": "b", "deleted": True}, item("d")]
    report = run_import(store, write_feed(tmp_path / "b.jsonl", feed2), run_id="r2")
    assert (report.counts["updated"], report.counts["removed"], report.counts["inserted"]) == (1, 1, 1)
    assert store.snapshot() != before
    result = store.rollback("r2", run_id="rb", now=NOW)
    assert store.snapshot() == before
    assert (result.restored, result.removed) == (2, 1)
    assert set(result.urls) == {
        "https://www.example.com/a",
        "https://www.example.com/moved",
        "https://www.example.com/b",
        "https://www.example.com/d",
    }
    assert store.run_record("r2")["rolled_back_by"] == "rb"
    store.rollback("rb", run_id="rb2", now=NOW)  # a rollback is itself reversible
    assert store.get("d") is not None and store.get("b") is None


def test_rollback_refuses_when_a_later_run_changed_the_same_item(store: module.ContentStore, tmp_path: Path) -> None:
    run_import(store, write_feed(tmp_path / "a.jsonl", [item("a")]), run_id="r1")
    run_import(store, write_feed(tmp_path / "b.jsonl", [item("a", "v2", stamp="2026-02-02T00:00:00Z")]), run_id="r2")
    run_import(store, write_feed(tmp_path / "c.jsonl", [item("a", "v3", stamp="2026-02-03T00:00:00Z")]), run_id="r3")
    with pytest.raises(InputError, match="by run r3"):
        store.rollback("r2", run_id="rb", now=NOW)
    store.rollback("r2", run_id="rb", now=NOW, force=True)
    assert store.get("a")["body"] == "b"


def test_duplicate_keys_in_one_feed_last_wins_and_rollback_returns_to_before_the_run(
    store: module.ContentStore, tmp_path: Path
) -> None:
    run_import(store, write_feed(tmp_path / "a.jsonl", [item("a", "original")]), run_id="r1")
    feed = [item("a", "first"), item("x"), item("y"), item("a", "second"), item("a", "last")]
    report = run_import(store, write_feed(tmp_path / "b.jsonl", feed), run_id="r2")
    assert store.get("a")["body"] == "last" and report.counts["duplicates"] == 2
    store.rollback("r2", run_id="rb", now=NOW)
    assert store.get("a")["body"] == "original"


def test_differing_duplicates_in_one_batch_do_not_write_again_on_a_rerun(
    store: module.ContentStore, tmp_path: Path
) -> None:
    feed = write_feed(tmp_path / "d.jsonl", [item("a", "first"), item("a", "second"), item("b")])
    first = run_import(store, feed, run_id="r1")
    assert store.get("a")["body"] == "second" and first.counts["duplicates"] == 1
    again = run_import(store, feed, run_id="r2")
    assert (again.counts["updated"], again.counts["inserted"]) == (0, 0)
    assert again.counts["duplicates"] == 1
    assert store.execute("SELECT count(*) FROM versions WHERE run_id='r2'").fetchone()[0] == 0
    assert store.get("a")["body"] == "second"


def test_an_older_copy_later_in_the_feed_never_replaces_a_newer_one_whatever_the_batches(tmp_path: Path) -> None:
    # Reruns skip items behind the cursor, so "the last copy wins" could not be kept stable when the
    # last copy is the older one: the newest live copy wins, whatever the batch boundaries.
    feed = write_feed(
        tmp_path / "f.jsonl",
        [item("a", "newer", stamp="2026-02-03T00:00:00Z"), item("x"), item("y"), item("a", "older")],
    )
    finals = []
    for batch in (3, 10):
        with module.ContentStore(tmp_path / f"content-{batch}.db") as store:
            first = run_import(store, feed, run_id="r1", batch_size=batch)
            again = run_import(store, feed, run_id="r2", batch_size=batch)
            assert (again.counts["updated"], again.counts["inserted"]) == (0, 0)
            assert store.conn.execute("SELECT count(*) FROM versions WHERE run_id='r2'").fetchone()[0] == 0
            finals.append(store.get("a")["body"])
            assert first.counts["duplicates"] + first.counts["older"] >= 1
    assert finals == ["newer", "newer"]


def test_the_cursor_skips_old_items_unless_max_age_asks_for_them(store: module.ContentStore, tmp_path: Path) -> None:
    old = item("old", stamp="2025-01-01T00:00:00Z")
    run_import(store, write_feed(tmp_path / "a.jsonl", [old, item("new", stamp="2026-02-01T00:00:00Z")]), run_id="r1")
    # The feed changed an old item without bumping its timestamp: behind the cursor, not re-checked...
    edited = write_feed(tmp_path / "a.jsonl", [{**old, "body": "edited"}, item("new", stamp="2026-02-01T00:00:00Z")])
    report = run_import(store, edited, run_id="r2")
    assert report.counts["behind_cursor"] == 1 and store.get("old")["body"] == "b"
    # ...until --max-age says items older than 30 days are re-checked.
    report = run_import(store, edited, run_id="r3", max_age=parse_duration("30d"))
    assert report.counts["updated"] == 1 and store.get("old")["body"] == "edited"


def test_an_item_behind_the_cursor_that_left_the_store_is_inserted_again(
    store: module.ContentStore, tmp_path: Path
) -> None:
    feed = [item(k, stamp="2026-01-01T00:00:00Z") for k in "abc"] + [item("d", stamp="2026-02-01T00:00:00Z")]
    run_import(store, write_feed(tmp_path / "a.jsonl", feed), run_id="r1")
    before = store.snapshot()
    store.execute("DELETE FROM items WHERE key = 'b'")  # removed by hand, not by a feed
    report = run_import(store, write_feed(tmp_path / "a.jsonl", feed), run_id="r3")
    assert (report.counts["inserted"], report.counts["behind_cursor"], report.counts["unchanged"]) == (1, 2, 3)
    assert store.snapshot() == before


def test_a_tombstone_keeps_an_item_removed_until_a_newer_edit(store: module.ContentStore, tmp_path: Path) -> None:
    # The same feed holds a tombstone and, later, an older copy of the same key: the older copy must
    # not bring it back, or every rerun would delete and re-insert it.
    feed = write_feed(
        tmp_path / "f.jsonl",
        [{"id": "a", "deleted": True}, item("x"), item("y"), item("a", "stale copy"), item("z")],
    )
    first = run_import(store, feed, run_id="r1", batch_size=2)
    assert store.get("a") is None and first.counts["older"] == 1
    again = run_import(store, feed, run_id="r2", batch_size=2)
    assert (again.counts["inserted"], again.counts["updated"], again.counts["removed"]) == (0, 0, 0)
    # An edit made after the removal brings it back.
    revived = write_feed(tmp_path / "g.jsonl", [item("a", "republished", stamp="2026-03-02T00:00:00Z")])
    assert run_import(store, revived, run_id="r3").counts["inserted"] == 1
    assert store.get("a")["body"] == "republished"
    # Rolling back the run that removed an item lets the feed bring it back again.
    run_import(store, write_feed(tmp_path / "h.jsonl", [{"id": "x", "deleted": True}]), run_id="r4")
    store.rollback("r4", run_id="rb4", now=NOW)
    assert store.get("x") is not None


def test_items_inside_the_overlap_window_are_re_checked(store: module.ContentStore, tmp_path: Path) -> None:
    run_import(
        store,
        write_feed(
            tmp_path / "a.jsonl", [item("a", stamp="2026-02-01T00:00:00Z"), item("b", stamp="2026-02-01T00:10:00Z")]
        ),
        run_id="r1",
    )
    late = write_feed(tmp_path / "a.jsonl", [item("a", "late edit", stamp="2026-02-01T00:07:00Z")])
    report = run_import(store, late, run_id="r2", overlap=timedelta(minutes=5))
    assert report.counts["updated"] == 1


def test_a_dry_run_reports_the_same_counts_and_writes_nothing(content_db: Path | str, tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "f.jsonl", [item("a"), item("b"), item("a", "2"), "[1]", item("c")])
    with module.ContentStore(content_db, readonly=True) as ro:
        dry = run_import(ro, feed, run_id="dry", dry_run=True, max_reject_rate=0.5)
    if isinstance(content_db, Path):
        assert not content_db.exists()
    else:  # not one table created in the database
        assert tables_in(content_db) == []
    with module.ContentStore(content_db) as rw:
        real = run_import(rw, feed, run_id="real", max_reject_rate=0.5)
    assert dry.counts == real.counts
    assert (dry.counts["inserted"], dry.counts["updated"], dry.counts["rejected"]) == (
        3,
        0,
        1,
    )  # "a" twice in a batch: one insert


def test_past_the_reject_rate_the_run_stops_keeping_committed_batches(
    store: module.ContentStore, tmp_path: Path
) -> None:
    good = [item(f"g{i}") for i in range(6)]
    bad = [item(f"b{i}", updated_at="2026-01-01 00:00") for i in range(6)]
    with pytest.raises(InputError, match="rejected, over the limit") as err:
        run_import(
            store, write_feed(tmp_path / "f.jsonl", good + bad + [item("never")]), run_id="r1", max_reject_rate=0.2
        )
    assert "line 7: updated_at" in err.value.message  # the first reasons
    assert store.count("items") == 6 and store.get("never") is None
    assert len(store.rejects("r1")) == 3  # the third batch was the last one read
    assert store.run_record("r1")["status"] == "stopped"


def test_purges_are_relayed_to_the_state_outbox_once(store: module.ContentStore, tmp_path: Path) -> None:
    run_import(store, write_feed(tmp_path / "f.jsonl", [item("a"), item("b")]), run_id="r1")
    with open_state(tmp_path / "state" / "state.db") as state:
        outbox = PurgeOutbox(state)
        assert forward_purges(store, outbox, now=NOW) == 2
        assert forward_purges(store, outbox, now=NOW) == 0  # the relay is empty now
        assert {i.value for i in outbox.open_items()} == {"https://www.example.com/a", "https://www.example.com/b"}
        assert {i.source for i in outbox.open_items()} == {"import:r1"}


def test_backups_are_complete_copies_and_only_the_last_n_are_kept(tmp_path: Path) -> None:
    store = module.ContentStore(tmp_path / "content.db")
    run_import(store, write_feed(tmp_path / "f.jsonl", [item("a")]), run_id="r1")
    made = [store.backup(tmp_path / "backups", keep=2, now=NOW + timedelta(seconds=i), label=f"r{i}") for i in range(4)]
    assert sorted((tmp_path / "backups").iterdir()) == made[2:]
    with module.ContentStore(made[-1], readonly=True) as copy:
        assert copy.snapshot() == store.snapshot()


def test_check_finds_index_searches_and_flags_a_store_without_its_key_index(tmp_path: Path) -> None:
    with module.ContentStore(tmp_path / "good.db") as good:
        assert good.check().full_scans == []
        assert any(i["unique"] and i["columns"] == ["key"] for i in good.check().indexes)
    broken = sqlite3.connect(tmp_path / "broken.db")
    broken.executescript(
        SCHEMA.replace("key TEXT PRIMARY KEY NOT NULL", "key TEXT NOT NULL") + f"PRAGMA user_version={SCHEMA_VERSION};"
    )
    broken.close()
    with module.ContentStore(tmp_path / "broken.db", readonly=True) as store:
        assert store.check().full_scans == ["item by key"]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(Exception, match="newer schema"):
        module.ContentStore(tmp_path / "new.db")


def test_a_schema_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "content.db"
    with module.ContentStore(path) as store:
        store.conn.execute("DROP TABLE removed_keys")
        store.conn.execute("PRAGMA user_version=1")
    with module.ContentStore(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.removed_by_feed(["a"]) == {}
