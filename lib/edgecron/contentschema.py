"""The content store's schema on SQLite or PostgreSQL, its version, and the statements its writes repeat.

What each table is for, and why the checkpoints live next to the rows, is in `content.py`. The schema
version lives in SQLite's `PRAGMA user_version`, and on PostgreSQL in the one-row `content_schema`
table (PostgreSQL has no per-database user version). The table names differ from state.db's, so both
stores may share one PostgreSQL database.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .db import Database, is_postgres_url
from .errors import StateError
from .state import incremental_vacuum_if_new

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE items (
    key TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    content_hash TEXT NOT NULL
);
CREATE TABLE versions (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    prev_url TEXT,
    prev_updated_at TEXT,
    prev_title TEXT,
    prev_body TEXT,
    prev_extra TEXT,
    prev_hash TEXT,
    new_hash TEXT,
    at TEXT NOT NULL
);
CREATE UNIQUE INDEX versions_run_key ON versions(run_id, key);
CREATE INDEX versions_key ON versions(key, id);
CREATE TABLE checkpoints (
    source TEXT PRIMARY KEY,
    cursor_updated_at TEXT,
    cursor_key TEXT,
    fingerprint TEXT,
    resume_page TEXT,
    resume_index INTEGER,
    resume_unit TEXT,
    high_updated_at TEXT,
    high_key TEXT,
    run_id TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE import_runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'import' CHECK (kind IN ('import', 'rollback')),
    source TEXT,
    target_run_id TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    counts TEXT NOT NULL DEFAULT '{}',
    rolled_back_by TEXT
);
CREATE TABLE rejects (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    position TEXT NOT NULL,
    item_key TEXT,
    field TEXT NOT NULL,
    expected TEXT NOT NULL,
    got TEXT NOT NULL
);
CREATE INDEX rejects_run ON rejects(run_id);
CREATE TABLE removed_keys (
    key TEXT PRIMARY KEY NOT NULL,
    at TEXT NOT NULL,
    run_id TEXT NOT NULL
);
CREATE TABLE purge_relay (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL
);
"""
CONTENT_TABLES = ("items", "versions", "checkpoints", "import_runs", "rejects", "removed_keys", "purge_relay")
VERSION_TABLE = "content_schema"  # PostgreSQL's home of the schema version
WHAT = "content store"
ITEM_COLUMNS = ("key", "url", "updated_at", "title", "body", "extra", "content_hash")
UPSERT = (
    "INSERT INTO items(key, url, updated_at, title, body, extra, content_hash) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT(key) DO UPDATE SET url=excluded.url, updated_at=excluded.updated_at, "
    "title=excluded.title, body=excluded.body, extra=excluded.extra, content_hash=excluded.content_hash "
    "WHERE excluded.content_hash <> items.content_hash"
)
# The row as it was before this run; a second change of the key in the same run keeps it.
REMOVED_KEYS_TABLE = "CREATE TABLE removed_keys (key TEXT PRIMARY KEY NOT NULL, at TEXT NOT NULL, run_id TEXT NOT NULL)"
KEEP_PREVIOUS = (
    "INSERT INTO versions(run_id, key, action, prev_url, prev_updated_at, prev_title, prev_body, "
    "prev_extra, prev_hash, new_hash, at) "
    "SELECT ?, key, ?, url, updated_at, title, body, extra, content_hash, ?, ? FROM items WHERE key = ? "
    "ON CONFLICT(run_id, key) DO UPDATE SET new_hash = excluded.new_hash"
)
KEEP_CREATED = (
    "INSERT INTO versions(run_id, key, action, new_hash, at) VALUES (?, ?, 'insert', ?, ?) "
    "ON CONFLICT(run_id, key) DO UPDATE SET new_hash = excluded.new_hash"
)

REMEMBER_REMOVED = (
    "INSERT INTO removed_keys(key, at, run_id) VALUES (?,?,?) "
    "ON CONFLICT(key) DO UPDATE SET at = excluded.at, run_id = excluded.run_id"
)
RELAY = "INSERT INTO purge_relay(url, run_id) VALUES (?, ?) ON CONFLICT(url) DO NOTHING"
CHECKPOINT_COLUMNS = (
    "source", "cursor_updated_at", "cursor_key", "fingerprint", "resume_page", "resume_index", "resume_unit",
    "high_updated_at", "high_key", "run_id", "updated_at",
)  # fmt: skip
SAVE_CHECKPOINT = (
    f"INSERT INTO checkpoints({', '.join(CHECKPOINT_COLUMNS)}) VALUES ({','.join('?' * len(CHECKPOINT_COLUMNS))}) "
    "ON CONFLICT(source) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in CHECKPOINT_COLUMNS[1:])
)
# The lookups `check-db` verifies are index searches, not table scans.
KEY_LOOKUPS = {
    "item by key": "SELECT content_hash FROM items WHERE key = ?",
    "versions of a run": "SELECT * FROM versions WHERE run_id = ?",
    "later changes of a key": "SELECT run_id FROM versions WHERE key = ? AND id > ?",
}
LOOKUP_SAMPLE = ("", 0)  # a key and an id to plan the lookups with on PostgreSQL (NULL would plan no scan at all)


def open_content_db(location: Path | str, *, readonly: bool) -> tuple[Database, bool]:
    """The store's connection, unmigrated, and whether the store exists. Read-only, one that does not
    exist yet (no file, no schema in the PostgreSQL database) is an empty in-memory stand-in: a dry
    run creates nothing."""
    if is_postgres_url(location):
        db = Database.open_postgres(str(location), what=WHAT, readonly=readonly)
        if readonly and not db.table_exists(VERSION_TABLE):
            db.close()
            return empty_store(db.location), False
        return db, True
    path = Path(location)
    if readonly and not path.exists():
        return empty_store(str(path)), False
    db = Database.open_sqlite(path, what=WHAT, readonly=readonly)
    if not readonly:
        incremental_vacuum_if_new(db.conn)
        db.conn.execute("PRAGMA journal_mode=WAL")
        db.conn.execute("PRAGMA synchronous=NORMAL")
    return db, True


def empty_store(location: str) -> Database:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.executescript(SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
    return Database(conn, dialect="sqlite", what=WHAT, location=location)


def schema_version(db: Database) -> int:
    if not db.is_postgres:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    if not db.table_exists(VERSION_TABLE):
        return 0
    return int(db.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()[0])


def migrate(db: Database, *, readonly: bool) -> None:
    """Bring the store to SCHEMA_VERSION: a newer one is refused, a read-only open never upgrades."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{db.name} has a newer schema", got=version, expected=f"schema {SCHEMA_VERSION}; upgrade edgecron"
        )
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise StateError(f"{db.name} needs a schema upgrade", got=version, expected="run once without --dry-run")
    with db.transaction():  # two nodes (or processes) at once: the second waits, then finds it done
        current = schema_version(db)
        if current == SCHEMA_VERSION:
            return
        if current == 0:
            db.execute_ddl(SCHEMA)
        elif current == 1:
            db.execute(REMOVED_KEYS_TABLE)
        if db.is_postgres:
            db.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER NOT NULL)")
            db.execute(f"DELETE FROM {VERSION_TABLE}")
            db.execute(f"INSERT INTO {VERSION_TABLE}(version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


@dataclass
class DbCheck:
    path: Path | str
    indexes: list[dict[str, Any]]
    plans: dict[str, list[str]]

    @property
    def full_scans(self) -> list[str]:
        """Lookups planned as a scan of the whole table (SQLite `SCAN`, PostgreSQL `Seq Scan`)."""
        return [
            name
            for name, details in self.plans.items()
            if any(d.startswith("SCAN") or "Seq Scan" in d for d in details)
        ]


def check_lookups(db: Database) -> DbCheck:
    """The indexes of items and versions, and how each key lookup is planned."""
    if db.is_postgres:
        return _check_postgres(db)
    indexes = []
    for table in ("items", "versions"):
        for row in db.execute(f"PRAGMA index_list({table})").fetchall():
            columns = [c["name"] for c in db.execute(f"PRAGMA index_info({row['name']!r})")]
            indexes.append({"table": table, "name": row["name"], "unique": bool(row["unique"]), "columns": columns})
    plans = {}
    for name, sql in KEY_LOOKUPS.items():
        try:
            plans[name] = [row["detail"] for row in db.execute("EXPLAIN QUERY PLAN " + sql, (None,) * sql.count("?"))]
        except sqlite3.OperationalError as exc:
            plans[name] = [f"SCAN impossible: {exc}"]
    return DbCheck(db.location, indexes, plans)


_INDEX_DEF = re.compile(r"USING \w+ \((?P<columns>[^)]*)\)")


def _check_postgres(db: Database) -> DbCheck:
    """pg_indexes and EXPLAIN. Sequential scans are switched off for the check: on a small table the
    planner prefers one, so a `Seq Scan` left in a plan means no index can answer the lookup."""
    indexes = []
    rows = db.execute(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename IN ('items', 'versions') ORDER BY tablename = 'versions', indexname"
    ).fetchall()
    for table, name, definition in rows:
        match = _INDEX_DEF.search(definition)
        columns = [c.strip().strip('"') for c in match["columns"].split(",")] if match else []
        indexes.append({"table": table, "name": name, "unique": " UNIQUE " in definition, "columns": columns})
    plans = {}
    db.execute("SET enable_seqscan = off")  # this session only; not a transaction: no wait on a running import
    try:
        for name, sql in KEY_LOOKUPS.items():
            plans[name] = [row[0].strip() for row in db.execute("EXPLAIN " + sql, LOOKUP_SAMPLE[: sql.count("?")])]
    finally:
        db.execute("RESET enable_seqscan")
    return DbCheck(db.location, indexes, plans)
