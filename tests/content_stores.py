"""Reading a test's content store from outside the code under test (a content.db file through sqlite3,
a PostgreSQL CONTENT_DB through psycopg itself), and killing import runs part way."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from edgecron.contentschema import CONTENT_TABLES

ROOT = Path(__file__).resolve().parent.parent


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


def kill_import_at(targets: list[int], *, env: dict[str, str], progress: Callable[[], int], rng: random.Random) -> int:
    """Start scripts/import_stale.py once per target and SIGKILL it when `progress()` (the committed
    checkpoint) reaches the target, at a random moment inside a later batch. Returns how many kills
    landed while the run was still going."""
    killed_mid_run = 0
    for target in targets:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "import_stale.py")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and progress() < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            killed_mid_run += 1
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return killed_mid_run
