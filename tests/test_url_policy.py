"""The one URL policy (edgecron.urls) on every path that fetches or purges, against real servers.

The reported bypass: `http://127.0.0.2:P\\@127.0.0.1:P/x` passed the old allowlist (urlsplit reads
host 127.0.0.1) while urllib3 and requests connect to 127.0.0.2. Two loopback servers bound to the
same port on 127.0.0.1 (allowed) and 127.0.0.2 (the "internal" one) tell where a request really
went; the internal one must never be reached. Hypothesis then generates URLs from the pieces such
tricks are made of and checks that whatever the policy allows connects to the allowed host.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import urllib3
from edgecron.config import load_settings
from edgecron.dropped import DroppedUrls
from edgecron.errors import InputError
from edgecron.feed import Position, RawRecord, Validator
from edgecron.feedhttp import HttpSource
from edgecron.http import host_allowed, make_session, open_checked
from edgecron.purge import parse_manifest, plan_request
from edgecron.sitemap import SitemapReader
from edgecron.urls import UrlPolicy, UrlRefused
from edgecron.warm import Warmer, WarmOptions, plan_urls
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from loopback_site import LoopbackSite, Route, loopback_has_127_0_0_2, loopback_pair

from demo.cloudflare_api import CloudflareEmulator

ALLOWED = ("127.0.0.1",)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[LoopbackSite, LoopbackSite]]:
    if not loopback_has_127_0_0_2():
        pytest.skip("127.0.0.2 cannot be bound here (the loopback is not a /8)")
    allowed, internal = loopback_pair()
    allowed.routes["/ok"] = Route(body=b"allowed")
    internal.default = Route(body=b"internal secret")  # whatever path a smuggled URL ends up with
    yield allowed, internal
    allowed.close()
    internal.close()


@pytest.fixture
def allowed(pair: tuple[LoopbackSite, LoopbackSite]) -> LoopbackSite:
    return pair[0]


@pytest.fixture
def internal(pair: tuple[LoopbackSite, LoopbackSite]) -> Iterator[LoopbackSite]:
    site = pair[1]
    site.hits.clear()
    yield site
    assert site.hits == [], "a request reached the host that is not allowed"


def smuggle(site: LoopbackSite) -> str:
    """The reported URL: host 127.0.0.1 to urlsplit, 127.0.0.2 to urllib3 and requests."""
    return f"http://127.0.0.2:{site.port}\\@127.0.0.1:{site.port}/x"


# --- the finding, pinned -------------------------------------------------------------------------


def test_urllib3_connects_to_127_0_0_2_where_urlsplit_reads_127_0_0_1_which_is_why_the_policy_uses_urllib3(
    allowed: LoopbackSite, pair: tuple[LoopbackSite, LoopbackSite]
) -> None:
    url = smuggle(allowed)
    assert urlsplit(url).hostname == "127.0.0.1"  # what the old allowlist checked
    internal = pair[1]
    internal.hits.clear()
    answer = urllib3.PoolManager(retries=False).request("GET", url, timeout=5)
    assert answer.data == b"internal secret" and internal.hits  # where the client really went
    internal.hits.clear()
    with pytest.raises(UrlRefused) as refused:
        UrlPolicy(ALLOWED).check(url)
    assert refused.value.reason == "unsafe-url"
    assert not host_allowed(url, ALLOWED)


# --- every path that fetches or purges -----------------------------------------------------------


def test_sitemap_loc_and_index_child_are_refused(allowed: LoopbackSite, internal: LoopbackSite) -> None:
    bad = smuggle(allowed)
    allowed.routes["/index.xml"] = Route(
        body=("<sitemapindex><sitemap><loc>{bad}</loc></sitemap><sitemap><loc>{good}</loc></sitemap></sitemapindex>")
        .format(bad=bad.replace("/x", "/child.xml"), good=allowed.url("/urls.xml"))
        .encode()
    )
    allowed.routes["/urls.xml"] = Route(
        body=f"<urlset><url><loc>{bad}</loc></url><url><loc>{allowed.url('/ok')}</loc></url></urlset>".encode()
    )
    reader = SitemapReader(make_session(retries=0), allowed_hosts=ALLOWED, timeout=5)
    entries = [e.url for e in reader.iter_entries([allowed.url("/index.xml")])]
    assert entries == [allowed.url("/ok")]
    assert reader.report.dropped.counts == {"invalid": 2}


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_location_is_checked_before_it_is_followed(
    allowed: LoopbackSite, internal: LoopbackSite, status: int
) -> None:
    allowed.routes["/moved"] = Route(status, headers={"Location": smuggle(allowed)})
    with pytest.raises(InputError, match="refused"):
        open_checked(make_session(retries=0), allowed.url("/moved"), allowed_hosts=ALLOWED, timeout=5)
    reader = SitemapReader(make_session(retries=0), allowed_hosts=ALLOWED, timeout=5)
    assert list(reader.iter_entries([allowed.url("/moved")])) == []
    assert "refused" in reader.report.problems[0].message


def test_feed_next_link_is_refused(allowed: LoopbackSite, internal: LoopbackSite) -> None:
    allowed.routes["/feed"] = Route(body=json.dumps({"items": [], "next": smuggle(allowed)}).encode())
    source = HttpSource(
        allowed.url("/feed"), session=make_session(retries=0), allowed_hosts=ALLOWED, timeout=5, max_page_bytes=1 << 20
    )
    with pytest.raises(InputError, match="refused"):
        list(source.records())


def test_feed_item_url_is_rejected_and_never_rewarmed(allowed: LoopbackSite, internal: LoopbackSite) -> None:
    validator = Validator(allowed_hosts=ALLOWED, max_body_bytes=1 << 20)
    item = {"id": "1", "url": smuggle(allowed), "updated_at": "2026-12-01T00:00:00Z", "title": "t", "body": "b"}
    rejected = validator.check(RawRecord(Position(1), item))
    assert getattr(rejected, "field", None) == "url"
    dropped = DroppedUrls()  # the re-warm of changed items (and purge --warm) plans with this
    assert list(plan_urls([smuggle(allowed)], allowed_hosts=ALLOWED, bypass_paths=(), dropped=dropped)) == []
    assert dropped.counts == {"invalid": 1}


def test_warm_request_is_refused_even_when_not_planned(allowed: LoopbackSite, internal: LoopbackSite) -> None:
    result = Warmer(WarmOptions(rate=0, retries=0, allowed_hosts=ALLOWED)).fetch_one(smuggle(allowed))
    assert result.outcome == "failed" and "not requested" in (result.error or "")


def test_purge_urls_and_deploy_manifest_keys_are_refused(allowed: LoopbackSite) -> None:
    plan = plan_request("url", [smuggle(allowed), allowed.url("/ok")], site_url="", allowed_hosts=ALLOWED)
    assert plan.items["url"] == [allowed.url("/ok")]
    assert [r.value for r in plan.rejected] == [smuggle(allowed)]
    manifest = json.dumps({"urls": {smuggle(allowed): "h1"}})
    with pytest.raises(InputError, match="malformed"):
        parse_manifest(manifest, source="m.json", site_url="", allowed_hosts=ALLOWED)


def test_warm_script_end_to_end_never_reaches_the_internal_host(
    run_cli, env_file: Path, allowed: LoopbackSite, internal: LoopbackSite
) -> None:  # type: ignore[no-untyped-def]
    bad = smuggle(allowed)
    allowed.routes["/s.xml"] = Route(
        body=f"<urlset><url><loc>{bad}</loc></url><url><loc>{allowed.url('/ok')}</loc></url></urlset>".encode()
    )
    with env_file.open("a") as fh:
        fh.write(f"SITE_URL=http://127.0.0.1:{allowed.port}\nWARM_RATE=0\n")
    proc = run_cli("warm_cache.py", "--sitemap", allowed.url("/s.xml"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["summary"]["requested"] == 1 and doc["dropped"]["counts"] == {"invalid": 1}


def test_purge_script_urls_warm_end_to_end_never_reaches_the_internal_host(
    run_cli, env_file: Path, allowed: LoopbackSite, internal: LoopbackSite
) -> None:  # type: ignore[no-untyped-def]
    zone, token = "0123456789abcdef0123456789abcdef", "tok-url-policy"
    with CloudflareEmulator(token=token, zone=zone, plan="free") as api:
        with env_file.open("a") as fh:
            fh.write(f"SITE_URL=http://127.0.0.1:{allowed.port}\nCF_API_TOKEN={token}\nCF_ZONE_ID={zone}\n")
            fh.write(f"CF_API_URL={api.base_url}\nWARM_RATE=0\n")
        allowed.hits.clear()
        proc = run_cli("purge_cache.py", "urls", smuggle(allowed), "/ok", "--warm")
        purges = [u for p in api.snapshot()["purges"] for u in p["body"].get("files", [])]
    assert proc.returncode == 1, proc.stderr  # one URL rejected, the rest purged and warmed
    assert "refused" in proc.stderr
    assert purges == [allowed.url("/ok")]
    assert allowed.hits == ["/ok"]


# --- what already held keeps holding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://evil.example.net/", "off-host"),
        ("http://127.0.0.2/", "off-host"),
        ("http://user@127.0.0.1/", "unsafe-url"),
        ("http://127.0.0.2@127.0.0.1/", "unsafe-url"),
        ("http://127.0.0.1@127.0.0.2/", "unsafe-url"),
        ("http://127.0.0.1./", "unsafe-url"),  # trailing dot
        ("http://2130706433/", "off-host"),  # decimal IP of 127.0.0.1
        ("http://127.1/", "off-host"),
        ("http://0x7f.0.0.1/", "off-host"),
        ("http://127.0.0.1%2f@127.0.0.2/", "unsafe-url"),
        ("http://127.0.0.1%00.evil/", "unsafe-url"),
        ("http://127.0.0.1\t/", "unsafe-url"),
        ("http://127.0.0.1\n.evil.net/", "unsafe-url"),
        ("http://127.0.0.1 .evil.net/", "unsafe-url"),
        ("http://127.0.0.1\uff0f@127.0.0.2/", "unsafe-url"),  # fullwidth solidus
        ("http://127.0.0.1:99999/", "unsafe-url"),
        ("http:/127.0.0.1/", "not-http"),
        ("ftp://127.0.0.1/", "not-http"),
        ("//127.0.0.1/", "not-http"),
    ],
)
def test_tricks_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        UrlPolicy(ALLOWED).check(url)
    assert refused.value.reason == reason


def test_the_normal_form_is_what_gets_requested() -> None:
    policy = UrlPolicy(("www.example.com",))
    assert policy.check("HTTPS://WWW.Example.COM/a b?q=1#frag") == "https://www.example.com/a%20b?q=1"
    assert policy.check("https://www.example.com") == "https://www.example.com/"


def outcome(check: Callable[[str], str], url: str) -> str:
    try:
        return check(url)
    except UrlRefused as refused:
        return f"refused: {refused.reason}"


PATH_TOKENS = [
    *"/aZ0-~!'(*,;=:@.?#é []|^`{\"<\t\\",
    "..",
    "/.",
    "/..",
    "%2F",
    "%2f",
    "%C3%A9",
    "%c3%a9",
    "%4",
    "%GG",
]


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(
    st.sampled_from(
        ["http://www.example.com", "https://www.example.com", "http://127.0.0.1", "http://WWW.example.com"]
    ),
    st.sampled_from(["", "", ":8080", ":08080", ":65535", ":65536", ":99999", ":0"]),
    st.sampled_from(["/", "/", "/", "", "?", "#"]),
    st.lists(st.sampled_from(PATH_TOKENS), max_size=8).map("".join),
)
@pytest.mark.slow
def test_the_shortcut_for_urls_already_normal_agrees_with_parsing(base: str, port: str, lead: str, rest: str) -> None:
    policy = UrlPolicy(("www.example.com", "127.0.0.1"))
    url = base + port + lead + rest
    assert outcome(policy.check, url) == outcome(policy.parse_and_check, url)


def test_allowed_hosts_with_an_ipv6_literal_matches(tmp_path: Path) -> None:
    cfg = load_settings(environ={"ALLOWED_HOSTS": "[::1]", "STATE_DIR": str(tmp_path)}, env_file=None)
    policy = UrlPolicy(cfg.allowed_hosts)
    assert policy.check("http://[::1]:8080/a") == "http://[::1]:8080/a"
    assert policy.check("http://[0:0::1]/") == "http://[0:0::1]/"  # the same address
    with pytest.raises(UrlRefused):
        policy.check("http://[::2]/")
    try:
        site = LoopbackSite("::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        site.routes["/v6"] = Route(body=b"six")
        planned = list(
            plan_urls([site.url("/v6")], allowed_hosts=cfg.allowed_hosts, bypass_paths=(), dropped=DroppedUrls())
        )
        result = Warmer(WarmOptions(rate=0, allowed_hosts=cfg.allowed_hosts)).fetch_one(planned[0])
        assert (result.outcome, result.bytes) == ("not-cacheable", 3)
        assert site.hits == ["/v6"]
    finally:
        site.close()


# --- property: whatever the policy allows connects to the allowed host -----------------------------

PIECES = [
    "127.0.0.1",
    "127.0.0.2",
    "localhost",
    "127.1",
    "2130706433",
    "[::1]",
    "[::ffff:127.0.0.2]",
    ":",
    "@",
    "\\",
    "%",
    "%2e",
    "%40",
    "%5c",
    "/",
    "//",
    "?",
    "#",
    ".",
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x1b",
    "\x7f",
    "\u0085",
    "user:pw",
    "\uff0f",
    "\uff20",
    "\u3002",
    ";",
    "x",
    "http://",
]


def candidate_urls(port: int) -> st.SearchStrategy[str]:
    """scheme + junk + host + port + junk: often a plain allowed URL, often one trick away from it."""
    odd_schemes = ["HTTP://", "https://", "http:/", "http:\\\\", "http:", " http://"]
    prefix = st.sampled_from(["http://"] * 3 * len(odd_schemes) + odd_schemes)
    piece = st.sampled_from([*PIECES, f":{port}", f"127.0.0.2:{port}", f"127.0.0.1:{port}"])
    junk = st.lists(piece, min_size=1, max_size=4).map("".join)
    host = st.sampled_from(["127.0.0.1", "127.0.0.1", "127.0.0.2", "localhost", "[::1]", ""])
    port_part = st.sampled_from(["", f":{port}", f":{port}", ":", ":80"])
    tail = st.sampled_from(["", "/", "/ok", "/a?b=1", "/x#y", "?", "#"])
    return st.builds(
        lambda p, before, h, colon_port, after: p + before + h + colon_port + after,
        prefix,
        st.one_of(st.just(""), st.just(""), st.just(""), junk),  # mostly nothing before the host
        host,
        port_part,
        st.one_of(tail, st.tuples(tail, junk).map("".join), junk),
    )


def connections_elsewhere(allows: Callable[[str], str | None], pair: tuple[LoopbackSite, LoopbackSite]) -> list[str]:
    """Generate URLs; request each one `allows` lets through (as the text it returns), with urllib3
    and with requests; return those that reached 127.0.0.2. Also checks the allowed ones parse to
    127.0.0.1 by both parsers when `allows` is the policy."""
    allowed_site, internal_site = pair
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1, read=1))
    session = make_session(retries=0)
    reached: list[str] = []
    let_through: list[str] = []
    port = allowed_site.port

    @settings(
        max_examples=1000, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(candidate_urls(port))
    @example(f"http://127.0.0.2:{port}\\@127.0.0.1:{port}/x")  # the reported form
    @example(f"http://127.0.0.2:{port}\\@127.0.0.1/x")
    def probe(url: str) -> None:
        target = allows(url)
        if target is None:
            return
        let_through.append(target)
        internal_site.hits.clear()
        requests_made = [lambda: pool.request("GET", target), lambda: session.get(target, timeout=1)]
        if target != url:  # the text as listed too: check_cache_rules requests the example as written
            requests_made += [lambda: pool.request("GET", url), lambda: session.get(url, timeout=1)]
        for fetch in requests_made:
            # Refused, not HTTP on that port, or unparseable: no connection elsewhere either.
            with contextlib.suppress(urllib3.exceptions.HTTPError, requests.RequestException, ValueError, OSError):
                fetch()
        if internal_site.hits:
            reached.append(url)

    probe()
    internal_site.hits.clear()
    assert len(let_through) >= 20, "the generator must reach allowed URLs for the property to mean anything"
    return reached


@pytest.mark.slow
def test_whatever_the_policy_allows_connects_to_the_allowed_host(pair: tuple[LoopbackSite, LoopbackSite]) -> None:
    policy = UrlPolicy(ALLOWED)

    def allows(url: str) -> str | None:
        try:
            target = policy.check(url)
        except UrlRefused:
            return None
        # Both parsers read the same host, and the pool urllib3 picks is the allowed host's.
        assert urlsplit(target).hostname == "127.0.0.1"
        assert urllib3.PoolManager().connection_from_url(target).host == "127.0.0.1"
        assert policy.check(target) == target  # the normal form is stable
        return target

    assert connections_elsewhere(allows, pair) == []


@pytest.mark.slow
def test_the_same_property_catches_the_old_urlsplit_allowlist(pair: tuple[LoopbackSite, LoopbackSite]) -> None:
    def old_allows(url: str) -> str | None:
        try:
            parts = urlsplit(url)
        except ValueError:  # NFKC tricks in the host make urlsplit raise
            return None
        ok = parts.scheme in ("http", "https") and (parts.hostname or "").lower() in ALLOWED
        return url if ok else None

    assert connections_elsewhere(old_allows, pair) != []
