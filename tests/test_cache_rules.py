"""Cache rules as code: validation, judging, the real script against loopback sites, the page."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, RunScript
from edgecron import cache_rules as module
from edgecron.errors import InputError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

RULE = """
[[rules]]
name = "{name}"
owner = "web team"
match = "HTML"
expected = "cached for anonymous visitors"
rollback = "disable the rule"
cached = ["/"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (RULE.format(name="html").replace('owner = "web team"\n', ""), ["rule 'html'", "'owner'"]),
        (RULE.format(name="html").replace('rollback = "disable the rule"\n', ""), ["rule 'html'", "'rollback'"]),
        (RULE.format(name="html").replace('rollback = "disable the rule"', 'rollback = "  "'), ["'rollback'"]),
        (RULE.format(name="html").replace("cached = ", "cahced = "), ["rule 'html'", "unknown key 'cahced'"]),
        (RULE.format(name="html").replace('cached = ["/"]', 'cached = "/"'), ["'cached' is not a list"]),
        (RULE.format(name="html") + 'logged_in = "maybe"\n', ["'logged_in' is not valid", "bypass or cached or any"]),
        (RULE.format(name="html") + RULE.format(name="html"), ["'html' appears twice"]),
        (RULE.format(name="html").replace('name = "html"\n', ""), ["rule #1", "'name'"]),
        ("[[rules]\nname = 1", ["not valid TOML", "line 1"]),
        ("", ["has no rules"]),
    ],
)
def test_bad_rules_name_the_rule_and_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        module.load_rules(write(tmp_path, text))
    assert all(f in info.value.message for f in fragments), info.value.message


def test_example_on_another_host_is_refused(tmp_path: Path) -> None:
    rules = module.load_rules(
        write(tmp_path, RULE.format(name="html").replace('["/"]', '["https://evil.example.net/x"]'))
    )
    with pytest.raises(InputError) as info:
        module.plan_probes(rules, site_url="https://www.example.com", allowed_hosts=["www.example.com"])
    assert "rule 'html' example https://evil.example.net/x is on another host" in info.value.message
    assert "www.example.com" in info.value.message


def test_probes_request_each_example_anonymously_then_logged_in(tmp_path: Path) -> None:
    text = RULE.format(name="html") + 'bypass = ["/account"]\n'
    probes = module.plan_probes(
        module.load_rules(write(tmp_path, text)), site_url="https://w.example", allowed_hosts=["w.example"]
    )
    assert [(p.url, p.visitor, p.expected) for p in probes] == [
        ("https://w.example/", "anonymous", "cached"),
        ("https://w.example/", "logged-in", "bypass"),
        ("https://w.example/account", "anonymous", "bypass"),
        ("https://w.example/account", "logged-in", "bypass"),
    ]


@pytest.mark.parametrize(
    ("expected", "status", "cache_control", "verdict"),
    [
        ("cached", "HIT", "public, max-age=300", None),
        ("cached", "MISS", None, None),
        ("cached", "BYPASS", "public", "cf-cache-status BYPASS"),
        ("cached", "DYNAMIC", None, "cf-cache-status DYNAMIC"),
        ("cached", "HIT", "private, max-age=0", "Cache-Control: private"),
        ("cached", None, "public", "no cf-cache-status header"),
        ("bypass", "BYPASS", "private, no-store", None),
        ("bypass", "DYNAMIC", None, None),
        ("bypass", "HIT", "private", "cf-cache-status HIT"),
        ("bypass", "MISS", "private", "cf-cache-status MISS"),
        ("bypass", "BYPASS", "public, max-age=60", "public Cache-Control"),
        ("bypass", "BYPASS", "s-maxage=60", "public Cache-Control"),
    ],
)
def test_judge(expected: str, status: str | None, cache_control: str | None, verdict: str | None) -> None:
    result = module.judge(expected, status, cache_control)
    assert (result is None) if verdict is None else (result is not None and verdict in result)


# --- the real script against a loopback site with one planted misconfiguration ---------------------------

SITE_RULES = """
login_cookie = "sessionid=check"

[[rules]]
name = "static"
owner = "ops"
match = "/static/"
expected = "cached for everyone"
rollback = "disable 'static'"
logged_in = "any"
cached = ["/static/app.css"]

[[rules]]
name = "html"
owner = "web"
match = "HTML without a login cookie"
expected = "anonymous cached, logged-in bypass"
rollback = "disable 'html'"
cached = ["/", "/pricing"]
bypass = ["/account"]
"""


def site_handler(request: Request) -> Response:
    """Cloudflare-like answers; /pricing is (wrongly) cached for logged-in visitors too."""
    logged_in = "sessionid=" in (request.headers.get("Cookie") or "")
    path = request.path
    if path.startswith("/static/"):
        headers = {"cf-cache-status": "HIT", "Cache-Control": "public, max-age=86400"}
    elif path == "/account" or (logged_in and path != "/pricing"):
        headers = {"cf-cache-status": "BYPASS", "Cache-Control": "private, no-store"}
    else:
        headers = {"cf-cache-status": "HIT", "Cache-Control": "public, max-age=300"}
    return Response("<h1>page</h1>", headers=headers)


def test_check_reports_the_planted_mismatch_and_pings(
    tmp_path: Path, httpserver: HTTPServer, run_cli: RunScript
) -> None:
    httpserver.expect_request("/hc/cache-rules/start", method="POST").respond_with_data("OK")
    httpserver.expect_request("/hc/cache-rules/1", method="POST").respond_with_data("OK")
    httpserver.expect_request("/hc", method="POST").respond_with_data("no")  # never matched
    for path in ("/", "/pricing", "/account", "/static/app.css"):
        httpserver.expect_request(path, method="GET").respond_with_handler(site_handler)
    rules = write(tmp_path, SITE_RULES)
    result = run_cli(
        "check_cache_rules.py",
        "check",
        "--rules",
        str(rules),
        "--site",
        httpserver.url_for("/"),
        "--json",
        env={"HEALTHCHECKS_URL": httpserver.url_for("/hc"), "EDGECRON_TRIGGER": "cron"},
    )
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["summary"] == {"requests": 7, "mismatches": 1, "errors": 0}
    (mismatch,) = doc["mismatches"]
    assert (mismatch["rule"], mismatch["url"].rsplit("/", 1)[1], mismatch["visitor"]) == (
        "html",
        "pricing",
        "logged-in",
    )
    assert "expected bypass, got cf-cache-status HIT" in mismatch["mismatch"]
    assert "pricing as logged-in" in result.stderr
    gets = [req for req, _ in httpserver.log if req.method == "GET"]
    assert [(r.path, r.headers.get("Cookie")) for r in gets][:3] == [
        ("/static/app.css", None),
        ("/", None),
        ("/", "sessionid=check"),
    ]
    pinged = [(req.path, req.args["rid"]) for req, _ in httpserver.log if req.method == "POST"]
    assert [p for p, _ in pinged] == ["/hc/cache-rules/start", "/hc/cache-rules/1"]
    assert pinged[0][1] == pinged[1][1] and uuid.UUID(pinged[0][1])


def test_dry_run_requests_nothing(tmp_path: Path, httpserver: HTTPServer, run_cli: RunScript) -> None:
    rules = write(tmp_path, SITE_RULES)
    result = run_cli(
        "check_cache_rules.py", "check", "--rules", str(rules), "--site", httpserver.url_for("/"), "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[dry-run] GET ") == 7
    assert httpserver.log == []


def test_unreachable_site_exits_75(tmp_path: Path, run_cli: RunScript) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli(
        "check_cache_rules.py",
        "check",
        "--rules",
        str(write(tmp_path, SITE_RULES)),
        "--site",
        f"http://127.0.0.1:{port}",
    )
    assert result.returncode == 75, result.stderr
    assert result.stderr.startswith("Error: no example could be requested")


def test_bad_rules_file_exits_2_naming_rule_and_key(tmp_path: Path, run_cli: RunScript) -> None:
    rules = write(tmp_path, SITE_RULES.replace("rollback = \"disable 'html'\"\n", ""))
    result = run_cli("check_cache_rules.py", "check", "--rules", str(rules), "--site", "https://www.example.com")
    assert result.returncode == 2
    assert "rule 'html' key 'rollback' is missing" in result.stderr and "Traceback" not in result.stderr


def test_demo_site_has_exactly_the_planted_misconfiguration(run_cli: RunScript) -> None:
    site_module = pytest.importorskip("demo.site", reason="demo/site.py (by the lead) not available")
    with site_module.DemoSite() as site:
        result = run_cli("check_cache_rules.py", "check", "--site", site.url, "--json")
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert [(m["rule"], m["url"].removeprefix(site.url), m["visitor"]) for m in doc["mismatches"]] == [
        ("public-html", "/pricing", "logged-in")
    ]


# --- the page is generated from the TOML ---------------------------------------------------------------


def test_cache_rules_md_is_rendered_from_the_toml(run_cli: RunScript) -> None:
    rules = module.load_rules(ROOT / "notes" / "cache-rules.toml")
    assert (ROOT / "notes" / "cache-rules.md").read_text() == module.render_markdown(rules)
    for rule in rules.rules:
        assert rule.owner and rule.rollback
    assert run_cli("check_cache_rules.py", "render", "--check").returncode == 0


def test_render_check_fails_when_the_page_drifts(tmp_path: Path, run_cli: RunScript) -> None:
    page = tmp_path / "page.md"
    page.write_text("# stale\n")
    rules = str(ROOT / "notes" / "cache-rules.toml")
    stale = run_cli("check_cache_rules.py", "render", "--rules", rules, "--output", str(page), "--check")
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert run_cli("check_cache_rules.py", "render", "--rules", rules, "--output", str(page)).returncode == 0
    assert "## public-html" in page.read_text()
