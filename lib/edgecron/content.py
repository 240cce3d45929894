"""The content store: imported items, with versions to undo, in their own SQLite file or in
CONTENT_DB's PostgreSQL database (which may be the state database's: the table names differ).

- `items`: one row per natural key (the primary key is the unique index on `key`), with a content
  hash; an upsert writes only when the hash differs.
- `versions`: for every key a run changed, the row as it was before the run (NULLs when the run
  created it) and the hash the run left, so `rollback()` can restore the exact previous rows and
  can tell when a later run changed the same key again.
- `checkpoints`: the import cursor and the resume position. They live here, not in state.db,
  because rows and checkpoint must commit in one transaction and SQLite transactions do not span
  two files (nor do PostgreSQL's two databases); a kill -9 then loses at most the uncommitted batch,
  which a rerun re-reads.
- `removed_keys`: keys a feed's tombstone removed, and when; an older copy of such a key (later in
  the same feed, or in a later run) does not bring it back, only an edit made after the removal
  does. Rolling back the removing run forgets it.
- `purge_relay`: URLs to purge, written in the same transaction as the rows, then forwarded to the
  state.db outbox and deleted (a transactional outbox: a crash in between re-forwards them, and
  enqueueing an URL that is already open is a no-op).
- `import_runs` / `rejects`: what each run changed or refused, committed with its batches.

With a retention policy, a run's end drops the versions, rejects and record of runs older than the
rollback window (retention.py), in the same transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from .contentschema import (
    KEEP_CREATED,
    KEEP_PREVIOUS,
    RELAY,
    REMEMBER_REMOVED,
    SAVE_CHECKPOINT,
    UPSERT,
    DbCheck,
    check_lookups,
    migrate,
    open_content_db,
)
from .db import Database, is_postgres_url, safe_dsn
from .errors import InputError, StateError
from .feed import FeedItem, Position, Reject
from .redact import redact
from .retention import RetentionPolicy, prune_content, reclaim_space
from .state import iso

ROLLBACK_WINDOW_KEY = "RETAIN_VERSIONS_DAYS"  # older runs' versions are pruned (retention.py)
PG_BACKUP_HINT = (
    "none (PostgreSQL: this rollback is one transaction and can itself be rolled back; pg_dump makes a copy)"
)


@dataclass(slots=True)
class StoredItem:
    key: str
    url: str
    content_hash: str
    updated_at: str


class Change(NamedTuple):  # immutable like a frozen dataclass, and cheaper to create
    """One key's change in a batch: `item` is the new content (None when deleted)."""

    action: str  # insert / update / delete
    key: str
    item: FeedItem | None
    new_hash: str | None
    urls: tuple[str, ...]  # the old and new URL, both purged


@dataclass
class Checkpoint:
    source: str
    cursor: tuple[datetime, str] | None = None  # (updated_at, key) of the last completed run
    fingerprint: str | None = None
    resume: Position | None = None  # last record committed by an unfinished run
    high: tuple[datetime, str] | None = None  # highest (updated_at, key) the unfinished run saw


@dataclass
class RollbackResult:
    run_id: str
    target_run_id: str
    restored: int = 0
    removed: int = 0
    urls: list[str] = field(default_factory=list)


class ContentStore(Database):
    """The content store on SQLite (a file) or PostgreSQL (a URL). `readonly=True` never creates or
    changes a store (one that does not exist reads as empty: `exists` is False); `retention` (None:
    keep everything) bounds the history kept for rollback."""

    def __init__(
        self, location: Path | str, *, readonly: bool = False, retention: RetentionPolicy | None = None
    ) -> None:
        self.readonly = readonly
        self.retention = retention
        self.path: Path | str = safe_dsn(str(location)) if is_postgres_url(location) else Path(location)
        try:
            base, self.exists = open_content_db(location, readonly=readonly)
            super().__init__(base.conn, dialect=base.dialect, what=base.what, location=base.location)
            try:
                migrate(self, readonly=readonly)
            except BaseException:
                self.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"content store {self.path} is unusable", got=str(exc), expected="a writable SQLite file (or none)"
            ) from None
        except OSError as exc:
            raise StateError(
                f"content store {self.path} is unusable", got=exc.strerror, expected="a writable directory"
            ) from None

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads ---------------------------------------------------------------------------------

    def lookup(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        """The stored rows of these keys (one query per 900 keys, not one per key)."""
        found: dict[str, StoredItem] = {}
        sql = "SELECT key, url, content_hash, updated_at FROM items WHERE key IN ({})"
        for key, url, content_hash, updated_at in self._rows_by_key(sql, keys):
            found[key] = StoredItem(key, url, content_hash, updated_at)
        return found

    def present(self, keys: Sequence[str]) -> set[str]:
        """Which of these keys are stored: answered by the key index alone, without reading rows."""
        return {key for (key,) in self._rows_by_key("SELECT key FROM items WHERE key IN ({})", keys)}

    def removed_by_feed(self, keys: Sequence[str]) -> dict[str, str]:
        """When a feed's tombstone removed each of these keys (key → time), for those it did."""
        return dict(self._rows_by_key("SELECT key, at FROM removed_keys WHERE key IN ({})", keys))

    def _rows_by_key(self, sql: str, keys: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        if self.is_postgres:  # one array parameter, whatever the count
            if keys:
                yield from self.execute(sql.replace("IN ({})", "= ANY(?)"), (list(keys),))
            return
        cursor = self.conn.cursor()
        cursor.row_factory = None  # plain tuples: this runs once per item
        for start in range(0, len(keys), 900):  # under SQLite's bound-parameter limit
            chunk = keys[start : start + 900]
            yield from cursor.execute(sql.format(",".join("?" * len(chunk))), chunk)

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.execute("SELECT * FROM items WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Every item row, ordered by key: what tests and tools compare."""
        # Sorted here: PostgreSQL's ORDER BY follows the database's collation, SQLite's the bytes.
        return sorted(tuple(row) for row in self.execute("SELECT * FROM items"))

    def checkpoint(self, source: str) -> Checkpoint:
        row = self.execute("SELECT * FROM checkpoints WHERE source = ?", (source,)).fetchone()
        if row is None:
            return Checkpoint(source)
        resume = None
        if row["resume_index"] is not None:
            resume = Position(row["resume_index"], page=row["resume_page"], unit=row["resume_unit"] or "line")
        return Checkpoint(
            source,
            cursor=_pair(row["cursor_updated_at"], row["cursor_key"]),
            fingerprint=row["fingerprint"],
            resume=resume,
            high=_pair(row["high_updated_at"], row["high_key"]),
        )

    def runs(self, *, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.execute("SELECT * FROM import_runs ORDER BY started_at DESC LIMIT ?", (limit,))
        return [dict(row, counts=json.loads(row["counts"])) for row in rows]

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        row = self.execute("SELECT * FROM import_runs WHERE run_id = ?", (run_id,)).fetchone()
        return dict(row, counts=json.loads(row["counts"])) if row else None

    def resolve_run_id(self, text: str) -> str:
        """A full run id from itself or a unique prefix of at least 6 characters."""
        rows = (
            self.execute(
                "SELECT DISTINCT run_id FROM versions WHERE lower(substr(run_id, 1, ?)) = ? LIMIT 2",
                (len(text), text.lower()),
            ).fetchall()
            if len(text) >= 6
            else []
        )
        if len(rows) != 1:
            raise InputError(
                f"run {text} is not a run that changed the content store"
                if not rows
                else f"run id {text} is ambiguous",
                got=text,
                expected="a run id (or a unique prefix of 6+ characters) from `import_stale.py runs`"
                + (f" inside the rollback window ({ROLLBACK_WINDOW_KEY})" if not rows else ""),
                hint="Nothing was changed.",
            )
        return str(rows[0][0])

    def rejects(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.execute("SELECT * FROM rejects WHERE run_id = ? ORDER BY id", (run_id,))
        return [dict(row) for row in rows]

    def count(self, table: str) -> int:
        if table not in ("items", "versions", "rejects", "purge_relay", "import_runs"):
            raise ValueError(table)
        return int(self.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    # --- writes --------------------------------------------------------------------------------

    def commit_batch(
        self,
        *,
        run_id: str,
        started_at: datetime,
        changes: Sequence[Change],
        rejects: Sequence[Reject],
        checkpoint: Checkpoint,
        counts: dict[str, Any],
        now: datetime,
        removed: Sequence[str] = (),
        revived: Sequence[str] = (),
    ) -> None:
        """Rows, their previous versions, purges, rejects, counts and checkpoint: one transaction.

        `removed`: keys a tombstone removed (or found already absent), remembered so that an older
        copy later in a feed cannot bring them back; `revived`: removed keys a newer copy restored."""
        stamp = iso(now)
        first: dict[str, Change] = {}
        last: dict[str, Change] = {}
        for change in changes:
            first.setdefault(change.key, change)
            last[change.key] = change
        with self.transaction() as conn:
            conn.executemany(
                KEEP_PREVIOUS,
                [(run_id, c.action, last[k].new_hash, stamp, k) for k, c in first.items() if c.action != "insert"],
            )
            conn.executemany(
                KEEP_CREATED, [(run_id, k, last[k].new_hash, stamp) for k, c in first.items() if c.action == "insert"]
            )
            conn.executemany(UPSERT, [_item_row(c.item, c.new_hash) for c in last.values() if c.item is not None])
            conn.executemany("DELETE FROM items WHERE key = ?", [(k,) for k, c in last.items() if c.item is None])
            conn.executemany(
                REMEMBER_REMOVED,
                [(k, stamp, run_id) for k in (*(k for k, c in last.items() if c.item is None), *removed)],
            )
            conn.executemany("DELETE FROM removed_keys WHERE key = ?", [(k,) for k in revived])
            self._relay(conn, (url for c in changes for url in c.urls), run_id)
            conn.executemany(
                "INSERT INTO rejects(run_id, position, item_key, field, expected, got) VALUES (?,?,?,?,?,?)",
                [(run_id, r.position.label(), r.key, r.field, r.expected, redact(r.got)) for r in rejects],
            )
            self._save_run(
                conn, run_id=run_id, kind="import", source=checkpoint.source, started_at=started_at, counts=counts
            )
            self._save_checkpoint(conn, checkpoint, run_id=run_id, now=now)

    def finish_run(
        self,
        *,
        run_id: str,
        started_at: datetime,
        status: str,
        counts: dict[str, Any],
        checkpoint: Checkpoint,
        now: datetime,
    ) -> bool:
        """Record the run's end and its checkpoint; returns False when nothing needed writing, so
        a run that changed nothing leaves the file untouched."""
        known = self.run_record(run_id) is not None
        stored = self.checkpoint(checkpoint.source)
        same = (
            stored.cursor == checkpoint.cursor
            and stored.resume == checkpoint.resume
            and (
                checkpoint.resume is None
                or (stored.fingerprint, stored.high) == (checkpoint.fingerprint, checkpoint.high)
            )
        )
        if not known and same:
            return False
        with self.transaction() as conn:
            self._save_run(
                conn, run_id=run_id, kind="import", source=checkpoint.source, started_at=started_at, counts=counts
            )
            conn.execute(
                "UPDATE import_runs SET finished_at = ?, status = ? WHERE run_id = ?", (iso(now), status, run_id)
            )
            if not same:
                self._save_checkpoint(conn, checkpoint, run_id=run_id, now=now)
            if self.retention is not None:
                prune_content(conn, self.retention, now=now)
        if self.retention is not None and not self.is_postgres:  # PostgreSQL: autovacuum's job
            reclaim_space(self.conn)
        return True

    def rollback(
        self,
        target_run_id: str,
        *,
        run_id: str,
        now: datetime,
        force: bool = False,
        before_write: Callable[[], object] = lambda: None,
    ) -> RollbackResult:
        """Restore every row `target_run_id` changed to its previous version; the rollback is
        itself recorded as versions, so it can be rolled back in turn."""
        record = self.run_record(target_run_id)
        if record is not None and record["rolled_back_by"]:
            raise InputError(
                f"run {target_run_id} was already rolled back by run {record['rolled_back_by']}",
                expected="a run that has not been rolled back",
                hint="Nothing was changed.",
            )
        versions = self.execute("SELECT * FROM versions WHERE run_id = ? ORDER BY id", (target_run_id,)).fetchall()
        if not versions:
            raise InputError(
                f"run {target_run_id} changed nothing in the content store",
                got=target_run_id,
                expected="a run id from `import_stale.py runs` with inserted, updated or removed items"
                + ("" if record is not None else f", inside the rollback window ({ROLLBACK_WINDOW_KEY})"),
                hint="Nothing was changed.",
            )
        current = self.lookup([v["key"] for v in versions])
        conflicts = [
            v for v in versions if (current[v["key"]].content_hash if v["key"] in current else None) != v["new_hash"]
        ]
        if conflicts and not force:
            later = self.execute(
                "SELECT run_id FROM versions WHERE key = ? AND id > ? ORDER BY id LIMIT 1",
                (conflicts[0]["key"], conflicts[0]["id"]),
            ).fetchone()
            raise InputError(
                f"{len(conflicts)} item(s) changed again after run {target_run_id}"
                f" (first: {conflicts[0]['key']!r}" + (f", by run {later[0]})" if later else ")"),
                expected="roll back the later runs first, newest first, or pass --force to overwrite them",
                hint="Nothing was changed.",
            )
        before_write()
        result = RollbackResult(run_id=run_id, target_run_id=target_run_id)
        stamp = iso(now)
        with self.transaction() as conn:
            # What the rolled-back run removed may come back with the next import.
            conn.execute("DELETE FROM removed_keys WHERE run_id = ?", (target_run_id,))
            for v in versions:
                key, before = v["key"], current.get(v["key"])
                if v["prev_hash"] is None:
                    if before is None:
                        continue
                    conn.execute(KEEP_PREVIOUS, (run_id, "delete", None, stamp, key))
                    conn.execute("DELETE FROM items WHERE key = ?", (key,))
                    result.removed += 1
                else:
                    if before is None:
                        conn.execute(KEEP_CREATED, (run_id, key, v["prev_hash"], stamp))
                    else:
                        conn.execute(KEEP_PREVIOUS, (run_id, "update", v["prev_hash"], stamp, key))
                    conn.execute(
                        "INSERT INTO items(key, url, updated_at, title, body, extra, content_hash) VALUES (?,?,?,?,?,?,?) "
                        "ON CONFLICT(key) DO UPDATE SET url=excluded.url, updated_at=excluded.updated_at, "
                        "title=excluded.title, body=excluded.body, extra=excluded.extra, content_hash=excluded.content_hash",
                        (
                            key,
                            v["prev_url"],
                            v["prev_updated_at"],
                            v["prev_title"],
                            v["prev_body"],
                            v["prev_extra"],
                            v["prev_hash"],
                        ),
                    )
                    result.restored += 1
                urls = [u for u in ((before.url if before else None), v["prev_url"]) if u]
                result.urls.extend(u for u in urls if u not in result.urls)
            self._relay(conn, result.urls, run_id)
            counts = {"restored": result.restored, "removed": result.removed, "conflicts_overwritten": len(conflicts)}
            self._save_run(
                conn, run_id=run_id, kind="rollback", source=None, started_at=now, counts=counts, target=target_run_id
            )
            conn.execute("UPDATE import_runs SET finished_at = ?, status = 'ok' WHERE run_id = ?", (stamp, run_id))
            conn.execute(
                "INSERT INTO import_runs(run_id, started_at, status, rolled_back_by) VALUES (?, ?, 'unknown', ?) "
                "ON CONFLICT(run_id) DO UPDATE SET rolled_back_by = excluded.rolled_back_by",
                (target_run_id, stamp, run_id),
            )
        return result

    def pending_purges(self) -> list[tuple[int, str, str]]:
        sql = "SELECT id, url, run_id FROM purge_relay ORDER BY id"
        if self.is_postgres:
            return [tuple(row) for row in self.execute(sql)]
        cursor = self.conn.cursor()
        cursor.row_factory = None  # plain tuples: one per changed URL
        return cursor.execute(sql).fetchall()

    def clear_purges(self, up_to_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM purge_relay WHERE id <= ?", (up_to_id,))

    def backup(self, dest_dir: Path, *, keep: int, now: datetime, label: str) -> Path | None:
        """An online copy (SQLite backup API: consistent while others write), keeping the last `keep`.

        None on PostgreSQL: its server's backups (pg_dump, base backups) cover it, and a rollback
        is one transaction that is itself recorded as versions, so it can be rolled back in turn."""
        if self.is_postgres:
            return None
        dest_dir.mkdir(parents=True, exist_ok=True)
        final = dest_dir / f"content-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{label}.db"
        partial = final.with_name(final.name + ".partial")
        target = sqlite3.connect(partial)
        try:
            self.conn.backup(target)
        finally:
            target.close()
        os.replace(partial, final)
        # The copy just taken is always kept: with a clock that went back, it would sort as the oldest.
        others = sorted(p for p in dest_dir.glob("content-*.db") if p != final)
        for old in others[: max(0, len(others) - (keep - 1))]:
            old.unlink(missing_ok=True)
        for leftover in dest_dir.glob("content-*.partial"):  # from a run killed mid-backup
            if leftover != partial:
                leftover.unlink(missing_ok=True)
        return final

    def check(self) -> DbCheck:
        """The indexes of items and versions, and whether each key lookup is an index search."""
        return check_lookups(self)

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _relay(conn: Database, urls: Iterable[str], run_id: str) -> None:
        conn.executemany(RELAY, ((u, run_id) for u in urls if u))

    @staticmethod
    def _save_run(
        conn: Database,
        *,
        run_id: str,
        kind: str,
        source: str | None,
        started_at: datetime,
        counts: dict[str, Any],
        target: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO import_runs(run_id, kind, source, target_run_id, started_at, counts) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(run_id) DO UPDATE SET counts = excluded.counts",
            (run_id, kind, source, target, iso(started_at), json.dumps(counts, sort_keys=True)),
        )

    @staticmethod
    def _save_checkpoint(conn: Database, cp: Checkpoint, *, run_id: str, now: datetime) -> None:
        resume = cp.resume
        conn.execute(
            SAVE_CHECKPOINT,
            (
                cp.source,
                *(_unpair(cp.cursor)),
                cp.fingerprint if resume else None,
                resume.page if resume else None,
                resume.index if resume else None,
                resume.unit if resume else None,
                *(_unpair(cp.high) if resume else (None, None)),
                run_id,
                iso(now),
            ),
        )


def _item_row(item: FeedItem, content_hash: str | None) -> tuple[str, ...]:
    return (item.key, item.url, item.updated_text, item.title, item.body, item.extra, content_hash or "")


def _pair(stamp: str | None, key: str | None) -> tuple[datetime, str] | None:
    return (datetime.fromisoformat(stamp), key or "") if stamp else None


def _unpair(pair: tuple[datetime, str] | None) -> tuple[str | None, str | None]:
    return (pair[0].isoformat(), pair[1]) if pair else (None, None)
