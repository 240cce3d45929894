"""Shared fixtures: an isolated config per test and a runner for the real scripts (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

RunScript = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir()
    return tmp_path


@pytest.fixture
def env_file(workdir: Path) -> Path:
    """An empty `.env` for this test; tests append KEY=value lines to it."""
    path = workdir / ".env"
    path.write_text(f"STATE_DIR={workdir / 'state'}\n")
    return path


@pytest.fixture
def base_env(env_file: Path) -> dict[str, str]:
    """Environment for script subprocesses: only PATH/HOME plus our .env (nothing from the host)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(env_file.parent),
        "LANG": "C.UTF-8",
        "EDGECRON_ENV_FILE": str(env_file),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@pytest.fixture
def run_script(base_env: dict[str, str]) -> RunScript:
    """Run `scripts/<name>` as a real subprocess with the test's .env; returns CompletedProcess."""

    def run(
        name: str, *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(base_env)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / name), *args],
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
