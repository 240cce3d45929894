"""`make demo-serve` keeps the demo servers up, writes settings the jobs accept, and stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import start_demo_serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_serve_settings_drive_a_real_job_and_sigterm_stops_it(tmp_path: Path, base_env: dict[str, str]) -> None:
    proc, _ = start_demo_serve(tmp_path)
    try:
        env_file = tmp_path / ".env.demo"
        assert env_file.exists()
        env = {**base_env, "EDGECRON_ENV_FILE": str(env_file)}
        warm = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "warm_cache.py"), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert warm.returncode == 0, warm.stderr
        assert '"filled"' in warm.stdout
        crontab = subprocess.run(
            [
                sys.executable,
                str(
                    ROOT / "scripts" / "jobs.py",
                ),
                "crontab",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert f"EDGECRON_ENV_FILE={env_file}" in crontab.stdout
        assert '* * * * * "$EDGECRON_HOME/.venv/bin/python" "$EDGECRON_HOME/scripts/warm_cache.py"' in crontab.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "demo servers stopped." in out
