"""Moving a store from one engine to another: every table's rows copied, in one transaction.

`jobs.py migrate-state` moves STATE_DIR's SQLite files into PostgreSQL with it. The copy is
generic over two `Database`s: the target's schema is created by its own store class first
(`StateDB(url)`, `ContentStore(url)`), so the tables exist in the target's types, then each table
of the source is copied column by column. Rules:

- a target table that already holds rows is refused (named), before anything is written: a copy
  merged into a live store would mix two histories and collide on ids;
- what the target's schema creation wrote itself (its migrations table) is the target's own
  bookkeeping and is not copied;
- the whole store is one transaction: a failure leaves the target's tables empty, as they were;
- PostgreSQL identity sequences are moved past the copied ids, so the next row does not collide;
- the source is read in one read transaction (a consistent snapshot); it is never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .content import ContentStore
from .db import Database
from .errors import LockHeld, StateError
from .lock import JobLock
from .logcursors import claim_unowned
from .state import StateDB

BATCH_ROWS = 1000
OWN_BOOKKEEPING = ("schema_migrations",)  # every store's schema creation writes its own


@dataclass(frozen=True)
class StoreCopy:
    """One store moved (or, in a dry run, what would be): table → rows."""

    store: str
    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)
    not_copied: tuple[str, ...] = ()  # the target's own bookkeeping, written by its schema creation

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def tables_of(db: Database) -> list[str]:
    """The store's tables in name order (SQLite's internal ones left out)."""
    if db.is_postgres:
        sql = (
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    return [row[0] for row in db.execute(sql).fetchall()]


def row_counts(db: Database, tables: Sequence[str]) -> dict[str, int]:
    """Rows per table; a table the store does not have counts 0."""
    present = set(tables_of(db))
    return {t: int(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) if t in present else 0 for t in tables}


def refuse_rows(target: Database, tables: Sequence[str]) -> None:
    """A StateError naming the first of `tables` that already holds rows in the target."""
    for table, rows in row_counts(target, tables).items():
        if rows:
            raise StateError(
                f"{target.name} already holds rows in table {table} ({rows})",
                expected="an empty target: a copy is never merged into a store in use",
                hint="Nothing was changed. Point --to at a new, empty database (or empty this one yourself).",
            )


def plan_copy(source: Database, *, store: str, target_location: str) -> StoreCopy:
    """What a copy would move: every table's rows but the source's own bookkeeping."""
    tables = [t for t in tables_of(source) if t not in OWN_BOOKKEEPING]
    return StoreCopy(store, source.location, target_location, row_counts(source, tables))


def copy_store(
    source: Database,
    target: Database,
    *,
    store: str,
    batch: int = BATCH_ROWS,
    then: Callable[[Database], object] | None = None,
) -> StoreCopy:
    """Copy every table of `source` into `target`'s (already created, empty) tables in one transaction.

    Tables the target's schema creation already filled are its own bookkeeping and stay as they are.
    `then` runs on the target inside the same transaction, after the rows are in.
    """
    wanted = [t for t in tables_of(source) if t not in OWN_BOOKKEEPING]
    target_tables = set(tables_of(target))
    missing = [t for t in wanted if t not in target_tables]
    if missing:
        raise StateError(
            f"{target.name} has no table {missing[0]}",
            expected="a target whose schema this edgecron created (the source's tables, same names)",
        )
    filled = row_counts(target, wanted)
    own = tuple(t for t in wanted if filled[t])  # written by the target's schema creation just now
    tables = [t for t in wanted if t not in own]
    copied: dict[str, int] = {}
    with reading(source), target.transaction():
        refuse_rows(target, tables)  # again, inside the transaction: nobody wrote in between
        for table in tables:
            copied[table] = _copy_table(source, target, table, batch=batch)
        if target.is_postgres:
            reset_identities(target, tables)
        if then is not None:
            then(target)
    return StoreCopy(store, source.location, target.location, copied, own)


def _copy_table(source: Database, target: Database, table: str, *, batch: int) -> int:
    cursor = source.execute(f'SELECT * FROM "{table}"')
    columns = [d[0] for d in cursor.description]
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    total = 0
    while rows := cursor.fetchmany(batch):
        target.executemany(insert, [tuple(row) for row in rows])
        total += len(rows)
    return total


def reset_identities(target: Database, tables: Sequence[str]) -> None:
    """Each identity/serial column's sequence set to the column's highest value (1, unused, when empty)."""
    for table in tables:
        columns = target.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
            (table,),
        ).fetchall()
        for (column,) in columns:
            target.execute(
                f'SELECT setval(pg_get_serial_sequence(?, ?), coalesce(max("{column}"), 1), max("{column}") IS NOT NULL)'
                f' FROM "{table}"',
                (table, column),
            )


@contextmanager
def reading(source: Database) -> Iterator[None]:
    """One read transaction on the source: every table is read from the same snapshot."""
    if source.is_postgres:
        with source.conn.transaction():
            yield
        return
    source.execute("BEGIN")
    try:
        yield
    finally:
        source.execute("ROLLBACK")  # nothing was written: ending the read is all


def move_state(
    *, state: Path, state_url: str, content: Path | None, content_url: str, node: str, dry_run: bool
) -> tuple[list[StoreCopy], str | None]:
    """STATE_DIR's state.db (and content.db, when given) moved into PostgreSQL; with a note when
    content.db stays where it is. Both targets are checked before either is written.

    Log cursors saved before nodes were kept become `node`'s in the copy: the node migrating is the
    one that wrote them (logcursors.claim_unowned).
    """
    stores = [("state", state, state_url)]
    note = None
    if content is None:
        note = "content.db: none in STATE_DIR (or CONTENT_DB is not a file): nothing to move, CONTENT_DB unchanged."
    else:
        stores.append(("content", content, content_url))
    planned = []
    for store, path, url in stores:
        with _sqlite(store, path) as source, _postgres(store, url) as probe:
            plan = plan_copy(source, store=store, target_location=probe.location)
            refuse_rows(probe, list(plan.tables))
            planned.append(plan)
    if dry_run:
        return planned, note
    with StateDB(state) as source:  # the file brought to this version's schema first
        StateDB(state_url).close()  # the schema, created in PostgreSQL by the same migrations
        with _postgres("state", state_url, readonly=False) as target:
            moved = [copy_store(source, target, store="state", then=lambda db: claim_unowned(db, node=node))]
    if content is None:
        return moved, note
    ContentStore(content).close()  # likewise for the content store's schema
    try:
        ContentStore(content_url).close()
    except StateError as err:
        return moved, f"content.db stays in SQLite ({err.what}): CONTENT_DB unchanged."
    with _sqlite("content", content) as source, _postgres("content", content_url, readonly=False) as target:
        moved.append(copy_store(source, target, store="content"))
    return moved, None


def _sqlite(store: str, path: Path) -> closing[Database]:
    return closing(Database.open_sqlite(path, what=f"{store} store", readonly=True))


def _postgres(store: str, url: str, *, readonly: bool = True) -> closing[Database]:
    return closing(Database.open_postgres(url, what=f"target {store} store", readonly=readonly))


@contextmanager
def every_lock_held(lock_dir: Path, jobs: Sequence[str], *, now: datetime) -> Iterator[None]:
    """Every job's lock taken for the whole migration, so no run writes the source meanwhile; a
    lock already held refuses it, naming the holder."""
    with ExitStack() as held:
        for job in jobs:
            lock = JobLock(lock_dir, job)
            try:
                lock.acquire(now=now)
            except LockHeld as err:
                err.hint = (
                    "Nothing was changed. Migrate while no job runs: stop the scheduler or comment out the"
                    " crontab, wait for the run named above to end, then rerun."
                )
                raise
            held.callback(lock.release)
        yield
