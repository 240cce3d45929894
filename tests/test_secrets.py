"""Secrets never leave: the API token, feed credentials and secret-named query parameters.

The fake Cloudflare API here echoes every header it got in its error messages (as real APIs and
proxies sometimes do), the fake feed echoes its key in `next` links and errors. The real scripts
run as scheduled (EDGECRON_TRIGGER=cron) with a ping server; afterwards stdout, stderr, every file
under STATE_DIR (state.db, content.db, WAL files, event logs, locks, metrics) and every byte the
ping server received are searched for the secret. Each subprocess test failed on the code before
issue 10; each also checks that the secret did reach the upstream, so it cannot pass vacuously.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunScript
from edgecron.config import load_settings
from edgecron.errors import ConfigError
from edgecron.feed import Position
from edgecron.feedhttp import HttpSource
from edgecron.http import make_session
from edgecron.redact import redact, redact_value, register_secret
from pytest_httpserver import HTTPServer
from statedb import state_tables
from werkzeug import Request, Response

ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "cfut-7Hq2vX9kLmN4pR8sT1wY5zA3bC6dE0fG"
FEED_KEY = "fk-93be7a1c55d04e2f"
AUTH_KEY = "ak-0f6c2d9e8b7a4153"
CRON = {"EDGECRON_TRIGGER": "cron"}
ACCESS_LINE = '127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "ua"\n'


def files_under(directory: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def assert_nowhere(
    secret: str,
    *,
    outputs: list[str],
    state_dir: Path,
    server: HTTPServer,
    ping_prefix: str,
    state_db: Path | str | None = None,
) -> None:
    """The secret is in no output, no file under STATE_DIR, no row of a PostgreSQL `state_db` and no
    ping the monitor received."""
    for text in outputs:
        assert secret not in text, text
    files = list(files_under(state_dir))
    assert files, "the runs wrote nothing under STATE_DIR"
    for path, data in files:
        assert secret.encode() not in data, f"{secret} found in {path}"
    if isinstance(state_db, str):
        tables = state_tables(state_db)
        assert tables.get("outbox"), "the runs stored nothing in STATE_DB"
        for table, rows in tables.items():
            assert secret not in repr(rows), f"{secret} found in table {table}"
    pings = [request for request, _ in server.log if request.path.startswith(ping_prefix)]
    assert pings, "no ping was sent"
    for request in pings:
        assert secret not in request.url
        assert secret.encode() not in request.get_data(), request.get_data()


def echo_headers(status: int, code: int):  # type: ignore[no-untyped-def]
    """A Cloudflare-style error that quotes every request header, Authorization first."""

    def handler(request: Request) -> Response:
        headers = sorted(request.headers.items(), key=lambda item: item[0] != "Authorization")
        quoted = "; ".join(f"{name}: {value}" for name, value in headers)
        errors = [
            {"code": code, "message": f"request headers were {quoted}"},
            {"code": code, "message": f'the request carried {{"token": "{TOKEN}"}}'},
        ]
        body = json.dumps({"success": False, "errors": errors, "messages": [], "result": None})
        return Response(body, status=status, content_type="application/json")

    return handler


# --- the Cloudflare API token -------------------------------------------------------------------


@pytest.mark.both_backends
def test_an_api_that_echoes_the_authorization_header_leaks_the_token_nowhere(
    run_cli: RunScript, env_file: Path, workdir: Path, httpserver: HTTPServer, state_db: Path | str
) -> None:
    api_path = f"/client/v4/zones/{ZONE}/purge_cache"
    state_dir = workdir / "state"
    access_log = workdir / "access.log"
    access_log.write_text(ACCESS_LINE)
    with env_file.open("a") as fh:
        fh.write(
            f"SITE_URL=https://www.example.com\nCF_API_TOKEN={TOKEN}\nCF_ZONE_ID={ZONE}\n"
            f"CF_API_URL={httpserver.url_for('/client/v4')}\nHEALTHCHECKS_URL={httpserver.url_for('/hc')}\n"
            f"METRICS_DIR={state_dir / 'metrics'}\nACCESS_LOGS={access_log}\nCHECK_OUTBOX_MAX_ATTEMPTS=1\n"
        )
    httpserver.expect_request(re.compile("^/hc/")).respond_with_data("OK")

    # A 400 quoting the headers: the URL is held in the outbox with the API's message as its error.
    httpserver.expect_oneshot_request(api_path, method="POST").respond_with_handler(echo_headers(400, 1012))
    outputs = []
    refused = run_cli("purge_cache.py", "urls", "https://www.example.com/a", "--json", env=CRON)
    assert refused.returncode == 1, refused.stderr
    outputs += [refused.stdout, refused.stderr]
    # A 403 quoting the headers: the run fails as a config error, its error recorded and pinged.
    httpserver.expect_oneshot_request(api_path, method="POST").respond_with_handler(echo_headers(403, 10000))
    failed = run_cli("purge_cache.py", "outbox", "--retry", env=CRON)
    assert failed.returncode == 2, failed.stderr
    outputs += [failed.stdout, failed.stderr]

    sent = [request for request, _ in httpserver.log if request.path == api_path]
    assert [r.headers["Authorization"] for r in sent] == [f"Bearer {TOKEN}"] * 2  # it did reach the API
    assert "Bearer ***" in failed.stderr  # the message is still there, with the token masked
    for args in (("purge_cache.py", "outbox"), ("purge_cache.py", "outbox", "--json")):
        shown = run_cli(*args)
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    assert "Bearer ***" in outputs[-2]  # the outbox's last error
    for args in (("jobs.py", "status"), ("jobs.py", "status", "--json"), ("check_logs.py", "--json")):
        shown = run_cli(*args)
        outputs += [shown.stdout, shown.stderr]
    assert "***" in outputs[-2]  # check_logs' stuck-outbox finding quotes the last error
    assert "Bearer ***" in repr(state_tables(state_db)["outbox"])  # stored: the scan below reads it
    assert_nowhere(
        TOKEN, outputs=outputs, state_dir=state_dir, server=httpserver, ping_prefix="/hc/", state_db=state_db
    )


# --- a key in IMPORT_SOURCE's query string --------------------------------------------------------


@pytest.mark.slow
def test_a_key_in_the_feed_url_is_sent_to_the_feed_and_stored_printed_logged_and_pinged_nowhere(
    run_script: RunScript, env_file: Path, workdir: Path, httpserver: HTTPServer
) -> None:
    base = httpserver.url_for("").rstrip("/")
    first = {
        "items": [
            {"id": "1", "url": f"{base}/a", "updated_at": "2026-11-30T10:00:00Z", "title": "A", "body": "a"},
            {"id": "2", "url": "not a url", "updated_at": "2026-11-30T10:00:00Z", "title": "B", "body": "b"},
        ],
        "next": f"/feed?api_key={FEED_KEY}&cursor=2",
    }
    httpserver.expect_request("/feed", query_string=f"api_key={FEED_KEY}").respond_with_json(first)
    httpserver.expect_request("/feed", query_string=f"api_key={FEED_KEY}&cursor=2").respond_with_data(
        f"upstream error for api_key={FEED_KEY}", status=500
    )
    httpserver.expect_request(re.compile("^/hc/")).respond_with_data("OK")
    with env_file.open("a") as fh:
        fh.write(
            f"SITE_URL={base}\nIMPORT_SOURCE={base}/feed?api_key={FEED_KEY}\n"
            f"IMPORT_MAX_REJECT_RATE=1\nHEALTHCHECKS_URL={httpserver.url_for('/hc')}\n"
        )
    result = run_script("import_stale.py", "--json", env=CRON, timeout=120)
    assert result.returncode == 75, result.stderr  # page 2 kept failing
    outputs = [result.stdout, result.stderr]
    assert any(FEED_KEY in r.url for r, _ in httpserver.log if r.path == "/feed")  # the key did reach the feed
    assert "api_key=***" in result.stderr
    status = run_script("jobs.py", "status", "--json")
    outputs += [status.stdout, status.stderr]
    assert_nowhere(FEED_KEY, outputs=outputs, state_dir=workdir / "state", server=httpserver, ping_prefix="/hc/")


def test_a_resumed_feed_page_gets_its_masked_key_back_from_the_configured_url(httpserver: HTTPServer) -> None:
    page2 = {"items": [{"n": 1}, {"n": 2}, {"n": 3}], "next": None}
    httpserver.expect_request("/feed", query_string=f"key={FEED_KEY}&cursor=2").respond_with_json(page2)
    url = httpserver.url_for("/feed") + f"?key={FEED_KEY}"
    source = HttpSource(
        url, session=make_session(retries=0), allowed_hosts=["localhost"], timeout=5, max_page_bytes=1 << 20
    )
    stored_page = httpserver.url_for("/feed") + "?key=***&cursor=2"  # as a checkpoint holds it
    records = list(source.records(Position(1, page=stored_page)))
    assert [r.data for r in records] == [{"n": 2}, {"n": 3}]  # resumed after item 1 of that page
    assert {r.position.page for r in records} == {stored_page}
    assert FEED_KEY not in source.name


def test_a_resumed_page_whose_masked_value_is_unknown_starts_again_from_the_first_page(
    httpserver: HTTPServer,
) -> None:
    first = {"items": [{"n": 1}], "next": None}
    httpserver.expect_request("/feed", query_string=f"key={FEED_KEY}").respond_with_json(first)
    url = httpserver.url_for("/feed") + f"?key={FEED_KEY}"
    source = HttpSource(
        url, session=make_session(retries=0), allowed_hosts=["localhost"], timeout=5, max_page_bytes=1 << 20
    )
    signed_page = httpserver.url_for("/feed") + "?key=***&sig=***&cursor=2"  # a per-page signature
    assert [r.data for r in source.records(Position(1, page=signed_page))] == [{"n": 1}]


# --- IMPORT_AUTH_HEADER: a proper place for feed credentials ------------------------------------------


def test_the_feed_auth_header_goes_to_the_feed_host_only_and_is_stored_nowhere(
    run_cli: RunScript, env_file: Path, workdir: Path, httpserver: HTTPServer
) -> None:
    other = HTTPServer(host="127.0.0.1", port=0)  # another allowed host the feed links to
    other.start()
    try:
        other.expect_request("/more").respond_with_json({"items": [], "next": None})
        base = httpserver.url_for("").rstrip("/")
        page = {
            "items": [{"id": "1", "url": f"{base}/a", "updated_at": "2026-11-30T10:00:00Z", "title": "A", "body": "a"}],
            "next": other.url_for("/more"),
        }
        httpserver.expect_request("/feed", headers={"X-Api-Key": AUTH_KEY}).respond_with_json(page)
        httpserver.expect_request("/feed").respond_with_data(f"401: no X-Api-Key ({AUTH_KEY} expected)", status=401)
        httpserver.expect_request(re.compile("^/hc/")).respond_with_data("OK")
        with env_file.open("a") as fh:
            fh.write(
                f"SITE_URL={base}\nALLOWED_HOSTS=localhost,127.0.0.1\nIMPORT_SOURCE={base}/feed\n"
                f"IMPORT_AUTH_HEADER=X-Api-Key: {AUTH_KEY}\nHEALTHCHECKS_URL={httpserver.url_for('/hc')}\n"
            )
        result = run_cli("import_stale.py", "--json", env=CRON)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["counts"]["inserted"] == 1
        feed_requests = [r for r, _ in httpserver.log if r.path == "/feed"]
        assert [r.headers.get("X-Api-Key") for r in feed_requests] == [AUTH_KEY]
        assert all(AUTH_KEY not in r.url for r in feed_requests)  # never in the URL
        other_requests = [r for r, _ in other.log]
        assert len(other_requests) == 1 and "X-Api-Key" not in other_requests[0].headers
    finally:
        other.clear()
        other.stop()
    assert_nowhere(
        AUTH_KEY,
        outputs=[result.stdout, result.stderr],
        state_dir=workdir / "state",
        server=httpserver,
        ping_prefix="/hc/",
    )


def test_the_feed_auth_header_can_come_from_a_file(workdir: Path) -> None:
    secret_file = workdir / "feed-auth"
    secret_file.write_text(f"Authorization: Bearer {AUTH_KEY}\n")
    cfg = load_settings(environ={"IMPORT_AUTH_FILE": str(secret_file)}, env_file=None)
    header = cfg.import_auth
    assert header is not None and header.name == "Authorization"
    assert header.value.reveal() == f"Bearer {AUTH_KEY}"
    assert AUTH_KEY not in repr(cfg.parsed) and AUTH_KEY not in json.dumps(cfg.redacted(), default=str)


def test_a_feed_auth_file_others_can_read_is_a_warning_with_the_chmod_that_fixes_it(workdir: Path) -> None:
    secret_file = workdir / "feed-auth"
    secret_file.write_text(f"X-Api-Key: {AUTH_KEY}\n")
    secret_file.chmod(0o644)
    cfg = load_settings(environ={"IMPORT_AUTH_FILE": str(secret_file), "STATE_DIR": str(workdir)}, env_file=None)
    assert (
        f"Warning: {secret_file} (IMPORT_AUTH_FILE) is readable or writable by others (mode 0644); fix: chmod 600 {secret_file}"
        in cfg.warnings
    )


def test_a_feed_auth_file_that_is_not_text_is_a_config_error(workdir: Path) -> None:
    secret_file = workdir / "feed-auth"
    secret_file.write_bytes(b"X-Api-Key: \xff\xfe" + AUTH_KEY.encode())
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"IMPORT_AUTH_FILE": str(secret_file)}, env_file=None)
    assert caught.value.message.startswith("IMPORT_AUTH_FILE is not text")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"IMPORT_AUTH_HEADER": f"X-Api-Key {AUTH_KEY}"}, "IMPORT_AUTH_HEADER is not a header line"),
        ({"IMPORT_AUTH_HEADER": f"Bad Name: {AUTH_KEY}"}, "IMPORT_AUTH_HEADER is not a header line"),
        ({"IMPORT_AUTH_HEADER": f"X-Api-Key: {AUTH_KEY}\r\nX-Evil: 1"}, "holds a control character"),
        ({"IMPORT_AUTH_HEADER": f"X-Api-Key: {AUTH_KEY}", "IMPORT_AUTH_FILE": "/x"}, "are both set"),
    ],
)
def test_a_malformed_feed_auth_header_is_a_config_error_that_does_not_quote_it(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ, env_file=None)
    assert message in caught.value.message
    assert AUTH_KEY not in caught.value.message and AUTH_KEY not in json.dumps(caught.value.as_dict())


# --- the redaction step -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.DEF-123_456", "Authorization: Bearer ***"),
        ('{"authorization": "bearer abcdefghij"}', '{"authorization": "bearer ***"}'),
        ("X-Api-Key: 0123456789", "X-Api-Key: ***"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        ("authorization=Token abc123def; path=/", "authorization=***; path=/"),
        ("https://f.example/x?api_key=K1&page=2", "https://f.example/x?api_key=***&page=2"),
        ("GET /a?page=2&access_token=zz9&sig=abc#top", "GET /a?page=2&access_token=***&sig=***#top"),
        ("?X-Amz-Signature=ab12&X-Amz-Credential=AKIA%2F", "?X-Amz-Signature=***&X-Amz-Credential=***"),
        ("password=hunter2 user=bob", "password=*** user=bob"),
        ("CF_API_TOKEN=abcdef123", "CF_API_TOKEN=***"),
        ("https://bob:s3cret@feed.example/x", "https://bob:***@feed.example/x"),
    ],
)
def test_redact_hides_credentials_in_the_forms_upstreams_echo_them(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Cloudflare refused the API token for this zone: expected a token with Zone → Cache Purge → Purge.",
        "https://www.example.com/blog?page=2&sort=new&monkey=1",
        "basic information about the key=value format",
        "Nothing was changed; fix CF_API_TOKEN / CF_ZONE_ID in .env, then rerun.",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text.replace("key=value", "key=***")


def test_a_registered_secret_is_hidden_in_any_form_of_message_and_inside_documents() -> None:
    register_secret("zz-registered-9f8e7d")
    assert redact("the server said: zz-registered-9f8e7d is not valid") == "the server said: *** is not valid"
    assert redact_value({"errors": [("x", "zz-registered-9f8e7dzz")], "n": 1}) == {"errors": [["x", "***zz"]], "n": 1}


def test_a_log_glob_that_reaches_the_env_file_shows_no_token_in_its_malformed_line_samples(
    run_cli: RunScript, env_file: Path, workdir: Path
) -> None:
    logs = workdir / "logs"
    logs.mkdir()
    (logs / "access.log").write_text(ACCESS_LINE * 3)
    (logs / "other.log").symlink_to(env_file)  # planted by whoever can write the log directory
    env_file.write_text(f"CF_API_TOKEN={TOKEN}\n" + env_file.read_text())  # the first "bad line" is shown
    outputs = []
    for args in (("--summary",), ("--json",), ("--no-state", "--json")):
        result = run_cli("check_logs.py", "--log", f"{logs}/*.log", *args)
        outputs += [result.stdout, result.stderr]
    for text in outputs:
        assert TOKEN not in text, text
    for path, data in files_under(workdir / "state"):
        assert TOKEN.encode() not in data, path
