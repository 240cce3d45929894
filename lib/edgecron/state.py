"""The state database, `STATE_DIR/state.db`: SQLite in WAL mode with a busy timeout.

Migrations are named and applied once each, in list order; each module's tables are added by
appending to `MIGRATIONS` (never edit an applied one: add a new one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path

from .errors import StateError

WAL_SIZE_LIMIT = 16 * 1024 * 1024

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_runs",
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            job TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'running',
            exit_code INTEGER,
            duration_s REAL,
            counts TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            host TEXT,
            pid INTEGER,
            command TEXT
        );
        CREATE INDEX runs_job_started ON runs(job, started_at);
        """,
    ),
    (
        "002_warm_results",
        """
        CREATE TABLE warm_results (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            pass INTEGER NOT NULL DEFAULT 1,
            url TEXT NOT NULL,
            outcome TEXT NOT NULL,
            http_status INTEGER,
            cache_status TEXT,
            age INTEGER,
            cf_ray TEXT,
            elapsed_ms REAL,
            bytes INTEGER,
            attempts INTEGER NOT NULL DEFAULT 1,
            error TEXT,
            at TEXT NOT NULL
        );
        CREATE INDEX warm_results_run ON warm_results(run_id, pass);
        """,
    ),
    (
        "003_outbox",
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('url', 'tag', 'prefix', 'host', 'everything')),
            value TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'done')),
            source TEXT NOT NULL DEFAULT 'manual',
            enqueued_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            last_attempt_at TEXT,
            sent_at TEXT,
            result_id TEXT,
            run_id TEXT
        );
        CREATE UNIQUE INDEX outbox_one_open ON outbox(kind, value) WHERE status != 'done';
        CREATE INDEX outbox_status ON outbox(status, id);
        """,
    ),
    (
        "004_deploys",
        """
        CREATE TABLE deploys (
            id INTEGER PRIMARY KEY,
            ref TEXT NOT NULL,
            deployed_at TEXT NOT NULL,
            manifest TEXT NOT NULL DEFAULT '{}',
            changed INTEGER NOT NULL DEFAULT 0,
            removed INTEGER NOT NULL DEFAULT 0,
            run_id TEXT
        );
        """,
    ),
    (
        # Items Cloudflare refused as invalid wait for `outbox --retry` instead of every run.
        "101_outbox_held",
        """
        ALTER TABLE outbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0
        """,
    ),
    (
        # What each sitemap URL's <lastmod> was at the last `purge_cache.py changed`.
        "102_sitemap_lastmod",
        """
        CREATE TABLE sitemap_lastmod (
            url TEXT PRIMARY KEY,
            lastmod TEXT NOT NULL,
            seen_at TEXT NOT NULL
        );
        """,
    ),
    (
        # One read position per access log (see accesslog.py for the rotation rules).
        "301_log_cursors",
        """
        CREATE TABLE log_cursors (
            path TEXT PRIMARY KEY,
            dev INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            head_len INTEGER NOT NULL DEFAULT 0,
            head_sha256 TEXT NOT NULL DEFAULT '',
            lines INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            run_id TEXT
        );
        """,
    ),
    (
        # Access-log aggregates per 10 minutes, so a deploy can be compared with the time before it.
        "302_log_slots",
        """
        CREATE TABLE log_slots (
            slot_start INTEGER PRIMARY KEY,
            requests INTEGER NOT NULL DEFAULT 0,
            errors_5xx INTEGER NOT NULL DEFAULT 0,
            static_origin INTEGER NOT NULL DEFAULT 0,
            rt_hist TEXT NOT NULL DEFAULT '{}',
            updated_at TEXT NOT NULL
        );
        """,
    ),
    (
        # How a run was started (cron, scheduler, manual): health judges scheduled runs only.
        # Rows from before this column are NULL and count as scheduled, as they always did.
        "401_runs_trigger",
        """
        ALTER TABLE runs ADD COLUMN trigger TEXT
        """,
    ),
    (
        # A log cursor also keeps the file before the one it is on (its anchor) and what the rotated
        # files looked like, so a cursor saved on an empty log survives rotations (accesslog.Cursor).
        "303_log_cursor_anchor",
        """
        ALTER TABLE log_cursors ADD COLUMN anchor_len INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE log_cursors ADD COLUMN anchor_sha256 TEXT NOT NULL DEFAULT '';
        ALTER TABLE log_cursors ADD COLUMN anchor_offset INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE log_cursors ADD COLUMN rotated_sig TEXT NOT NULL DEFAULT ''
        """,
    ),
    (
        # Bounded state (retention.py): each URL's latest warm result outlives the pruned runs, and
        # the pruning deletes find their rows by index instead of scanning.
        "402_retention",
        """
        CREATE TABLE warm_latest (
            url TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            http_status INTEGER,
            cache_status TEXT,
            cf_ray TEXT,
            at TEXT NOT NULL
        );
        CREATE INDEX warm_latest_at ON warm_latest(at);
        CREATE INDEX runs_started ON runs(started_at);
        CREATE INDEX runs_job_status ON runs(job, status, trigger);
        CREATE INDEX outbox_sent ON outbox(sent_at) WHERE status = 'done';
        CREATE INDEX deploys_at ON deploys(deployed_at);
        """,
    ),
]


class StateDB:
    """A connection to the state database with migrations applied."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            incremental_vacuum_if_new(self.conn)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # the WAL shrinks back after a big run
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state database {path} is unusable",
                got=str(exc),
                expected="a writable SQLite file (or none: it is created)",
            ) from None
        except OSError as exc:
            raise StateError(
                f"state directory {path.parent} is unusable", got=exc.strerror, expected="a writable directory"
            ) from None

    def _migrate(self) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in self.conn.execute("SELECT name FROM schema_migrations")}
        check_schema_known(done, self.path)
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.transaction():
                if self.conn.execute("SELECT 1 FROM schema_migrations WHERE name=?", (name,)).fetchone():
                    continue  # another process applied it while we waited for the write lock
                for statement in _statements(sql):
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO schema_migrations(name, applied_at) VALUES (?, datetime('now'))", (name,)
                )
            # Each migration rewrites the schema pages: copied back at once, the WAL holds one
            # migration instead of all of them, so a new database fits where its tables fit.
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error): data and checkpoints commit together."""
        return immediate_transaction(self.conn)

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on an autocommit (isolation_level=None) connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_schema_known(applied: set[str], path: Path) -> None:
    """A database migrated by a newer edgecron is refused: this code would misread its tables."""
    unknown = sorted(applied - {name for name, _ in MIGRATIONS})
    if unknown:
        raise StateError(
            f"state database {path} was written by a newer edgecron",
            got="migrations " + ", ".join(unknown),
            expected="only migrations this version knows (update the checkout, or restore a backup)",
        )


def read_only_connection(path: Path) -> sqlite3.Connection | None:
    """A SQLite file opened read-only (None when it does not exist yet); never creates or changes one.

    The URI is built with `Path.as_uri()`, which percent-encodes `#`, `%`, `?` and spaces: pasted
    into `file:` by hand they cut the path short and SQLite opened (or created) another file.
    """
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a garbage file fails here
    except sqlite3.DatabaseError as exc:
        raise StateError(
            f"state database {path} is unusable", got=str(exc), expected="a SQLite file written by edgecron"
        ) from None
    return conn


def incremental_vacuum_if_new(conn: sqlite3.Connection) -> None:
    """auto_vacuum=INCREMENTAL on a new, empty file. Set on an existing file it would write to it (and
    change nothing until a VACUUM): retention.reclaim_space switches those once, after a prune."""
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")


def _statements(sql: str) -> list[str]:
    return [part.strip() for part in sql.split(";") if part.strip()]


def iso(moment: datetime) -> str:
    """Timestamps are stored as ISO 8601 UTC strings with seconds precision and offset."""
    return moment.isoformat(timespec="milliseconds")


def open_state(state_dir: Path) -> StateDB:
    return StateDB(state_dir / "state.db")
