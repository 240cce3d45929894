"""scripts/import_stale.py as cron runs it: real subprocesses, real SQLite files, kill -9; run,
rollback and runs also with the content store on a real PostgreSQL (CONTENT_DB)."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from content_stores import item_rows, kill_import_at, tables_in, written
from edgecron.contentschema import SCHEMA, SCHEMA_VERSION
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "import_stale.py"


def item(key: str, body: str = "b", *, stamp: str = "2026-02-01T00:00:00Z", host: str = "www.example.com") -> dict:
    return {"id": key, "url": f"http://{host}/articles/{key}", "updated_at": stamp, "title": key, "body": body}


def write_feed(path: Path, items: list[object]) -> Path:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return path


def configure(env_file: Path, **keys: object) -> None:
    defaults = {"SITE_URL": "http://www.example.com", "IMPORT_SOURCE": env_file.parent / "feed.jsonl"}
    with env_file.open("a") as fh:
        for name, value in {**defaults, **keys}.items():
            fh.write(f"{name}={value}\n")


def outbox_of(state_dir: Path, status: str = "%") -> list[tuple[str, str]]:
    with sqlite3.connect(state_dir / "state.db") as conn:
        return conn.execute("SELECT value, source FROM outbox WHERE status LIKE ? ORDER BY value", (status,)).fetchall()


@pytest.mark.both_content_backends
def test_importing_the_same_feed_twice_writes_nothing_the_second_time(
    run_cli, env_file: Path, workdir: Path, content_db: Path | str
) -> None:
    configure(env_file)
    write_feed(workdir / "feed.jsonl", [item(f"k{i}") for i in range(50)])
    first = run_cli(SCRIPT)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")  # cron: silent on success
    fingerprint = written(content_db)
    assert len(item_rows(content_db)) == 50
    queued = outbox_of(workdir / "state")
    assert len(queued) == 50

    second = run_cli(SCRIPT, "--json")
    assert second.returncode == 0, second.stderr
    counts = json.loads(second.stdout)["counts"]
    assert (counts["unchanged"], counts["inserted"], counts["updated"], counts["removed"]) == (50, 0, 0, 0)
    assert written(content_db) == fingerprint  # not one byte of content.db, not one row rewritten
    assert outbox_of(workdir / "state") == queued  # no purge enqueued


@pytest.mark.slow
def test_killed_at_random_points_then_rerun_equals_an_uninterrupted_run(
    run_script, base_env: dict[str, str], env_file: Path, tmp_path: Path
) -> None:
    base = [item(f"k{i:05d}", stamp=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(3000)]
    changed = []
    for i in range(6000):
        if i % 7 == 3:
            changed.append({"id": f"k{i:05d}", "deleted": True})
        elif i % 11 == 5:
            changed.append(item(f"k{(i * 13) % 6000:05d}", f"dup {i}", stamp="2026-02-03T00:00:00Z"))
        else:
            changed.append(
                item(f"k{i:05d}", f"v2 {i}", stamp=f"2026-02-02T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z")
            )

    def prepare(name: str) -> tuple[dict[str, str], Path]:
        home = tmp_path / name
        (home / "state").mkdir(parents=True)
        env = home / ".env"
        env.write_text(f"STATE_DIR={home / 'state'}\n")
        configure(env, IMPORT_BATCH=25, IMPORT_SOURCE=home / "feed.jsonl")
        write_feed(home / "feed.jsonl", base)
        run_env = {**base_env, "EDGECRON_ENV_FILE": str(env), "HOME": str(home)}
        assert run_script(SCRIPT, env=run_env).returncode == 0
        write_feed(home / "feed.jsonl", changed)
        return run_env, home

    reference_env, reference = prepare("reference")
    assert run_script(SCRIPT, env=reference_env).returncode == 0

    victim_env, victim = prepare("victim")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(200, 5800), 5))
    killed_mid_run = kill_import_at(targets, env=victim_env, progress=lambda: _resume_index(victim), rng=rng)
    unfinished = _resume_index(victim)  # 0 when the last kill landed after the run's final commit
    final = run_script(SCRIPT, "--json", env=victim_env)
    assert final.returncode == 0, final.stderr
    if unfinished:
        assert json.loads(final.stdout)["resumed_from"] is not None, f"seed {seed}"

    assert killed_mid_run >= 5, f"seed {seed}: only {killed_mid_run} kills landed mid-run"
    # And one more run of the same feed changes nothing, wherever the kills fell.
    again = json.loads(run_script(SCRIPT, "--json", env=victim_env).stdout)["counts"]
    assert (again["inserted"], again["updated"], again["removed"]) == (0, 0, 0), f"seed {seed}"
    assert item_rows(victim / "state" / "content.db") == item_rows(reference / "state" / "content.db"), f"seed {seed}"
    assert _cursor(victim) == _cursor(reference)
    assert {v for v, _ in outbox_of(victim / "state")} == {v for v, _ in outbox_of(reference / "state")}


def _resume_index(home: Path) -> int:
    try:
        with sqlite3.connect(f"file:{home / 'state' / 'content.db'}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT resume_index FROM checkpoints").fetchone()
    except sqlite3.Error:
        return 0
    return row[0] or 0 if row else 0


def _cursor(home: Path) -> tuple:
    with sqlite3.connect(home / "state" / "content.db") as conn:
        return conn.execute("SELECT cursor_updated_at, cursor_key, resume_index FROM checkpoints").fetchone()


@pytest.mark.both_content_backends
def test_rollback_restores_the_previous_rows_and_queues_their_purges(
    run_cli, env_file: Path, workdir: Path, content_db: Path | str
) -> None:
    configure(env_file)
    write_feed(workdir / "feed.jsonl", [item("a"), item("b"), item("c")])
    assert run_cli(SCRIPT).returncode == 0
    db, state = content_db, workdir / "state"
    before = item_rows(db)
    with sqlite3.connect(state / "state.db") as conn:  # as if the purge job had sent them
        conn.execute("UPDATE outbox SET status='done'")
    write_feed(workdir / "feed.jsonl", [item("a", "edited"), {"id": "b", "deleted": True}, item("c"), item("d")])
    imported = json.loads(run_cli(SCRIPT, "--json").stdout)
    assert item_rows(db) != before
    with sqlite3.connect(state / "state.db") as conn:
        conn.execute("UPDATE outbox SET status='done'")

    result = run_cli(SCRIPT, "rollback", imported["run_id"][:8].upper(), "--json")
    assert result.returncode == 0, result.stderr
    assert item_rows(db) == before
    rollback_id = json.loads(result.stdout)["run_id"]
    backup = json.loads(result.stdout)["backup"]  # a file copy of SQLite; PostgreSQL's own backups cover it
    assert (backup is None) if isinstance(db, str) else Path(backup).is_file()
    assert outbox_of(state, "pending") == [
        (f"http://www.example.com/articles/{k}", f"import:{rollback_id}") for k in ("a", "b", "d")
    ]
    again = run_cli(SCRIPT, "rollback", imported["run_id"])
    assert again.returncode == 2 and "already rolled back" in again.stderr
    listed = json.loads(run_cli(SCRIPT, "runs", "--json").stdout)["runs"]
    assert [(r["kind"], r["status"]) for r in listed][1:] == [("rollback", "ok"), ("import", "ok"), ("import", "ok")]
    assert listed[0]["status"] == "usage-error"  # the refused second rollback
    assert listed[2]["rolled_back_by"] == rollback_id and listed[2]["counts"]["removed"] == 1


@pytest.mark.both_content_backends
def test_dry_run_reports_and_creates_nothing(run_cli, env_file: Path, workdir: Path, content_db: Path | str) -> None:
    configure(env_file)
    write_feed(workdir / "feed.jsonl", [item("a"), item("b"), item("a", "again")])
    result = run_cli(SCRIPT, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["counts"]["inserted"], doc["counts"]["updated"], doc["counts"]["duplicates"]) == (
        2,
        0,
        1,
    )  # the last copy of "a" is inserted once
    assert doc["dry_run"] is True
    assert sorted(p.name for p in (workdir / "state").iterdir()) == []
    if isinstance(content_db, str):  # not one table created in PostgreSQL either
        assert tables_in(content_db) == []


def test_bad_items_are_reported_with_position_and_the_run_exits_1(run_cli, env_file: Path, workdir: Path) -> None:
    configure(env_file, IMPORT_MAX_REJECT_RATE=0.5)
    write_feed(
        workdir / "feed.jsonl",
        [
            item("a"),
            {**item("b"), "updated_at": "2026-02-01T00:00:00"},
            '"just a string"',
            item("c", host="evil.example.net"),
        ]
        + [item(f"ok{i}") for i in range(5)],
    )
    result = run_cli(SCRIPT)
    assert result.returncode == 1
    assert (
        "line 2: updated_at: got '2026-02-01T00:00:00', expected an ISO 8601 timestamp with a timezone" in result.stderr
    )
    assert "line 3: (item)" in result.stderr and "line 4: url" in result.stderr
    assert len(item_rows(workdir / "state" / "content.db")) == 6


def test_past_max_reject_rate_the_run_exits_2_keeping_committed_batches(run_cli, env_file: Path, workdir: Path) -> None:
    configure(env_file, IMPORT_BATCH=5)
    write_feed(workdir / "feed.jsonl", [item(f"ok{i}") for i in range(5)] + ["{broken"] * 5 + [item("late")])
    result = run_cli(SCRIPT, "--max-reject-rate", "0.1")
    assert result.returncode == 2
    assert "Error: 5 of 10 items rejected" in result.stderr and "line 6: (line)" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Kept from this run: 5 inserted, 0 updated, 0 removed, 5 rejected, 5 URL(s) queued for purge; checkpoint "
        "after line 10. Fix the cause above and rerun: it continues from the checkpoint (a file edited since is "
        "read again from its start; unchanged items are skipped)."
    )
    assert kept_in(workdir / "state") == ([f"ok{i}" for i in range(5)], 5, 5, (None, 10))


@pytest.mark.slow
def test_a_feed_page_failing_exits_75_keeping_progress_and_the_rerun_continues(
    run_cli, env_file: Path, httpserver: HTTPServer
) -> None:
    host = f"localhost:{httpserver.port}"
    configure(env_file, SITE_URL=f"http://{host}", IMPORT_SOURCE=httpserver.url_for("/feed"))
    page1 = {"items": [item("a", host=host), item("b", host=host)], "next": "/feed/2"}
    httpserver.expect_request("/feed").respond_with_json(page1)
    httpserver.expect_request("/feed/2").respond_with_response(Response("boom", status=500))
    result = run_cli(SCRIPT)
    assert result.returncode == 75
    assert result.stderr.splitlines() == [
        f"Error: feed page {httpserver.url_for('/feed/2')} kept failing after 3 attempts: got 500, expected HTTP 200.",
        "Kept from this run: 2 inserted, 0 updated, 0 removed, 0 rejected, 2 URL(s) queued for purge; checkpoint "
        f"after {httpserver.url_for('/feed')} item 2. Safe to rerun later: it continues from the checkpoint.",
    ]
    state = env_file.parent / "state"
    assert kept_in(state) == (["a", "b"], 2, 0, (httpserver.url_for("/feed"), 2))

    httpserver.clear()
    httpserver.expect_request("/feed").respond_with_json(page1)
    httpserver.expect_request("/feed/2").respond_with_json({"items": [item("c", host=host)], "next": None})
    rerun = run_cli(SCRIPT, "--json")
    assert rerun.returncode == 0, rerun.stderr
    doc = json.loads(rerun.stdout)
    assert doc["resumed_from"].endswith("/feed item 2") and doc["counts"]["inserted"] == 1


def test_a_next_link_loop_exits_2(run_cli, env_file: Path, httpserver: HTTPServer) -> None:
    configure(env_file, SITE_URL=f"http://localhost:{httpserver.port}", IMPORT_SOURCE=httpserver.url_for("/a"))
    httpserver.expect_request("/a").respond_with_json({"items": [], "next": "/b"})
    httpserver.expect_request("/b").respond_with_json({"items": [], "next": "/a"})
    result = run_cli(SCRIPT)
    assert result.returncode == 2 and "loops back" in result.stderr


def test_check_db_passes_on_the_key_index_and_fails_on_a_full_scan(run_cli, env_file: Path, workdir: Path) -> None:
    configure(env_file)
    write_feed(workdir / "feed.jsonl", [item("a")])
    assert run_cli(SCRIPT).returncode == 0
    good = run_cli(SCRIPT, "check-db")
    assert good.returncode == 0 and "SEARCH items USING INDEX" in good.stdout
    broken = workdir / "broken.db"
    with sqlite3.connect(broken) as conn:
        conn.executescript(
            SCHEMA.replace("key TEXT PRIMARY KEY NOT NULL", "key TEXT NOT NULL")
            + f"PRAGMA user_version={SCHEMA_VERSION};"
        )
    bad = run_cli(SCRIPT, "check-db", env={"CONTENT_DB": str(broken)})
    assert bad.returncode == 1 and "full table scan for item by key" in bad.stderr


@pytest.mark.parametrize("command", [(), ("rollback",), ("runs",), ("check-db",)])
def test_help_ends_with_examples(run_cli, command: tuple[str, ...]) -> None:
    result = run_cli(SCRIPT, *(command or ("run",)), "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout


def test_a_missing_source_is_a_config_error_without_traceback(run_cli, env_file: Path) -> None:
    env_file.write_text(env_file.read_text() + "SITE_URL=http://www.example.com\n")
    result = run_cli(SCRIPT)
    assert result.returncode == 2 and result.stderr.startswith("Error: IMPORT_SOURCE is not set")
    assert "Traceback" not in result.stderr


def test_demo_feed_import_purges_and_rewarms_exactly_the_changed_pages(
    run_script, env_file: Path, workdir: Path
) -> None:
    import requests

    from demo import content_routes
    from demo.cloudflare_api import CloudflareEmulator
    from demo.site import DemoSite

    zone, token = "0123456789abcdef0123456789abcdef", "emulator-token-123"
    content_routes.configure(content_db=workdir / "state" / "content.db", revision=1)
    try:
        with (
            DemoSite() as site,
            CloudflareEmulator(token=token, zone=zone, site_purge_url=f"{site.url}/__edgecron/purge") as api,
        ):
            configure(
                env_file,
                SITE_URL=site.url,
                IMPORT_SOURCE=f"{site.url}/api/feed?page=1",
                CF_API_URL=api.base_url,
                CF_ZONE_ID=zone,
                CF_API_TOKEN=token,
                WARM_RATE=0,
            )
            first = run_script(SCRIPT, "--purge", "--warm", "--json")
            assert first.returncode == 0, first.stderr
            assert json.loads(first.stdout)["counts"]["inserted"] == 12
            calls_before = len(api.snapshot()["purges"])

            content_routes.configure(revision=2)
            second = run_script(SCRIPT, "--purge", "--warm", "--json")
            assert second.returncode == 0, second.stderr
            doc = json.loads(second.stdout)
            counts = doc["counts"]
            assert (counts["updated"], counts["inserted"], counts["removed"], counts["unchanged"]) == (2, 1, 1, 9)
            purged = {u for p in api.snapshot()["purges"][calls_before:] for u in p["body"].get("files", [])}
            assert purged == {f"{site.url}/articles/article-{n:02d}" for n in (3, 5, 7, 13)}
            assert doc["warm"]["requested"] == 3

            edited = requests.get(f"{site.url}/articles/article-03", timeout=5)
            untouched = requests.get(f"{site.url}/articles/article-01", timeout=5)
            removed = requests.get(f"{site.url}/articles/article-05", timeout=5)
    finally:
        content_routes.configure(revision=1)
        content_routes._config["content_db"] = None
    assert "(updated)" in edited.text and edited.headers["cf-cache-status"] == "HIT"  # re-warmed
    assert untouched.headers["cf-cache-status"] == "HIT"  # still cached from the first warm
    assert removed.status_code == 404


# --- a run that stops after committing batches says what it kept -------------------------------


def kept_in(state_dir: Path) -> tuple[list[str], int, int, tuple[str | None, int | None]]:
    """What content.db and state.db hold after one import run, to check the stop message against:
    the item keys, the URLs the run queued for purge, its rejects, and the checkpoint (page, index)."""
    with sqlite3.connect(state_dir / "content.db") as conn:
        (run_id,) = conn.execute("SELECT run_id FROM import_runs").fetchone()
        checkpoint = conn.execute("SELECT resume_page, resume_index FROM checkpoints").fetchone()
        rejects = conn.execute("SELECT count(*) FROM rejects").fetchone()[0]
    keys = [row[0] for row in item_rows(state_dir / "content.db")]
    return keys, sum(1 for _, source in outbox_of(state_dir) if source == f"import:{run_id}"), rejects, checkpoint


def feed_server(env_file: Path, httpserver: HTTPServer, pages: dict[str, object], **keys: object) -> str:
    """Serve `pages` (path → JSON document, or bytes as they are) as the import's feed; returns the host."""
    host = f"localhost:{httpserver.port}"
    configure(env_file, SITE_URL=f"http://{host}", IMPORT_SOURCE=httpserver.url_for("/a"), **keys)
    for path, page in pages.items():
        if isinstance(page, bytes):
            httpserver.expect_request(path).respond_with_data(page, content_type="application/json")
        else:
            httpserver.expect_request(path).respond_with_json(page)
    return host


def kept_line(counts: str, checkpoint: str, *, rerun: str = "Fix the cause above and rerun") -> str:
    return f"Kept from this run: {counts}; checkpoint after {checkpoint}. {rerun}: it continues from the checkpoint."


def test_a_loop_after_committed_batches_says_what_was_kept_and_the_rerun_continues(
    run_cli, env_file: Path, httpserver: HTTPServer
) -> None:
    host = f"localhost:{httpserver.port}"
    a, b = httpserver.url_for("/a"), httpserver.url_for("/b")
    pages = {"/a": {"items": [item("a", host=host), item("b", host=host)], "next": "/b"}}
    feed_server(env_file, httpserver, pages | {"/b": {"items": [item("c", host=host)], "next": "/a"}}, IMPORT_BATCH=2)
    result = run_cli(SCRIPT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"Error: feed next link loops back to {a}, a page already read: got '{a}', expected each next link to lead "
        "to a new page, and null on the last page.",
        kept_line("3 inserted, 0 updated, 0 removed, 0 rejected, 3 URL(s) queued for purge", f"{b} item 1"),
    ]
    state = env_file.parent / "state"
    assert kept_in(state) == (["a", "b", "c"], 3, 0, (b, 1))

    httpserver.clear()  # the feed is fixed: the rerun starts after the checkpoint, not at /a
    feed_server(env_file, httpserver, pages | {"/b": {"items": [item("c", host=host)], "next": None}})
    rerun = run_cli(SCRIPT, "--json")
    assert rerun.returncode == 0, rerun.stderr
    doc = json.loads(rerun.stdout)
    assert (doc["resumed_from"], doc["counts"]["read"]) == (f"{b} item 1", 0)
    assert [req.path for req, _ in httpserver.log] == ["/b"]


def test_an_off_host_next_link_after_items_says_what_was_kept(run_cli, env_file: Path, httpserver: HTTPServer) -> None:
    host = f"localhost:{httpserver.port}"
    away = "https://evil.example.net/p?page=2"
    feed_server(env_file, httpserver, {"/a": {"items": [item("a", host=host), item("b", host=host)], "next": away}})
    result = run_cli(SCRIPT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"Error: feed page {away} leads to a host that is not allowed: got 'evil.example.net', expected one of "
        "ALLOWED_HOSTS: localhost.",
        kept_line(
            "2 inserted, 0 updated, 0 removed, 0 rejected, 2 URL(s) queued for purge",
            f"{httpserver.url_for('/a')} item 2",
        ),
    ]
    state = env_file.parent / "state"
    assert kept_in(state) == (["a", "b"], 2, 0, (httpserver.url_for("/a"), 2))


def test_a_malformed_page_after_items_says_what_was_kept_also_in_json(
    run_cli, env_file: Path, httpserver: HTTPServer
) -> None:
    host = f"localhost:{httpserver.port}"
    a, b = httpserver.url_for("/a"), httpserver.url_for("/b")
    feed_server(env_file, httpserver, {"/a": {"items": [item("a", host=host)], "next": "/b"}, "/b": b"{oops"})
    state = env_file.parent / "state"
    result = run_cli(SCRIPT, "--json")
    assert result.returncode == 2
    what = f"feed page {b} is not valid JSON"
    assert result.stderr.splitlines() == [
        f"Error: {what}: got 'Expecting property name enclosed in double quotes: line 1 column 2 (char 1)', "
        "expected a JSON object with an items list.",
        kept_line("1 inserted, 0 updated, 0 removed, 0 rejected, 1 URL(s) queued for purge", f"{a} item 1"),
    ]
    doc = json.loads(result.stdout)
    assert doc["stopped"] == what and doc["error"]["what"] == what
    assert doc["committed"] == {
        "inserted": 1,
        "updated": 0,
        "removed": 0,
        "rejected": 0,
        "purges_queued": 1,
        "checkpoint": f"{a} item 1",
        "rerun_continues": True,
    }
    assert kept_in(state) == (["a"], 1, 0, (a, 1))


def test_the_reject_rate_limit_after_committed_batches_says_what_was_kept(
    run_cli, env_file: Path, httpserver: HTTPServer
) -> None:
    host = f"localhost:{httpserver.port}"
    b = httpserver.url_for("/b")
    bad = [item("x", host="evil.example.net"), {**item("y", host=host), "updated_at": "yesterday"}]
    pages = {
        "/a": {"items": [item(k, host=host) for k in "abc"], "next": "/b"},
        "/b": {"items": [*bad, item("d", host=host)], "next": "/c"},
        "/c": {"items": [item("e", host=host)], "next": None},  # never read: the run stops before it
    }
    feed_server(env_file, httpserver, pages, IMPORT_BATCH=3)
    result = run_cli(SCRIPT, "--max-reject-rate", "0.2")
    assert result.returncode == 2
    first = (
        f"{b} item 1: url: got 'http://evil.example.net/articles/x', expected an absolute http(s) URL on "
        "ALLOWED_HOSTS (localhost)"
    )
    second = f"{b} item 2: updated_at: got 'yesterday', expected an ISO 8601 timestamp with a timezone, such as 2026-01-31T12:00:00Z"
    assert result.stderr.splitlines() == [
        "2 item(s) rejected:",
        f"  {first}",
        f"  {second}",
        f"Error: 2 of 6 items rejected, over the limit of 20% (first: {first}; {second}): expected at most 20% "
        "rejected (--max-reject-rate).",
        kept_line("4 inserted, 0 updated, 0 removed, 2 rejected, 4 URL(s) queued for purge", f"{b} item 3"),
    ]
    state = env_file.parent / "state"
    assert kept_in(state) == (["a", "b", "c", "d"], 4, 2, (b, 3))
    assert "/c" not in [req.path for req, _ in httpserver.log]


def test_a_stop_that_committed_nothing_still_says_nothing_was_changed(
    run_cli, env_file: Path, httpserver: HTTPServer
) -> None:
    host = f"localhost:{httpserver.port}"
    a = httpserver.url_for("/a")
    feed_server(env_file, httpserver, {"/a": {"items": [], "next": "/b"}, "/b": {"items": [], "next": "/a"}})
    result = run_cli(SCRIPT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"Error: feed next link loops back to {a}, a page already read: got '{a}', expected each next link to lead "
        "to a new page, and null on the last page.",
        "Nothing was changed; fix the input and rerun.",
    ]
    assert item_rows(env_file.parent / "state" / "content.db") == []

    httpserver.clear()  # a dry run writes nothing, whatever it read before the stop
    pages = {"/a": {"items": [item("a", host=host)], "next": "/b"}, "/b": {"items": [], "next": "/a"}}
    feed_server(env_file, httpserver, pages)
    dry = run_cli(SCRIPT, "--dry-run", "--json")
    assert dry.returncode == 2
    assert dry.stderr.splitlines()[1:] == ["Nothing was changed; fix the input and rerun."]
    assert json.loads(dry.stdout)["committed"] is None
    assert item_rows(env_file.parent / "state" / "content.db") == []


def test_a_failure_after_the_import_finished_says_the_import_is_kept(run_cli, env_file: Path, workdir: Path) -> None:
    configure(env_file)
    write_feed(workdir / "feed.jsonl", [item("a"), item("b")])
    result = run_cli(SCRIPT, "--purge")  # CF_ZONE_ID is not set: found only when sending
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "Error: CF_ZONE_ID is not set: expected the zone id (32 hex characters).",
        "The import finished and is kept: 2 inserted, 0 updated, 0 removed, 0 rejected, 2 URL(s) queued for purge. "
        "Fix the cause above and rerun: it finds those items unchanged; queued purges stay in the outbox until sent.",
    ]
    assert kept_in(workdir / "state") == (["a", "b"], 2, 0, (None, None))
    assert len(outbox_of(workdir / "state", "pending")) == 2


def run_with_second_page_held(
    env_file: Path, base_env: dict[str, str], httpserver: HTTPServer, *, meanwhile: Callable[[subprocess.Popen], None]
) -> tuple[int, str]:
    """An import of /a (items a, b; one batch) then /b (c, d), with `meanwhile(process)` done while
    the run waits for /b, i.e. after its first commit; returns the exit code and stderr."""
    host = f"localhost:{httpserver.port}"
    requested, release = threading.Event(), threading.Event()

    def second_page(request: Request) -> Response:
        requested.set()
        release.wait(30)
        return Response(json.dumps({"items": [item("c", host=host), item("d", host=host)], "next": "/c"}))

    first = {"/a": {"items": [item("a", host=host), item("b", host=host)], "next": "/b"}}
    feed_server(env_file, httpserver, first, IMPORT_BATCH=2)
    httpserver.expect_request("/b").respond_with_handler(second_page)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / SCRIPT)], env=base_env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert requested.wait(30), "the run never asked for the second page"
        meanwhile(proc)
    finally:
        release.set()
        _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def test_sigterm_after_committed_batches_says_what_was_kept(
    env_file: Path, base_env: dict[str, str], httpserver: HTTPServer
) -> None:
    code, stderr = run_with_second_page_held(
        env_file, base_env, httpserver, meanwhile=lambda proc: proc.send_signal(signal.SIGTERM)
    )
    b = httpserver.url_for("/b")
    assert code == 143
    assert stderr.splitlines() == [
        f"Kept from this run: 4 inserted, 0 updated, 0 removed, 0 rejected, 4 URL(s) queued for purge; "
        f"checkpoint after {b} item 2.",
        "Interrupted by signal 15: finished items are kept; a rerun continues.",
    ]
    state = env_file.parent / "state"
    assert kept_in(state) == (["a", "b", "c", "d"], 4, 0, (b, 2))
    assert "/c" not in [req.path for req, _ in httpserver.log]


def test_a_state_db_broken_mid_run_says_what_was_kept_not_that_nothing_changed(
    env_file: Path, base_env: dict[str, str], httpserver: HTTPServer
) -> None:
    state = env_file.parent / "state"

    def break_the_outbox(proc: subprocess.Popen) -> None:  # the second batch's purges cannot be handed over
        with sqlite3.connect(state / "state.db", timeout=10) as conn:
            conn.execute("ALTER TABLE outbox RENAME TO outbox_gone")

    code, stderr = run_with_second_page_held(env_file, base_env, httpserver, meanwhile=break_the_outbox)
    b = httpserver.url_for("/b")
    assert code == 2
    assert stderr.splitlines() == [
        "Error: a database is unusable: got 'no such table: outbox', expected a SQLite file written by edgecron.",
        f"Kept from this run: 4 inserted, 0 updated, 0 removed, 0 rejected, 2 URL(s) queued for purge; "
        f"checkpoint after {b} item 2. Fix the cause above and rerun: it continues from the checkpoint.",
    ]
    with sqlite3.connect(state / "state.db") as conn:
        conn.execute("ALTER TABLE outbox_gone RENAME TO outbox")
    assert kept_in(state) == (["a", "b", "c", "d"], 2, 0, (b, 2))


def test_a_csv_body_over_the_field_limit_is_one_body_reject_at_its_record_and_the_rest_imports(
    run_cli, env_file: Path, workdir: Path
) -> None:
    limit = 131072  # csv's field limit when IMPORT_MAX_BODY_BYTES is below it
    configure(env_file, IMPORT_SOURCE=workdir / "feed.csv", IMPORT_MAX_BODY_BYTES=1000, IMPORT_MAX_REJECT_RATE=0.5)

    def row(key: str, body: str) -> str:
        return f'{key},http://www.example.com/articles/{key},2026-02-01T00:00:00Z,{key},"{body}"\n'

    smuggled = row("k9", "inside a quoted body")
    (workdir / "feed.csv").write_text(
        "id,url,updated_at,title,body\n"
        + row("k1", "one\ntwo")  # record 1, lines 2-3
        + row("k2", "x" * (limit + 1) + "\n" + smuggled.replace('"', '""'))  # record 2, lines 4-6
        + row("k3", "after")  # record 3, line 7
    )
    result = run_cli(SCRIPT)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "1 item(s) rejected:",
        f"  record 2 (lines 4-6): body: got {limit + 1 + 1 + len(smuggled)} bytes, expected at most 1000 bytes "
        "(IMPORT_MAX_BODY_BYTES)",
    ]
    assert [r[0] for r in item_rows(workdir / "state" / "content.db")] == ["k1", "k3"]  # not k9
    with sqlite3.connect(workdir / "state" / "content.db") as conn:
        assert conn.execute("SELECT position, item_key, field FROM rejects").fetchall() == [
            ("record 2 (lines 4-6)", "k2", "body")
        ]
