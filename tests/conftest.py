"""Shared fixtures: an isolated config per test and runners for the real scripts (in-process or subprocesses)."""

from __future__ import annotations

import importlib.util
import os
import pty
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from pgcluster import PgCluster, throwaway_cluster  # noqa: E402

RunScript = Callable[..., subprocess.CompletedProcess[str]]
# What the coverage run (`make coverage`, `make test`) hands to the processes it measures: kept in the
# scripts' otherwise minimal environment, so a script run as a subprocess is measured too.
COVERAGE_ENV = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir()
    return tmp_path


BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_content_backends: run once with a SQLite content store and once with PostgreSQL (CONTENT_DB)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_backends` run once per state backend: STATE_DIR's SQLite file and STATE_DB on a
    real PostgreSQL (the `pg_cluster` of this worker, a fresh database per test)."""
    if metafunc.definition.get_closest_marker("both_backends") and "state_backend" in metafunc.fixturenames:
        metafunc.parametrize("state_backend", BACKENDS, indirect=True)
    if metafunc.definition.get_closest_marker("both_content_backends") and "content_backend" in metafunc.fixturenames:
        metafunc.parametrize("content_backend", BACKENDS, indirect=True)


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def state_db(state_backend: str, workdir: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where this test's state database is: `workdir/state/state.db`, or a fresh PostgreSQL database's URL."""
    if state_backend == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        return cluster.new_database()
    return workdir / "state" / "state.db"


@pytest.fixture
def content_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def content_db(content_backend: str, workdir: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where this test's content store is (`both_content_backends` runs it on each): STATE_DIR's
    content.db, or a fresh PostgreSQL database's URL."""
    if content_backend == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        return cluster.new_database()
    return workdir / "state" / "content.db"


@pytest.fixture
def env_file(workdir: Path, state_db: Path | str, content_db: Path | str) -> Path:
    """An empty `.env` for this test; tests append KEY=value lines to it."""
    path = workdir / ".env"
    path.write_text(
        f"STATE_DIR={workdir / 'state'}\n"
        + (f"STATE_DB={state_db}\n" if isinstance(state_db, str) else "")
        + (f"CONTENT_DB={content_db}\n" if isinstance(content_db, str) else "")
    )
    path.chmod(0o600)  # it may hold the token: a readable one is a warning on every run
    return path


@pytest.fixture
def base_env(env_file: Path) -> dict[str, str]:
    """Environment for script runs: only PATH/HOME plus our .env (nothing from the host)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(env_file.parent),
        "LANG": "C.UTF-8",
        "EDGECRON_ENV_FILE": str(env_file),
        "PYTHONDONTWRITEBYTECODE": "1",
        **{key: os.environ[key] for key in COVERAGE_ENV if key in os.environ},
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


_script_modules: dict[str, ModuleType] = {}


def script_module(name: str) -> ModuleType:
    """`scripts/<name>` imported once per test process (its `__main__` block does not run)."""
    if name not in _script_modules:
        spec = importlib.util.spec_from_file_location(f"script_{Path(name).stem}", ROOT / "scripts" / name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        _script_modules[name] = module
    return _script_modules[name]


@pytest.fixture
def run_cli(base_env: dict[str, str]) -> RunScript:
    """Run `scripts/<name>` in this process, as `python scripts/<name> ARGS` would: same argv and prog
    name, the same `.env`-only environment as `run_script`, through the script's own `_cli.main` (its
    error edge and exit codes). Returns a CompletedProcess (exit code, stdout, stderr apart), so a
    test moves between this and `run_script` by name alone. Use `run_script` where the process is
    the point: locks, signals, kills, cron's environment, a terminal.
    """
    import _cli
    from typer._click import formatting
    from typer.testing import CliRunner

    def run(
        name: str, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        script = script_module(name)
        wanted = {**base_env, "COLUMNS": "80", **(env or {})}  # 80: a pipe's width, as in a subprocess
        # The host's variables are removed for the run (None), the test's set; both undone afterwards.
        overrides: dict[str, str | None] = {key: None for key in os.environ if key not in wanted}
        overrides.update(wanted)
        saved_argv, saved_main = sys.argv, sys.modules["__main__"]
        saved_umask = os.umask(0o022)  # read it: `_cli.main` sets the process umask
        os.umask(saved_umask)
        runner = CliRunner()
        with runner.isolation(input=input, env=overrides) as (stdout, stderr, _):
            formatting.FORCED_WIDTH = None  # wrap help at the terminal width (COLUMNS), as the script does
            sys.argv = [str(ROOT / "scripts" / name), *args]
            sys.modules["__main__"] = script  # click names the program after argv[0] only for a plain script
            try:
                _cli.main(script.app)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if isinstance(exit_.code, str):  # what the interpreter does with `sys.exit("text")`
                    sys.stderr.write(exit_.code + "\n")
            finally:
                sys.argv, sys.modules["__main__"] = saved_argv, saved_main
                os.umask(saved_umask)
                sys.stdout.flush()
                sys.stderr.flush()
            out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
        return subprocess.CompletedProcess([name, *args], code, out, err)

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: on several workers the long ones then run beside the many short ones
    instead of alone at the end (the order is otherwise kept)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A real PostgreSQL server for this test process (one per xdist worker), running until the session ends.

    Stopped (`pg_ctl stop -m immediate`) and its directory removed even when tests fail.
    """
    with throwaway_cluster() as cluster:
        yield cluster
