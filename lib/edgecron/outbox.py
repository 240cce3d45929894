"""The purge outbox: every purge, whoever asks for it, is queued here first and sent from here.

A pending item is never queued twice (a partial unique index on open items), so enqueueing is
idempotent. Sending claims a batch, then marks it done with the API's result id, or leaves it
pending with its attempts and last error for the next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .db import Database, DbRow
from .redact import redact
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
    held: bool = False  # Cloudflare refused it as invalid: sent again only by `outbox --retry`
    last_attempt_at: str | None = None


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
                    "INSERT INTO outbox(kind, value, source, enqueued_at) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
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
            "SELECT status, count(*), sum(CASE WHEN attempts > 0 THEN 1 ELSE 0 END) FROM outbox WHERE status != 'done' GROUP BY status"
        ).fetchall()
        out = {"pending": 0, "failing": 0}
        for status, count, failing in rows:
            out["pending"] += int(count)
            out["failing"] += int(failing or 0)  # PostgreSQL's sum() may be a Decimal
            out[status] = int(count)
        return out

    @staticmethod
    def open_rows(conn: Database | None) -> list[dict[str, Any]]:
        """Every column of the items not yet done, oldest first, from a read-only connection (None:
        no database yet). Listing and dry runs use it: they must not create or migrate the database,
        so a database from before a migration can lack a column (`held`)."""
        if conn is None:
            return []
        rows = conn.execute("SELECT * FROM outbox WHERE status != 'done' ORDER BY id").fetchall()
        return [dict(zip(row.keys(), row, strict=True)) for row in rows]

    @staticmethod
    def enqueue_in(conn: Database, kind: str, values: Iterable[str], *, source: str, now: datetime) -> int:
        """`enqueue` inside the caller's transaction, so a record and its purges commit together."""
        if kind not in KINDS:
            raise ValueError(f"unknown purge kind {kind!r}")
        added = 0
        for value in values:
            added += conn.execute(
                "INSERT INTO outbox(kind, value, source, enqueued_at) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                (kind, value, source, iso(now)),
            ).rowcount
        return added

    # --- sending (claim → done / failed); only the purge job, holding its lock, calls these ---

    def recover_claimed(self) -> int:
        """Put items claimed by a run that died (kill -9) back to pending; returns how many.

        Safe only while holding the purge lock: no other sender can own a claim then.
        """
        with self.state.transaction() as conn:
            return conn.execute("UPDATE outbox SET status='pending' WHERE status='sending'").rowcount

    def sendable_kinds(self, *, include_held: bool = False) -> list[str]:
        held = "" if include_held else " AND held = 0"
        rows = self.state.execute(f"SELECT DISTINCT kind FROM outbox WHERE status = 'pending'{held}").fetchall()
        present = {row[0] for row in rows}
        return [kind for kind in KINDS if kind in present]

    def claim(
        self, kind: str, limit: int, *, run_id: str, now: datetime, include_held: bool = False
    ) -> list[OutboxItem]:
        """Mark up to `limit` pending items of `kind` as 'sending' (oldest first) and return them."""
        held = "" if include_held else " AND held = 0"
        with self.state.transaction() as conn:
            rows = conn.execute(
                f"SELECT id FROM outbox WHERE status = 'pending' AND kind = ?{held} ORDER BY id LIMIT ?",
                (kind, limit),
            ).fetchall()
            ids = [row[0] for row in rows]
            if not ids:
                return []  # PostgreSQL refuses the `IN ()` below
            conn.executemany(
                "UPDATE outbox SET status='sending', attempts=attempts+1, last_attempt_at=?, run_id=? WHERE id=?",
                [(iso(now), run_id, item_id) for item_id in ids],
            )
            claimed = [
                _item(row)
                for row in conn.execute(
                    f"SELECT * FROM outbox WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id",
                    ids,
                )
            ]
        return claimed

    def mark_done(self, ids: Iterable[int], *, result_id: str | None, now: datetime) -> None:
        with self.state.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET status='done', sent_at=?, result_id=?, last_error=NULL, held=0 "
                "WHERE id=? AND status='sending'",
                [(iso(now), result_id, item_id) for item_id in ids],
            )

    def mark_failed(self, ids: Iterable[int], *, error: str, now: datetime, hold: bool = False) -> None:
        """Back to pending with the error (redacted: it quotes the API); `hold` parks refused items."""
        with self.state.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET status='pending', last_error=?, last_attempt_at=?, held=? "
                "WHERE id=? AND status='sending'",
                [(redact(error), iso(now), int(hold), item_id) for item_id in ids],
            )


def _item(row: DbRow) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        kind=row["kind"],
        value=row["value"],
        status=row["status"],
        source=row["source"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        enqueued_at=row["enqueued_at"],
        held=bool(row["held"]),
        last_attempt_at=row["last_attempt_at"],
    )
