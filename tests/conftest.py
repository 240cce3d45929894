"""Shared fixtures: an isolated config per test and a runner for the real scripts (subprocesses)."""

from __future__ import annotations

import os
import pty
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
    path.chmod(0o600)  # it may hold the token: a readable one is a warning on every run
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


@pytest.fixture
def run_in_terminal(base_env: dict[str, str]) -> Callable[..., tuple[int, str]]:
    """Run `scripts/<name>` with stdout and stderr on a pseudo-terminal (a person over SSH).

    Returns the exit code and everything the terminal showed (stdout and stderr interleaved).
    """

    def run(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / name), *args],
                env={**base_env, "TERM": "dumb", **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=slave,
                stderr=slave,
            )
            os.close(slave)
            chunks = []
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            code = proc.wait(timeout=timeout)
        finally:
            os.close(master)
        return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")

    return run


def start_demo_serve(directory: Path) -> tuple[subprocess.Popen[str], str]:
    """`demo/serve.py --dir DIRECTORY` running (it writes DIRECTORY/.env.demo): the process and the site URL.

    The caller stops it with SIGTERM; its remaining output is on `proc.stdout`.
    """
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "demo" / "serve.py"), "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith("demo site:"):
        proc.kill()
        proc.communicate(timeout=10)
        raise AssertionError(f"demo/serve.py did not start: {first}")
    return proc, first.split()[-1]
