"""Where each access log was read to (`Cursor`), kept in state.db's `log_cursors` table, per node.

Access logs are per node: two nodes sharing one PostgreSQL state each have their own
/var/log/nginx/access.log, so a cursor is keyed by (node, path). Rows saved before nodes were
kept (node '') are this node's when it has none of its own for that path: the install that wrote
them is the one upgrading; the first save claims them (`claim_unowned`). The rules that move a
cursor across rotations are `accesslog.py`'s; this is what is saved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import datetime

from .db import Database
from .state import StateDB, iso

UNOWNED = ""  # the node of a cursor saved before cursors were kept per node


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


def load_cursors(state: StateDB, *, node: str) -> dict[str, Cursor]:
    """This node's cursors by path; for a path it has none of, the one saved before nodes were kept."""
    rows = state.execute(
        f"SELECT node, {_CURSOR_COLUMNS} FROM log_cursors WHERE node IN (?, ?) ORDER BY node = ?",
        (node, UNOWNED, node),
    ).fetchall()
    # Unowned rows first, this node's after them: its own cursor wins where it has one.
    return {row["path"]: Cursor(*tuple(row)[1:]) for row in rows}


def save_cursors(conn: Database, cursors: Iterable[Cursor], *, node: str, now: datetime, run_id: str | None) -> None:
    """Inside the caller's transaction, after the results those lines produced."""
    claim_unowned(conn, node=node)
    columns = _CURSOR_COLUMNS.split(", ")
    updates = ", ".join(f"{name}=excluded.{name}" for name in [*columns[1:], "updated_at", "run_id"])
    marks = ", ".join("?" * (len(columns) + 3))
    sql = (
        f"INSERT INTO log_cursors(node, {_CURSOR_COLUMNS}, updated_at, run_id) VALUES ({marks}) "
        f"ON CONFLICT(node, path) DO UPDATE SET {updates}"
    )
    for c in cursors:
        conn.execute(sql, (node, *astuple(c), iso(now), run_id))


def claim_unowned(conn: Database, *, node: str) -> int:
    """Cursors saved before nodes were kept become `node`'s (where it has none for that path): the
    install that saved them is the one now saving. Inside the caller's transaction; how many."""
    claimed = conn.execute(
        "UPDATE log_cursors SET node = ? WHERE node = ? AND path NOT IN (SELECT path FROM log_cursors WHERE node = ?)",
        (node, UNOWNED, node),
    ).rowcount
    conn.execute("DELETE FROM log_cursors WHERE node = ?", (UNOWNED,))  # superseded by this node's own
    return int(claimed or 0)


@dataclass(frozen=True)
class NodeLogs:
    """When a node last saved its log positions, and how many logs it reads."""

    node: str
    logs: int
    saved_at: str


def logs_by_node(state: Database) -> list[NodeLogs]:
    rows = state.execute(
        "SELECT node, count(*), max(updated_at) FROM log_cursors WHERE node != ? GROUP BY node ORDER BY node",
        (UNOWNED,),
    ).fetchall()
    return [NodeLogs(node=row[0], logs=int(row[1]), saved_at=row[2]) for row in rows]
