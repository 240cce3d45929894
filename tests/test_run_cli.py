"""`run_cli` (a script run in this process) gives what `run_script` (the real subprocess) gives, and
leaves nothing of the run behind in the test process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import RunScript

# Help, usage errors, a config error, a settings warning, a JSON document: what the converted tests pin.
CASES = [
    ("warm_cache.py", "--help"),
    ("jobs.py", "next", "--help"),
    ("jobs.py", "--bogus"),
    ("jobs.py", "next", "no-such-job"),
    ("jobs.py", "status", "--json"),
    ("jobs.py", "crontab", "--home", "/srv/e"),
    ("check_logs.py", "--since", "yesterday"),
    ("purge_cache.py", "urls"),
    ("warm_cache.py", "--rate", "-1"),
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(case) for case in CASES])
def test_in_process_run_gives_what_the_subprocess_gives(
    run_cli: RunScript, run_script: RunScript, args: tuple[str, ...]
) -> None:
    inside, outside = run_cli(*args), run_script(*args)
    assert (inside.returncode, inside.stdout, inside.stderr) == (outside.returncode, outside.stdout, outside.stderr)


def test_a_config_error_reads_the_tests_env_file_not_the_hosts(
    run_cli: RunScript, run_script: RunScript, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file.write_text(env_file.read_text() + "WARM_CONCURRENCY=abc\n")
    monkeypatch.setenv("WARM_CONCURRENCY", "4")  # the host's value must not reach the script
    inside, outside = run_cli("warm_cache.py", "--dry-run"), run_script("warm_cache.py", "--dry-run")
    assert inside.returncode == outside.returncode == 2
    assert inside.stderr == outside.stderr and "WARM_CONCURRENCY" in inside.stderr


def test_the_run_leaves_argv_environment_umask_and_cwd_as_they_were(run_cli: RunScript) -> None:
    before = (list(sys.argv), dict(os.environ), os.getcwd(), sys.modules["__main__"])
    umask = os.umask(0o022)
    os.umask(umask)
    assert run_cli("jobs.py", "status").returncode == 0  # `_cli.main` sets umask 077 for the run
    after_umask = os.umask(umask)
    assert (list(sys.argv), dict(os.environ), os.getcwd(), sys.modules["__main__"]) == before
    assert after_umask == umask
