"""The content store's SQLite schema and the statements its writes repeat.

What each table is for, and why the checkpoints live next to the rows, is in `content.py`.
"""

from __future__ import annotations

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
