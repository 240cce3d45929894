"""Where each access log was read to (`Cursor`), kept in state.db's `log_cursors` table.

The rules that move a cursor across rotations are `accesslog.py`'s; this is what is saved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import datetime

from .state import StateDB, iso


@dataclass(frozen=True)
class Cursor:
    """Where a log was read to, and what is needed to find that place again after rotations.

    (dev, inode, head) name the file being read and `offset` the end of its last complete line.
    The anchor is the newest non-empty file older than it (by head, read or there before us, up to
    `anchor_offset`): when the file was still empty there is no head to find it by, and what came
    after the anchor is what is new. `rotated_sig` is the rotated files as stat saw them: while it
    is unchanged nothing was rotated, and the (dev, inode) shortcut is safe.
    """

    path: str
    dev: int
    inode: int
    offset: int
    head_len: int = 0
    head_sha256: str = ""
    lines: int = 0
    anchor_len: int = 0
    anchor_sha256: str = ""
    anchor_offset: int = 0
    rotated_sig: str = ""  # "" for a cursor saved before these were kept: nothing is known


_CURSOR_COLUMNS = (
    'path, dev, inode, "offset", head_len, head_sha256, lines, anchor_len, anchor_sha256, anchor_offset, rotated_sig'
)


def load_cursors(state: StateDB) -> dict[str, Cursor]:
    rows = state.execute(f"SELECT {_CURSOR_COLUMNS} FROM log_cursors").fetchall()
    return {row["path"]: Cursor(*tuple(row)) for row in rows}


def save_cursors(conn: object, cursors: Iterable[Cursor], *, now: datetime, run_id: str | None) -> None:
    """Inside the caller's transaction, after the results those lines produced."""
    columns = _CURSOR_COLUMNS.split(", ")
    updates = ", ".join(f"{name}=excluded.{name}" for name in [*columns[1:], "updated_at", "run_id"])
    marks = ", ".join("?" * (len(columns) + 2))
    sql = (
        f"INSERT INTO log_cursors({_CURSOR_COLUMNS}, updated_at, run_id) VALUES ({marks}) "
        f"ON CONFLICT(path) DO UPDATE SET {updates}"
    )
    for c in cursors:
        conn.execute(sql, (*astuple(c), iso(now), run_id))  # type: ignore[attr-defined]
