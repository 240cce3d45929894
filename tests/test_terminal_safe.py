"""Terminal-safe output: no remote- or file-derived string drives the operator's terminal.

Each source the security review found printed raw (a sitemap line, a feed item URL, an
ACCESS_LOGS file name, a lock holder record, an outbox value) is given ESC/OSC/CSI sequences and
a one-byte C1 CSI; the real scripts run as subprocesses and what they print must hold no raw
control character, while still showing the hostile text in escaped form. JSON output must parse
and give back the exact string. Each subprocess test failed on the code before issue 10.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import RunScript
from edgecron.outbox import PurgeOutbox
from edgecron.safetext import json_visible, visible, visible_lines
from edgecron.state import open_state
from pytest_httpserver import HTTPServer

OSC_TITLE = "\x1b]0;pwn\x07"
CLEAR = "\x1b[2J"
C1_CSI = "\x9b"
HOSTILE = OSC_TITLE + CLEAR + C1_CSI + "31m"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def raw_controls(text: str) -> list[str]:
    """Control characters a terminal would act on: C0 except newline and tab, DEL, C1."""
    return sorted({c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0})


def assert_inert(*texts: str) -> None:
    for text in texts:
        assert raw_controls(text) == [], text


# --- the escaping function --------------------------------------------------------------------


def test_visible_shows_c0_c1_and_del_as_escapes_and_leaves_text_alone() -> None:
    assert visible(HOSTILE) == "\\x1b]0;pwn\\x07\\x1b[2J\\x9b31m"
    assert visible("a\tb\nc\x7f") == "a\\x09b\\x0ac\\x7f"
    assert visible("café ✓ /path?q=1") == "café ✓ /path?q=1"
    assert visible_lines("line 1\n\tline 2\r\x1b") == "line 1\n\tline 2\\x0d\\x1b"


def test_visible_shows_bidi_overrides_and_undecodable_file_name_bytes() -> None:
    assert visible("admin\u202egnp.exe") == "admin\\u202egnp.exe"
    assert visible(os.fsdecode(b"log-\x9b.txt")) == "log-\\x9b.txt"


def test_no_code_point_survives_visible_as_a_raw_control_character() -> None:
    """Exhaustive over the Basic Multilingual Plane and the surrogate-escaped bytes (a fixed budget)."""
    everything = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xDC80 and not 0xDD00 <= c < 0xE000)
    assert raw_controls(visible(everything)) == []
    assert raw_controls(json_visible(everything)) == []
    assert json.loads(json_visible(everything)) == everything


def test_json_visible_is_valid_json_that_gives_back_the_exact_string_and_holds_no_raw_control() -> None:
    document = {"url": "https://x/" + HOSTILE + "\x7f\u202e", "n": 1}
    text = json_visible(document, indent=2)
    assert_inert(text)
    assert json.loads(text) == document


# --- sitemap lines: warm --dry-run ------------------------------------------------------------


@pytest.fixture
def hostile_sitemaps(httpserver: HTTPServer, env_file: Path) -> str:
    base = httpserver.url_for("").rstrip("/")
    text = f"{base}/plain{OSC_TITLE}\n{base}/clear{CLEAR}\n{base}/clean\n"
    httpserver.expect_request("/sitemap.txt").respond_with_data(text, content_type="text/plain")
    xml = f'<?xml version="1.0"?><urlset><url><loc>{base}/c1{C1_CSI}2J</loc></url></urlset>'
    httpserver.expect_request("/sitemap.xml").respond_with_data(xml, content_type="application/xml")
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL={base}\n")
    return base


def test_warm_dry_run_output_stays_inert_with_hostile_sitemap_urls(run_cli: RunScript, hostile_sitemaps: str) -> None:
    """The URL policy refuses URLs with control characters (counted as unsafe); what is printed stays inert."""
    base = hostile_sitemaps
    result = run_cli("warm_cache.py", "--dry-run", "-s", f"{base}/sitemap.txt", "-s", f"{base}/sitemap.xml")
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout, result.stderr)
    assert result.stdout.splitlines() == [f"[dry-run] GET {base}/clean"]


def test_warm_dry_run_json_is_valid_json_with_hostile_sitemap_urls(run_cli: RunScript, hostile_sitemaps: str) -> None:
    base = hostile_sitemaps
    result = run_cli("warm_cache.py", "--dry-run", "--json", "-s", f"{base}/sitemap.txt", "-s", f"{base}/sitemap.xml")
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout, result.stderr)
    doc = json.loads(result.stdout)
    assert (doc["would_request"], doc["count"]) == ([f"{base}/clean"], 1)
    assert doc["dropped"]["counts"] == {"invalid": 3}  # listed with their sitemap, escaped like every string


# --- feed item URL → outbox → purge outbox / jobs.py status -------------------------------------


def test_a_feed_item_url_with_escapes_is_rejected_and_shown_inert(
    run_script: RunScript, env_file: Path, workdir: Path
) -> None:
    feed = workdir / "feed.jsonl"
    item = {
        "id": "a1",
        "url": f"https://www.example.com/post{OSC_TITLE}{C1_CSI}",
        "updated_at": "2026-11-30T10:00:00Z",
        "title": "t",
        "body": "b",
    }
    feed.write_text(json.dumps(item) + "\n")
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL=https://www.example.com\nIMPORT_SOURCE={feed}\nIMPORT_MAX_REJECT_RATE=1\n")
    imported = run_script("import_stale.py", "--summary")
    assert imported.returncode == 1, imported.stderr
    assert_inert(imported.stdout, imported.stderr)
    assert "post\\x1b]0;pwn\\x07\\x9b" in imported.stderr


@pytest.mark.both_backends
def test_jobs_status_shows_a_failing_outbox_value_and_its_error_escaped(
    run_cli: RunScript, state_db: Path | str
) -> None:
    with open_state(state_db) as state:
        outbox = PurgeOutbox(state)
        outbox.enqueue("tag", [f"tag{CLEAR}"], source="test", now=NOW)
        claimed = outbox.claim("tag", 10, run_id="r1", now=NOW)
        outbox.mark_failed([i.id for i in claimed], error=f"code 1: refused {OSC_TITLE}", now=NOW)
    result = run_cli("jobs.py", "status")
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout, result.stderr)
    assert "tag tag\\x1b[2J: 1 attempts, code 1: refused \\x1b]0;pwn\\x07" in result.stdout

    shown = run_cli("purge_cache.py", "outbox")
    assert shown.returncode == 0, shown.stderr
    assert_inert(shown.stdout, shown.stderr)
    assert "tag\\x1b[2J" in shown.stdout
    as_json = run_cli("purge_cache.py", "outbox", "--json")
    assert_inert(as_json.stdout)
    assert [i["value"] for i in json.loads(as_json.stdout)["items"]] == [f"tag{CLEAR}"]


# --- ACCESS_LOGS file names -----------------------------------------------------------------------


def test_check_logs_shows_a_hostile_log_file_name_escaped(run_cli: RunScript, workdir: Path) -> None:
    logs = workdir / "logs"
    logs.mkdir()
    line = '127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "ua"\n'
    (logs / "access.log").write_text(line)
    (logs / f"access{OSC_TITLE}{C1_CSI}.log").mkdir()  # matched by the glob, not a regular file
    result = run_cli("check_logs.py", "--no-state", "--summary", "--log", f"{logs}/access*")
    assert_inert(result.stdout, result.stderr)
    assert f"{logs}/access\\x1b]0;pwn\\x07\\x9b.log is not a regular file" in result.stderr

    as_json = run_cli("check_logs.py", "--no-state", "--json", "--log", f"{logs}/access*")
    assert_inert(as_json.stdout, as_json.stderr)
    paths = {f["path"] for f in json.loads(as_json.stdout)["files"]}
    assert f"{logs}/access{OSC_TITLE}{C1_CSI}.log" in paths


# --- a lock holder record -------------------------------------------------------------------------


def test_the_lock_error_and_status_show_a_crafted_holder_record_escaped(
    run_script: RunScript, env_file: Path, workdir: Path
) -> None:
    locks = workdir / "state" / "locks"
    locks.mkdir()
    lock = locks / "warm.lock"
    record = {"pid": 4242, "host": f"web1{OSC_TITLE}", "started": f"2026-12-01T10:00:00{CLEAR}", "command": C1_CSI}
    lock.write_text(json.dumps(record) + "\n")
    with env_file.open("a") as fh:
        fh.write("SITE_URL=https://www.example.com\n")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process holds it, as far as the script knows
        held = run_script("warm_cache.py", "--urls-file", "-", input="/a\n")
        status = run_script("jobs.py", "status")
    finally:
        os.close(fd)
    assert held.returncode == 75
    assert_inert(held.stdout, held.stderr)
    assert "pid 4242 on web1\\x1b]0;pwn\\x07, started 2026-12-01T10:00:00\\x1b[2J" in held.stderr
    assert status.returncode == 0, status.stderr
    assert_inert(status.stdout, status.stderr)
    assert "\\x1b" in status.stdout  # the holder is shown, escaped
    # The skipped run's event names the holder too; operators `tail -f` the log on a terminal.
    log_text = (workdir / "state" / "logs" / "warm.jsonl").read_text(encoding="utf-8")
    assert_inert(log_text)
    reasons = [json.loads(line).get("reason", "") for line in log_text.splitlines()]
    assert any(f"web1{OSC_TITLE}" in reason for reason in reasons)
