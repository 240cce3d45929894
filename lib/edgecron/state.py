"""The state database: `STATE_DIR/state.db` (SQLite in WAL mode with a busy timeout) or STATE_DB's PostgreSQL.

Migrations are named and applied once each, in list order; each module's tables are added by
appending to `MIGRATIONS` (never edit an applied one: add a new one).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from .db import Database, is_postgres_url
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
            "offset" INTEGER NOT NULL,
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
    (
        # Who holds a job's fleet-wide lock (pglock.py; PostgreSQL only, unused on SQLite): one row per
        # session trying or holding it, believed only while the session `backend_pid` holds the job's
        # advisory lock.
        "501_job_locks",
        """
        CREATE TABLE job_locks (
            job TEXT NOT NULL,
            backend_pid INTEGER NOT NULL,
            node TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started TEXT NOT NULL,
            command TEXT NOT NULL DEFAULT '',
            slot TEXT,
            PRIMARY KEY (job, backend_pid)
        )
        """,
    ),
    (
        # The node (NODE_NAME) of every run, and the slot (fire time, UTC) of a scheduled one: a
        # scheduled run whose slot some node already completed is `done-elsewhere` (runs.py).
        "502_runs_slot_node",
        """
        ALTER TABLE runs ADD COLUMN node TEXT;
        ALTER TABLE runs ADD COLUMN slot TEXT;
        CREATE INDEX runs_job_slot ON runs(job, slot)
        """,
    ),
    (
        # Access logs are per node: a cursor is keyed by (node, path). SQLite cannot change a primary
        # key with ALTER, so the table is rebuilt; the rows already there get node '' and belong to the
        # node that saves cursors first (logcursors.save_cursors), the one that wrote them.
        "601_log_cursors_node",
        """
        CREATE TABLE log_cursors_by_node (
            node TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL,
            dev INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            "offset" INTEGER NOT NULL,
            head_len INTEGER NOT NULL DEFAULT 0,
            head_sha256 TEXT NOT NULL DEFAULT '',
            lines INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            run_id TEXT,
            anchor_len INTEGER NOT NULL DEFAULT 0,
            anchor_sha256 TEXT NOT NULL DEFAULT '',
            anchor_offset INTEGER NOT NULL DEFAULT 0,
            rotated_sig TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (node, path)
        );
        INSERT INTO log_cursors_by_node(node, path, dev, inode, "offset", head_len, head_sha256, lines, updated_at,
            run_id, anchor_len, anchor_sha256, anchor_offset, rotated_sig)
            SELECT '', path, dev, inode, "offset", head_len, head_sha256, lines, updated_at, run_id, anchor_len,
                anchor_sha256, anchor_offset, rotated_sig FROM log_cursors;
        DROP TABLE log_cursors;
        ALTER TABLE log_cursors_by_node RENAME TO log_cursors
        """,
    ),
]


class StateDB(Database):
    """The state database with migrations applied: STATE_DIR/state.db, or STATE_DB's PostgreSQL URL."""

    def __init__(self, location: Path | str) -> None:
        self.path = location
        if is_postgres_url(location):
            base = Database.open_postgres(str(location), what="state database")
        else:
            base = self._open_sqlite(Path(location))
        super().__init__(base.conn, dialect=base.dialect, what=base.what, location=base.location)
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(
                f"state database {location} is unusable",
                got=str(exc),
                expected="a writable SQLite file (or none: it is created)",
            ) from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_sqlite(path: Path) -> Database:
        try:
            base = Database.open_sqlite(path, what="state database")
            conn = base.conn
            incremental_vacuum_if_new(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # the WAL shrinks back after a big run
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
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
        return base

    def _migrate(self) -> None:
        if not self.table_exists("schema_migrations"):
            with self.transaction():  # two nodes starting at once: the second waits, then finds it made
                self.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
        done = {row[0] for row in self.execute("SELECT name FROM schema_migrations")}
        check_schema_known(done, self.location)
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.transaction():
                if self.execute("SELECT 1 FROM schema_migrations WHERE name=?", (name,)).fetchone():
                    continue  # another process applied it while we waited for the write lock
                self.execute_ddl(sql)
                self.execute(
                    "INSERT INTO schema_migrations(name, applied_at) VALUES (?, ?)",
                    (name, iso(datetime.now(UTC))),
                )
            if not self.is_postgres:
                # Each migration rewrites the schema pages: copied back at once, the WAL holds one
                # migration instead of all of them, so a new database fits where its tables fit.
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_schema_known(applied: set[str], path: Path | str) -> None:
    """A database migrated by a newer edgecron is refused: this code would misread its tables."""
    unknown = sorted(applied - {name for name, _ in MIGRATIONS})
    if unknown:
        raise StateError(
            f"state database {path} was written by a newer edgecron",
            got="migrations " + ", ".join(unknown),
            expected="only migrations this version knows (update the checkout, or restore a backup)",
        )


def read_only_connection(location: Path | str) -> Database | None:
    """The state database opened read-only (None when it does not exist yet): never creates,
    migrates or changes one. Listings and dry runs use it."""
    if is_postgres_url(location):
        db = Database.open_postgres(str(location), what="state database", readonly=True)
        if not db.table_exists("schema_migrations"):
            db.close()
            return None
        return db
    path = Path(location)
    if not path.exists():
        return None
    try:
        db = Database.open_sqlite(path, what="state database", readonly=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a garbage file fails here
    except sqlite3.DatabaseError as exc:
        raise StateError(
            f"state database {path} is unusable", got=str(exc), expected="a SQLite file written by edgecron"
        ) from None
    return db


def incremental_vacuum_if_new(conn: sqlite3.Connection) -> None:
    """auto_vacuum=INCREMENTAL on a new, empty file. Set on an existing file it would write to it (and
    change nothing until a VACUUM): retention.reclaim_space switches those once, after a prune."""
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")


def iso(moment: datetime) -> str:
    """Timestamps are stored as ISO 8601 UTC strings with seconds precision and offset."""
    return moment.isoformat(timespec="milliseconds")


def open_existing_state(location: Path | str) -> StateDB | None:
    """The state database when one exists (None otherwise: nothing is created)."""
    if is_postgres_url(location):
        probe = read_only_connection(location)
        if probe is None:
            return None
        probe.close()
    elif not Path(location).exists():
        return None
    return StateDB(location)


def open_state(location: Path | str) -> StateDB:
    """The state database at a settings' `state_db` (a file or a PostgreSQL URL)."""
    return StateDB(location)
