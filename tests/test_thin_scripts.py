"""Scripts are parse → library call → report (issue 12 item 2): no SQL in scripts/, `run` as the
default command of import_stale.py without rewriting sys.argv, one way to declare examples."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from edgecron.outbox import PurgeOutbox
from edgecron.state import iso, open_state
from statedb import state_exists
from typer.testing import CliRunner

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py"))


def test_no_sql_in_scripts() -> None:
    """The acceptance grep of issue 12: the library owns every query."""
    found = subprocess.run(
        ["grep", "-rniE", "sqlite3|select |insert |update |delete from", str(ROOT / "scripts")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 1, found.stdout  # grep: 1 = no line matched


def invoke(args: list[str], env_file: Path, *, script: str = "import_stale") -> typer.testing.Result:
    app = importlib.import_module(script).app
    return CliRunner().invoke(
        app, args, env={"EDGECRON_ENV_FILE": str(env_file)}, catch_exceptions=False, prog_name=f"{script}.py"
    )


@pytest.mark.both_backends
def test_the_outbox_listing_reads_the_library_and_creates_nothing(state_db: Path | str, env_file: Path) -> None:
    empty = invoke(["outbox"], env_file, script="purge_cache")
    assert (empty.exit_code, empty.stdout) == (0, "The outbox is empty: nothing pending.\n")
    assert not state_exists(state_db)  # listing never creates the database
    with open_state(state_db) as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue("url", ["https://www.example.com/a", "https://www.example.com/b"], source="t", now=NOW)
        outbox.enqueue("tag", ["done-tag"], source="t", now=NOW)
        [refused] = outbox.claim("url", 1, run_id="r1", now=NOW)
        outbox.mark_failed([refused.id], error="code 1012: bad URL", now=NOW, hold=True)
        [sent] = outbox.claim("tag", 1, run_id="r1", now=NOW)
        outbox.mark_done([sent.id], result_id="x", now=NOW)
    doc = json.loads(invoke(["outbox", "--json"], env_file, script="purge_cache").stdout)
    assert doc["open"] == 2 and [i["value"] for i in doc["items"]] == [
        "https://www.example.com/a",
        "https://www.example.com/b",
    ]
    assert doc["items"][0] | {"id": 0} == {
        "id": 0,
        "kind": "url",
        "value": "https://www.example.com/a",
        "status": "pending",
        "source": "t",
        "enqueued_at": iso(NOW),
        "attempts": 1,
        "last_error": "code 1012: bad URL",
        "last_attempt_at": iso(NOW),
        "sent_at": None,
        "result_id": None,
        "run_id": "r1",
        "held": 1,
    }
    table = invoke(["outbox"], env_file, script="purge_cache").stdout.splitlines()
    assert [line.split()[:4] for line in table[2:]] == [
        ["url", "https://www.example.com/a", "failed", "1"],
        ["url", "https://www.example.com/b", "pending", "0"],
    ]


@pytest.fixture
def feed_env(workdir: Path, env_file: Path) -> Path:
    (workdir / "feed.jsonl").write_text(
        '{"id": "a", "url": "http://www.example.com/a", "updated_at": "2026-01-01T00:00:00Z", "title": "a", "body": "b"}\n'
    )
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL=http://www.example.com\nIMPORT_SOURCE={workdir / 'feed.jsonl'}\n")
    return env_file


def test_import_help_lists_the_commands_not_runs_them(feed_env: Path, workdir: Path) -> None:
    for flag in ("--help", "-h"):
        result = invoke([flag], feed_env)
        assert result.exit_code == 0
        assert result.stdout.startswith("Usage: import_stale.py [OPTIONS] COMMAND [ARGS]...")
        assert re.search(r"^Commands:\n  run ", result.stdout, re.MULTILINE)
    assert not (workdir / "state" / "content.db").exists()  # nothing was imported


def test_import_without_arguments_runs_the_import(feed_env: Path, workdir: Path) -> None:
    result = invoke([], feed_env)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")  # cron: silent on success
    assert (workdir / "state" / "content.db").exists()
    again = invoke(["--json"], feed_env)  # run's options without `run`
    assert again.exit_code == 0 and '"unchanged": 1' in again.stdout


def test_import_run_and_its_help_behave_as_before(feed_env: Path) -> None:
    result = invoke(["run", "--dry-run", "--json"], feed_env)
    assert result.exit_code == 0 and '"inserted": 1' in result.stdout
    for args in (["run", "--help"], ["--dry-run", "--help"]):
        shown = invoke(args, feed_env)
        assert shown.exit_code == 0 and shown.stdout.startswith("Usage: import_stale.py run [OPTIONS]")


def test_a_typo_of_a_command_is_an_unknown_option_of_run_as_before(feed_env: Path) -> None:
    result = invoke(["--dryrun"], feed_env)
    assert result.exit_code == 2 and "No such option: --dryrun" in result.stderr


def test_the_real_entry_point_defaults_to_run(run_script, feed_env: Path) -> None:
    """`python scripts/import_stale.py` itself, as cron runs it (no sys.argv rewrite any more)."""
    result = run_script("import_stale.py", "--dry-run", "--json")
    assert result.returncode == 0 and '"inserted": 1' in result.stdout
    assert "sys.argv" not in (ROOT / "scripts" / "import_stale.py").read_text()


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name != "_cli.py"], ids=lambda p: p.name)
def test_examples_are_declared_one_way(script: Path) -> None:
    """Every epilog comes from `_cli.examples`: no hand-written `Examples:` block, no own decorator."""
    text = script.read_text()
    assert "Examples:" not in text
    assert "def command(" not in text


def test_a_runs_limit_below_one_is_a_usage_error(feed_env: Path, workdir: Path) -> None:
    result = invoke(["runs", "--limit", "-1"], feed_env)  # SQLite's LIMIT -1 would list every run
    assert result.exit_code == 2
    assert "Invalid value for '--limit': Input should be greater than or equal to 1" in result.stderr
