"""Reading a test's state database on either backend (a `state_db` fixture value: a file or a URL).

Tests look at what a run stored through the library's read-only connection, so the same assertion
runs against SQLite and PostgreSQL; nothing is created when there is no database yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecron.config import Settings, load_settings
from edgecron.state import read_only_connection


def state_rows(location: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows as plain tuples (comparable with literals on both engines); [] when no database exists."""
    return [tuple(row) for row in _fetch(location, sql, params)]


def state_records(location: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows as dicts keyed by column name; [] when no database exists."""
    return [dict(row) for row in _fetch(location, sql, params)]


def state_exists(location: Path | str) -> bool:
    """Whether anything created the state database (a file, or the migrations table in PostgreSQL)."""
    conn = read_only_connection(location)
    if conn is None:
        return False
    conn.close()
    return True


def state_tables(location: Path | str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, by table name: all a store holds, on either engine."""
    conn = read_only_connection(location)
    if conn is None:
        return {}
    try:
        if conn.is_postgres:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        else:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        names = sorted(row[0] for row in conn.execute(sql))
        return {
            name: sorted((tuple(row) for row in conn.execute(f'SELECT * FROM "{name}"')), key=repr) for name in names
        }
    finally:
        conn.close()


def settings_for(root: Path, state_db: Path | str, **keys: str) -> Settings:
    """Settings with STATE_DIR under `root` and, on PostgreSQL, STATE_DB: the test's backend."""
    environ = {"STATE_DIR": str(root / "state"), **keys}
    if isinstance(state_db, str):
        environ["STATE_DB"] = state_db
    return load_settings(environ=environ, env_file=None)


def _fetch(location: Path | str, sql: str, params: tuple[Any, ...]) -> list[Any]:
    conn = read_only_connection(location)
    if conn is None:
        return []
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()
