"""Output under cron (cronic's rule) and run records you can trust: real scripts as subprocesses.

Under cron stdout and stderr are pipes and EDGECRON_TRIGGER=cron comes from the crontab; a person
over SSH has a terminal and no marker. Each test here failed on the code before issue 9.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from statedb import state_records

from demo.cloudflare_api import CloudflareEmulator
from demo.site import DemoSite

ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "tok-5d0c1b7a-secret"
CRON = {"EDGECRON_TRIGGER": "cron"}


def runs(state_db: Path | str) -> list[dict[str, Any]]:
    return state_records(state_db, "SELECT * FROM runs ORDER BY id")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    with DemoSite(access_log=tmp_path / "site-access.log", pages=5) as demo:
        yield demo


# --- usage errors are not runs ------------------------------------------------------------------


@pytest.mark.both_backends
def test_a_rollback_typo_is_a_usage_error_and_not_a_run_of_the_import_job(run_script, state_db: Path | str) -> None:  # type: ignore[no-untyped-def]
    result = run_script("import_stale.py", "rollback", "3310")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: run 3310 is not a run that changed the content store: got '3310'")
    assert runs(state_db) == []


@pytest.mark.both_backends
def test_an_unreadable_urls_file_is_a_usage_error_and_not_a_run_of_the_warm_job(
    run_script, state_db: Path | str
) -> None:  # type: ignore[no-untyped-def]
    result = run_script("warm_cache.py", "--urls-file", "/nope/urls.txt")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        "Error: --urls-file /nope/urls.txt cannot be read: got 'No such file or directory', "
        "expected a readable text file."
    )
    assert runs(state_db) == []


# --- a non-zero exit always says why ------------------------------------------------------------


@pytest.mark.slow
def test_purge_with_warm_says_on_stderr_when_the_rewarm_fails(
    run_script, env_file: Path, state_db: Path | str, httpserver: HTTPServer
) -> None:  # type: ignore[no-untyped-def]
    httpserver.expect_request("/hc/purge/start").respond_with_data("OK")
    httpserver.expect_request("/hc/purge/1").respond_with_data("OK")
    down = f"http://127.0.0.1:{closed_port()}"
    with CloudflareEmulator(token=TOKEN, zone=ZONE, plan="free") as api:
        with env_file.open("a") as fh:
            fh.write(f"SITE_URL={down}\nCF_API_TOKEN={TOKEN}\nCF_ZONE_ID={ZONE}\nCF_API_URL={api.base_url}\n")
            fh.write(f"WARM_TIMEOUT=2\nHEALTHCHECKS_URL={httpserver.url_for('/hc')}\n")
        result = run_script("purge_cache.py", "urls", "/a", "/b", "--warm", env=CRON)
        assert api.snapshot()["calls"] == 1  # the purge itself went through
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "re-warm: 2 of 2 purged URLs could not be fetched (the purge itself succeeded; they fill on the next "
        "visit or warm run). Safe to rerun."
    ]
    [run] = runs(state_db)
    assert (run["status"], run["trigger"]) == ("problems", "cron")
    # without a mail transfer agent cron's mail goes nowhere: the failure ping carries the same line
    [finish] = [req for req, _ in httpserver.log if req.path == "/hc/purge/1"]
    said = [json.loads(line) for line in finish.get_data(as_text=True).splitlines()]
    assert [e["text"] for e in said if e["event"] == "said"] == result.stderr.splitlines()


# --- what was asked for is printed, terminal or not ---------------------------------------------


def test_import_dry_run_prints_what_would_change_under_cron(run_script, env_file: Path, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    feed = workdir / "feed.jsonl"
    feed.write_text(
        '{"id": "a", "url": "https://www.example.com/a", "title": "A", "body": "x", "updated_at": "2026-11-01T00:00:00Z"}\n'
    )
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL=https://www.example.com\nIMPORT_SOURCE={feed}\n")
    result = run_script("import_stale.py", "run", "--dry-run", env=CRON)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines()[2:]}
    assert rows["read"] == "1" and rows["inserted"] == "1"
    assert "would be" in result.stdout.splitlines()[0]


@pytest.mark.slow
def test_warm_verify_and_dry_run_print_under_cron(run_script, env_file: Path, site: DemoSite) -> None:  # type: ignore[no-untyped-def]
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL={site.url}\nWARM_RATE=0\n")
    dry = run_script("warm_cache.py", "--dry-run", "--limit", "2", env=CRON)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("[dry-run] GET ") == 2
    assert dry.stderr == "[dry-run] 2 URLs would be requested; nothing was requested.\n"
    verify = run_script("warm_cache.py", "--verify", env=CRON)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.splitlines() == [
        "--verify: 1 URLs still not served from cache",
        f"  DYNAMIC  {site.url}/search",  # the demo's one page that is never cached
    ]


@pytest.mark.parametrize(
    "script",
    [
        ("warm_cache.py",),
        ("purge_cache.py", "outbox"),
        ("import_stale.py", "run"),
        ("check_logs.py",),
        ("check_cache_rules.py", "check"),
    ],
)
@pytest.mark.slow
def test_every_scheduled_command_has_summary(run_script, script: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    result = run_script(*script, "--help")
    assert result.returncode == 0, result.stderr
    assert "--summary" in result.stdout


# --- a config error under cron still reaches the monitor ----------------------------------------


@pytest.mark.slow
def test_config_error_under_cron_pings_the_failure(run_script, env_file: Path, httpserver: HTTPServer) -> None:  # type: ignore[no-untyped-def]
    httpserver.expect_request("/ping-key/warm/2", method="POST").respond_with_data("OK")
    with env_file.open("a") as fh:
        fh.write(f"HEALTHCHECKS_URL={httpserver.url_for('/ping-key')}\nWARM_CONCURRENCY=abc\n")
    manual = run_script("warm_cache.py")
    assert manual.returncode == 2
    assert httpserver.log == []  # a person at the terminal sees the error; the monitor is for the schedule
    result = run_script("warm_cache.py", env=CRON)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: WARM_CONCURRENCY is not valid: got 'abc'")
    [(request, _response)] = httpserver.log
    assert request.path == "/ping-key/warm/2"
    assert request.get_data(as_text=True).startswith("Error: WARM_CONCURRENCY is not valid: got 'abc'")


def test_config_error_with_unreadable_monitoring_settings_still_exits_2(run_script, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    with env_file.open("a") as fh:
        fh.write("HEALTHCHECKS_URL=not a url\n")
    result = run_script("check_logs.py", env=CRON)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: HEALTHCHECKS_URL is not valid")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.both_backends
def test_runs_record_their_trigger(run_script, env_file: Path, state_db: Path | str, site: DemoSite) -> None:  # type: ignore[no-untyped-def]
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL={site.url}\nWARM_RATE=0\n")
    assert run_script("warm_cache.py", env=CRON).returncode == 0
    assert run_script("warm_cache.py", env={"EDGECRON_TRIGGER": "scheduler"}).returncode == 0
    assert run_script("warm_cache.py").returncode == 0
    assert run_script("warm_cache.py", env={"EDGECRON_TRIGGER": "bogus"}).returncode == 0
    assert [r["trigger"] for r in runs(state_db)] == ["cron", "scheduler", "manual", "manual"]
    status = json.loads(run_script("jobs.py", "status", "--json").stdout)
    [warm] = [j for j in status["jobs"] if j["job"] == "warm"]
    assert warm["last_trigger"] == "manual"


@pytest.mark.slow
def test_status_shows_times_with_their_zone(run_script, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    with env_file.open("a") as fh:
        fh.write("SCHEDULE_TIMEZONE=America/New_York\n")
    assert run_script("warm_cache.py", "--urls-file", "/dev/null").returncode == 0
    lines = run_script("jobs.py", "status").stdout.splitlines()
    assert lines[0] == "times in America/New_York (SCHEDULE_TIMEZONE)"
    [warm] = [line for line in lines if line.startswith("warm ")]
    # last run and next due both carry the zone's abbreviation (EST in December)
    assert warm.count(" EST") == 2 and " manual " in warm
