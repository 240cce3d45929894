"""Scripts are parse → library call → report (issue 12 item 2): no SQL in scripts/, `run` as the
default command of import_stale.py without rewriting sys.argv, one way to declare examples."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

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


def invoke(args: list[str], env_file: Path) -> typer.testing.Result:
    app = importlib.import_module("import_stale").app
    return CliRunner().invoke(
        app, args, env={"EDGECRON_ENV_FILE": str(env_file)}, catch_exceptions=False, prog_name="import_stale.py"
    )


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
