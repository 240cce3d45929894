"""Reading a test's content store from outside the code under test: a content.db file through sqlite3,
a PostgreSQL CONTENT_DB through psycopg itself."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from edgecron.contentschema import CONTENT_TABLES


def item_rows(db: Path | str, columns: str = "*") -> list[tuple[Any, ...]]:
    """Every item row (these columns), sorted by key as Python sorts text on both engines."""
    if isinstance(db, Path):
        with sqlite3.connect(db) as conn:
            rows = conn.execute(f"SELECT {columns} FROM items").fetchall()
    else:
        with psycopg.connect(db) as conn:
            rows = [tuple(row) for row in conn.execute(f"SELECT {columns} FROM items")]
    return sorted(rows)


def written(db: Path | str) -> object:
    """What any write changes: content.db's bytes and its WAL's size; on PostgreSQL every row of every
    content table with its xmin (the transaction that last wrote it: a row rewritten unchanged shows)."""
    if isinstance(db, Path):
        wal = Path(str(db) + "-wal")
        return hashlib.sha256(db.read_bytes()).hexdigest(), wal.stat().st_size if wal.exists() else 0
    with psycopg.connect(db) as conn:
        return {
            table: sorted((tuple(row) for row in conn.execute(f"SELECT xmin::text, * FROM {table}")), key=repr)
            for table in CONTENT_TABLES
        }


def tables_in(url: str) -> list[str]:
    """The tables of a PostgreSQL database's public schema."""
    with psycopg.connect(url) as conn:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        return [row[0] for row in conn.execute(sql)]
