"""The documentation generated from code must match the code; every script has help with examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_and_readme_table_match_config_keys() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_script_help_ends_with_examples() -> None:
    scripts = sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))
    assert scripts
    for script in scripts:
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
        assert "Examples:" in result.stdout, f"{script.name} --help has no examples"
        tail = result.stdout.rsplit("Examples:", 1)[1]
        assert script.name in tail, f"{script.name} examples do not show how to call it"
        assert "Options" not in tail and "--help" not in tail, f"{script.name} --help does not end with its examples"


def test_every_subcommand_help_ends_with_examples() -> None:
    checked = 0
    for script in sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_")):
        top = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=30)
        if "Commands:" not in top.stdout:
            continue
        section = top.stdout.split("Commands:", 1)[1].split("Examples:", 1)[0]
        names = [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]
        for name in names:
            result = subprocess.run(
                [sys.executable, str(script), name, "--help"], capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 0, f"{script.name} {name}: {result.stderr}"
            tail = result.stdout.rsplit("Examples:", 1)
            assert len(tail) == 2 and "Options" not in tail[1], (
                f"{script.name} {name} --help does not end with examples"
            )
            checked += 1
    assert checked >= 10
