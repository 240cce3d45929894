"""Healthchecks pings against a real loopback server that records them."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from edgecron import monitor as module
from edgecron.config import load_settings
from edgecron.errors import ConfigError, ExitCode
from edgecron.runner import JobRun
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

BASE = "/0f2c5d0e-ping-key"


def pings(server: HTTPServer) -> list[tuple[str, str, bytes]]:
    """(path, rid, body) of every request the server received."""
    return [(req.path, req.args.get("rid", ""), req.get_data()) for req, _ in server.log]


def no_sleep(seconds: float) -> None:
    pass


def test_start_and_finish_are_paired_by_a_canonical_rid(httpserver: HTTPServer) -> None:
    httpserver.expect_request(f"{BASE}/warm/start", method="POST").respond_with_data("OK")
    httpserver.expect_request(f"{BASE}/warm/0", method="POST").respond_with_data("OK")
    pinger = module.Pinger(httpserver.url_for(f"{BASE}/warm"))
    run_id = uuid.uuid4().hex
    assert pinger.start(run_id).sent
    assert pinger.finish(run_id, 0, body="line 1\nall good\n").sent
    (start, finish) = pings(httpserver)
    assert start[0] == f"{BASE}/warm/start" and finish[0] == f"{BASE}/warm/0"
    assert start[1] == finish[1] == str(uuid.UUID(run_id))  # dashed form, as healthchecks wants
    assert finish[2] == b"line 1\nall good\n"


def test_failure_sends_the_exit_code(httpserver: HTTPServer) -> None:
    httpserver.expect_request(f"{BASE}/import/75", method="POST").respond_with_data("OK")
    result = module.Pinger(httpserver.url_for(f"{BASE}/import")).finish(uuid.uuid4().hex, 75)
    assert result.sent and [p[0] for p in pings(httpserver)] == [f"{BASE}/import/75"]


def test_server_errors_are_retried_then_succeed(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request(f"{BASE}/warm/start").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request(f"{BASE}/warm/start").respond_with_data("busy", status=500)
    httpserver.expect_ordered_request(f"{BASE}/warm/start").respond_with_data("OK")
    slept: list[float] = []
    pinger = module.Pinger(httpserver.url_for(f"{BASE}/warm"), sleep=slept.append)
    result = pinger.start(uuid.uuid4().hex)
    assert result.sent and result.attempts == 3
    assert slept == [1.0, 2.0]
    assert len(pings(httpserver)) == 3


def test_unknown_check_is_not_retried_and_reports_status(httpserver: HTTPServer) -> None:
    httpserver.expect_request(f"{BASE}/nope/start").respond_with_data("not found", status=404)
    result = module.Pinger(httpserver.url_for(f"{BASE}/nope"), sleep=no_sleep).start(uuid.uuid4().hex)
    assert not result.sent and result.error == "HTTP 404" and result.attempts == 1


def test_unreachable_server_never_raises_and_hides_the_url() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pinger = module.Pinger(f"http://127.0.0.1:{port}{BASE}/warm", sleep=no_sleep, timeout=1)
    result = pinger.start(uuid.uuid4().hex)
    assert not result.sent and result.attempts == 3
    assert result.error == "ConnectionError"
    assert "ping-key" not in (result.error or "")


@pytest.mark.slow
def test_timeout_is_applied(httpserver: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("OK")

    httpserver.expect_request(f"{BASE}/warm/start").respond_with_handler(slow)
    pinger = module.Pinger(httpserver.url_for(f"{BASE}/warm"), timeout=0.3, retries=0)
    started = time.monotonic()
    result = pinger.start(uuid.uuid4().hex)
    assert not result.sent and result.error in ("ReadTimeout", "ConnectionError")
    assert time.monotonic() - started < 1.4
    time.sleep(max(0.0, 1.7 - (time.monotonic() - started)))  # let the slow handler finish here


def test_body_is_the_tail_within_the_servers_limit(httpserver: HTTPServer) -> None:
    httpserver.expect_request(f"{BASE}/warm/start").respond_with_data("OK", headers={"Ping-Body-Limit": "100"})
    httpserver.expect_request(f"{BASE}/warm/1").respond_with_data("OK")
    pinger = module.Pinger(httpserver.url_for(f"{BASE}/warm"))
    run_id = uuid.uuid4().hex
    pinger.start(run_id)
    output = "".join(f"line {i:04d}\n" for i in range(100)) + "Error: the last line says why\n"
    pinger.finish(run_id, 1, body=output)
    (body,) = [b for path, rid, b in pings(httpserver) if path.endswith("/warm/1")]
    assert len(body) <= 100 and body.endswith(b"Error: the last line says why\n")


def test_healthchecks_url_must_be_a_url() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"HEALTHCHECKS_URL": "hc-ping.com/abc"})
    assert "HEALTHCHECKS_URL" in info.value.message


def test_per_job_uuid_from_healthchecks_checks() -> None:
    check = "5b9f1a52-3c57-4a44-8a0e-5f0d8b1f2c11"
    cfg = load_settings(environ={"HEALTHCHECKS_URL": "https://hc.example.com/", "HEALTHCHECKS_CHECKS": f"warm={check}"})
    warm = module.pinger_for(cfg, "warm")
    other = module.pinger_for(cfg, "import")
    assert warm is not None and warm.url == f"https://hc.example.com/{check}"
    assert other is not None and other.url == "https://hc.example.com/import"
    assert module.pinger_for(load_settings(environ={}), "warm") is None


# --- JobRun integration -------------------------------------------------------------------------


def job_settings(tmp_path: Path, ping_url: str):  # type: ignore[no-untyped-def]
    return load_settings(environ={"STATE_DIR": str(tmp_path / "state"), "HEALTHCHECKS_URL": ping_url})


def test_job_run_pings_start_then_exit_code(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(f"{BASE}/cache-rules/start").respond_with_data("OK")
    httpserver.expect_request(f"{BASE}/cache-rules/1").respond_with_data("OK")
    with JobRun(settings=job_settings(tmp_path, httpserver.url_for(BASE)), job="cache-rules", trigger="cron") as run:
        assert [p[0] for p in pings(httpserver)] == [f"{BASE}/cache-rules/start"]  # after the lock
        run.log("mismatch", url="/pricing")
        run.exit_code = ExitCode.PROBLEMS
    (start, finish) = pings(httpserver)
    assert finish[0] == f"{BASE}/cache-rules/1"
    assert start[1] == finish[1] == str(uuid.UUID(run.run_id))
    events = [json.loads(line)["event"] for line in finish[2].decode().splitlines()]
    assert events == ["start", "mismatch", "finish"]


def test_dry_run_sends_no_ping(tmp_path: Path, httpserver: HTTPServer) -> None:
    with JobRun(settings=job_settings(tmp_path, httpserver.url_for(BASE)), job="warm", dry_run=True, trigger="cron"):
        pass
    assert pings(httpserver) == []


def test_a_manual_run_sends_no_ping(tmp_path: Path, httpserver: HTTPServer) -> None:
    """The check watches the schedule: a failed run over SSH must not page anyone."""
    with JobRun(settings=job_settings(tmp_path, httpserver.url_for(BASE)), job="warm") as run:
        run.exit_code = ExitCode.USAGE
    assert pings(httpserver) == []


def test_ping_failure_is_a_warning_and_keeps_the_exit_code(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(f"{BASE}/warm/start").respond_with_data("gone", status=410)
    httpserver.expect_request(f"{BASE}/warm/0").respond_with_data("gone", status=410)
    cfg = job_settings(tmp_path, httpserver.url_for(BASE))
    with JobRun(settings=cfg, job="warm", trigger="scheduler") as run:
        pass
    assert run.exit_code == ExitCode.OK
    log = [json.loads(line) for line in (cfg.state_dir / "logs" / "warm.jsonl").read_text().splitlines()]
    warnings = [e for e in log if e["event"] == "ping-failed"]
    assert [(w["stage"], w["level"], w["error"]) for w in warnings] == [
        ("start", "warning", "HTTP 410"),
        ("finish", "warning", "HTTP 410"),
    ]
    db = sqlite3.connect(cfg.state_dir / "state.db")
    try:
        assert db.execute("SELECT status, exit_code FROM runs").fetchall() == [("ok", 0)]
    finally:
        db.close()
