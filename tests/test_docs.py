"""The documentation generated from code must match the code; every script has help with examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import RunScript

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))
TYPE_LABEL = re.compile(r"<(?:int|float|str|path|list\[[a-z]+\])(?: range)?>")  # Typer's labels, e.g. <float range>


def command_names(section: str) -> list[str]:
    """The names in a `Commands:` list (a wrapped description line is indented further)."""
    return [line.split()[0] for line in section.splitlines() if re.match(r"  \S", line)]


def every_help_text(run_cli: RunScript) -> dict[str, str]:
    texts: dict[str, str] = {}
    for script in SCRIPTS:
        top = run_cli(script.name, "--help")
        texts[script.name] = top.stdout
        if "Commands:" in top.stdout:
            for name in command_names(top.stdout.split("Commands:", 1)[1].split("Examples:", 1)[0]):
                texts[f"{script.name} {name}"] = run_cli(script.name, name, "--help").stdout
    return texts


def test_help_shows_what_to_type_and_whole_command_descriptions(run_cli: RunScript) -> None:
    texts = every_help_text(run_cli)
    assert len(texts) >= 16
    for where, text in texts.items():
        assert text.startswith("Usage:"), where
        assert not TYPE_LABEL.search(text), f"{where}: a type label instead of a metavar: {TYPE_LABEL.search(text)}"
        if "Commands:" in text:
            listing = text.split("Commands:", 1)[1].split("Examples:", 1)[0]
            assert "..." not in listing, f"{where}: a command description is cut: {listing}"
    warm = texts["warm_cache.py"]
    assert "--sitemap URL" in warm and "--timeout SECONDS" in warm and "--limit N" in warm


def test_env_example_and_readme_table_match_config_keys() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_script_help_ends_with_examples(run_cli: RunScript) -> None:
    scripts = sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))
    assert scripts
    for script in scripts:
        result = run_cli(script.name, "--help")
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
        assert "Examples:" in result.stdout, f"{script.name} --help has no examples"
        tail = result.stdout.rsplit("Examples:", 1)[1]
        assert script.name in tail, f"{script.name} examples do not show how to call it"
        assert "Options" not in tail and "--help" not in tail, f"{script.name} --help does not end with its examples"


def test_every_subcommand_help_ends_with_examples(run_cli: RunScript) -> None:
    checked = 0
    for script in sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_")):
        top = run_cli(script.name, "--help")
        if "Commands:" not in top.stdout:
            continue
        section = top.stdout.split("Commands:", 1)[1].split("Examples:", 1)[0]
        names = command_names(section)
        for name in names:
            result = run_cli(script.name, name, "--help")
            assert result.returncode == 0, f"{script.name} {name}: {result.stderr}"
            tail = result.stdout.rsplit("Examples:", 1)
            assert len(tail) == 2 and "Options" not in tail[1], (
                f"{script.name} {name} --help does not end with examples"
            )
            checked += 1
    assert checked >= 10
