"""The storage layer on both engines: placeholders, rows, transactions, migrations, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunScript
from edgecron.db import postgres_sql, safe_dsn
from edgecron.errors import StateError
from edgecron.state import MIGRATIONS, StateDB, open_state, read_only_connection

pytestmark = pytest.mark.both_backends


def test_a_new_state_database_has_every_migration_and_a_second_open_changes_nothing(state_db: Path | str) -> None:
    with open_state(state_db) as state:
        applied = [row["name"] for row in state.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert sorted(applied) == sorted(name for name, _ in MIGRATIONS)
    with open_state(state_db) as state:
        assert state.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


def test_rows_read_by_name_and_position_and_dict(state_db: Path | str) -> None:
    with open_state(state_db) as state:
        with state.transaction():
            state.execute(
                "INSERT INTO runs(run_id, job, started_at, duration_s, pid) VALUES (?,?,?,?,?)",
                ("r1", "warm", "2026-12-01T00:00:00.000+00:00", 1.25, 2**40),
            )
        row = state.execute("SELECT run_id, job, duration_s, pid FROM runs").fetchone()
    assert (row["run_id"], row[1], row["duration_s"], row["pid"]) == ("r1", "warm", 1.25, 2**40)
    assert dict(row) == {"run_id": "r1", "job": "warm", "duration_s": 1.25, "pid": 2**40}
    assert row.keys() == ["run_id", "job", "duration_s", "pid"]


def test_a_failed_transaction_leaves_nothing(state_db: Path | str) -> None:
    with open_state(state_db) as state:
        with pytest.raises(RuntimeError), state.transaction():
            state.execute("INSERT INTO deploys(ref, deployed_at) VALUES (?, ?)", ("a", "t"))
            raise RuntimeError("boom")
        assert state.execute("SELECT count(*) FROM deploys").fetchone()[0] == 0


def test_upsert_ignore_and_rowcount_agree(state_db: Path | str) -> None:
    with open_state(state_db) as state, state.transaction():
        sql = "INSERT INTO outbox(kind, value, enqueued_at) VALUES (?,?,?) ON CONFLICT DO NOTHING"
        assert state.execute(sql, ("url", "https://a/%20?x", "t")).rowcount == 1
        assert state.execute(sql, ("url", "https://a/%20?x", "t")).rowcount == 0
        assert state.executemany(sql, [("url", "b", "t"), ("url", "c", "t")]).rowcount == 2
        like = state.execute("SELECT value FROM outbox WHERE value LIKE '%?x'").fetchall()
    assert [row[0] for row in like] == ["https://a/%20?x"]


def test_a_database_from_a_newer_edgecron_is_refused(state_db: Path | str) -> None:
    with open_state(state_db) as state:
        state.execute("INSERT INTO schema_migrations(name, applied_at) VALUES ('999_future', 'now')")
    with pytest.raises(StateError, match="written by a newer edgecron"):
        StateDB(state_db)


def test_read_only_is_none_before_anything_exists_and_creates_nothing(state_db: Path | str) -> None:
    assert read_only_connection(state_db) is None
    assert read_only_connection(state_db) is None
    with open_state(state_db):
        pass
    conn = read_only_connection(state_db)
    assert conn is not None
    with pytest.raises(Exception):  # noqa: B017 - each engine refuses a write in its own words
        conn.execute("INSERT INTO deploys(ref, deployed_at) VALUES ('a', 'b')")
    conn.close()


def test_placeholders_outside_quotes_only() -> None:
    assert postgres_sql("SELECT ? WHERE a LIKE '%?' AND b = \"c?\" AND d % 2 = ?") == (
        "SELECT %s WHERE a LIKE '%%?' AND b = \"c?\" AND d %% 2 = %s"
    )


def test_a_dsn_password_never_shows() -> None:
    assert safe_dsn("postgresql://app:s3cr%40t@db:5432/edge") == "postgresql://app:***@db:5432/edge"
    assert (
        safe_dsn("postgresql://db/edge?password=x&sslmode=require")
        == "postgresql://db/edge?password=***&sslmode=require"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:longpass99@[bad/x",  # urlsplit refuses it
        "postgresql://app@db:99999999/edge",  # port out of range
        "postgresql://app:longpass%zz@db/edge",  # libpq refuses the percent-encoding
        "postgresql://app@db/edge?bogus=1",  # an option libpq does not know
    ],
)
def test_a_malformed_postgres_url_is_a_config_error_that_hides_its_password(run_cli: RunScript, url: str) -> None:
    """Not "unreachable, safe to retry" (exit 75) at connect time: the URL itself is wrong (exit 2)."""
    result = run_cli("jobs.py", "status", env={"STATE_DB": url})
    assert result.returncode == 2
    assert result.stderr.startswith("Error: STATE_DB is not valid: got 'postgresql://app")
    assert "expected a postgresql://user@host:5432/dbname URL" in result.stderr
    assert "longpass" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
