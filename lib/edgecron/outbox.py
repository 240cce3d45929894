"""The purge outbox: every purge, whoever asks for it, is queued here first and sent from here.

A pending item is never queued twice (a partial unique index on open items), so enqueueing is
idempotent. Sending claims a batch, then marks it done with the API's result id, or leaves it
pending with its attempts and last error for the next run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .state import StateDB, iso

KINDS = ("url", "tag", "prefix", "host", "everything")


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str
    value: str
    status: str
    source: str
    attempts: int
    last_error: str | None
    enqueued_at: str


class PurgeOutbox:
    def __init__(self, state: StateDB) -> None:
        self.state = state

    def enqueue(self, kind: str, values: Iterable[str], *, source: str, now: datetime) -> int:
        """Queue values not already open; return how many were newly queued."""
        if kind not in KINDS:
            raise ValueError(f"unknown purge kind {kind!r}")
        stamp = iso(now)
        added = 0
        with self.state.transaction() as conn:
            for value in values:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO outbox(kind, value, source, enqueued_at) VALUES (?,?,?,?)",
                    (kind, value, source, stamp),
                )
                added += cur.rowcount
        return added

    def open_items(self, *, kind: str | None = None, limit: int | None = None) -> list[OutboxItem]:
        """Items not yet done (pending, or claimed by a run that died), oldest first."""
        sql = "SELECT * FROM outbox WHERE status != 'done'"
        params: list[object] = []
        if kind:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY id"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [_item(row) for row in self.state.execute(sql, tuple(params))]

    def counts(self) -> dict[str, int]:
        rows = self.state.execute(
            "SELECT status, count(*), sum(attempts > 0) FROM outbox WHERE status != 'done' GROUP BY status"
        ).fetchall()
        out = {"pending": 0, "failing": 0}
        for status, count, failing in rows:
            out["pending"] += count
            out["failing"] += failing or 0
            out[status] = count
        return out


def _item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        kind=row["kind"],
        value=row["value"],
        status=row["status"],
        source=row["source"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        enqueued_at=row["enqueued_at"],
    )
