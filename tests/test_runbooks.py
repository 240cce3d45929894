"""Every command a runbook names must exist: its script, its subcommand and its options (--help).

Commands are taken from fenced code blocks and inline code in notes/runbooks/*.md. A script that
does not exist yet is skipped with its name, so `pytest -ra` lists what is still missing.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, RunScript

RUNBOOKS = sorted((ROOT / "notes" / "runbooks").glob("*.md"))
SCRIPT = re.compile(r"(?:scripts/)?\b([a-z_]+\.py)\b")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
SEPARATORS = re.compile(r"\s(?:\||&&|;|>)\s")


def commands_in(text: str) -> list[str]:
    """Command lines that run one of our scripts, from code blocks and inline code."""
    found: list[str] = []
    for block in FENCE.findall(text):
        found += [line for line in block.replace("\\\n", " ").splitlines() if SCRIPT.search(line)]
    prose = FENCE.sub("", text)
    found += [span for span in INLINE.findall(prose) if SCRIPT.search(span)]
    commands = []
    for line in found:
        for part in SEPARATORS.split(line):
            if SCRIPT.search(part) and part not in commands:
                commands.append(part.strip())
    return commands


def cases() -> list[pytest.param]:
    out = []
    for path in RUNBOOKS:
        for command in commands_in(path.read_text(encoding="utf-8")):
            out.append(pytest.param(path.name, command, id=f"{path.stem}: {command[:60]}"))
    return out


@functools.cache
def help_text(run_cli: RunScript, script: str, subcommand: str | None) -> tuple[int, str]:
    result = run_cli(script, *([subcommand] if subcommand else []), "--help", env={"HOME": "/nonexistent"})
    return result.returncode, result.stdout + result.stderr


def subcommands(help_output: str) -> list[str]:
    section = help_output.split("Commands:", 1)
    if len(section) == 1:
        return []
    names = []
    for line in section[1].splitlines()[1:] if section[1].startswith("\n") else section[1].splitlines():
        match = re.match(r"^  ([a-z][a-z0-9-]*)\b", line)
        if match:
            names.append(match.group(1))
        elif line.strip() and not line.startswith(" "):
            break
    return names


def test_runbooks_exist_and_name_commands() -> None:
    names = {p.stem for p in RUNBOOKS}
    assert {"deploy", "import-rollback", "stuck-lock", "failing-purge-outbox", "new-vps"} <= names
    for path in RUNBOOKS:
        assert commands_in(path.read_text(encoding="utf-8")), f"{path.name} names no command"


@pytest.mark.parametrize(("runbook", "command"), cases())
def test_runbook_command_has_help(run_cli: RunScript, runbook: str, command: str) -> None:
    tokens = shlex.split(command, comments=True)
    index = next(i for i, t in enumerate(tokens) if SCRIPT.fullmatch(t.split("/")[-1]))
    script = tokens[index].split("/")[-1]
    if not (ROOT / "scripts" / script).exists():
        pytest.skip(f"scripts/{script} does not exist yet (named in {runbook})")
    rest = tokens[index + 1 :]
    code, top = help_text(run_cli, script, None)
    assert code == 0, f"{script} --help failed:\n{top}"
    names = subcommands(top)
    sub = next((t for t in rest if not t.startswith("-")), None) if names else None
    if names:
        assert sub in names, f"{runbook}: {script} has no subcommand {sub!r} (has: {', '.join(names)})"
        code, text = help_text(run_cli, script, sub)
        assert code == 0, f"{script} {sub} --help failed:\n{text}"
    else:
        text = top
    for option in (t.split("=")[0] for t in rest if t.startswith("--")):
        assert option in text, f"{runbook}: `{command}` uses {option}, which {script} {sub or ''} does not have"
    assert "Examples:" in text, f"{script} {sub or ''} --help has no examples"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_scheduler_unit_is_hardened(tmp_path: Path) -> None:
    """`systemd-analyze security` judges the unit file itself (offline): private files, no privileges."""
    unit = tmp_path / "edgecron-scheduler.service"  # the analyzer wants the unit's own file name
    unit.write_text((ROOT / "notes" / "edgecron-scheduler.service").read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True
    )
    [overall] = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    score = float(overall.split(":")[1].split()[0])
    assert score <= 2.0, overall
    assert "UMask=0077" in unit.read_text()
