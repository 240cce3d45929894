"""The source formats one by one against loopback servers: auto-detection from real headers and
bytes, a wrong explicit format, entity-safe XML, naive timestamps, Link pagination (and its
off-host and loop refusals), WordPress's page headers and past-the-end 400, and each format's
field rules (fallbacks, xml:base, HTML entities, RFC 822 dates)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from edgecron.errors import ConfigError, InputError
from edgecron.feed import FeedItem, RawRecord, Reject, Validator
from edgecron.feedfiles import DocumentFileSource
from edgecron.feedhttp import HttpSource
from edgecron.feedsource import open_source
from edgecron.http import make_session
from pytest_httpserver import HTTPServer
from source_sites import DOCUMENTS, Site, document_handler, sample_posts, wordpress_handler
from werkzeug import Response

SCRIPT = "import_stale.py"


def source(server: HTTPServer, path: str, *, fmt: str = "auto", **kwargs: object) -> HttpSource:
    return HttpSource(
        server.url_for(path),
        session=make_session(retries=0),
        allowed_hosts=("localhost", "www.example.com"),
        timeout=5,
        sleep=lambda s: None,
        format=fmt,
        **{"max_page_bytes": 1 << 20, **kwargs},  # type: ignore[arg-type]
    )


def site_for(server: HTTPServer, count: int = 3) -> Site:
    return Site(base=f"http://localhost:{server.port}", posts=sample_posts(count))


def checked(records: list, **kwargs: object) -> list[FeedItem | Reject]:
    validator = Validator(allowed_hosts=("localhost",), max_body_bytes=1 << 20, **kwargs)  # type: ignore[arg-type]
    return [r if isinstance(r, Reject) else validator.check(r) for r in records]


# --- auto-detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rss", "atom", "jsonfeed"])
def test_auto_picks_each_feed_format_from_its_content_type(kind: str, httpserver: HTTPServer) -> None:
    site = site_for(httpserver)
    httpserver.expect_request("/feed").respond_with_handler(document_handler(site, kind))
    feed = source(httpserver, "/feed")
    assert len(list(feed.records())) == 3
    assert feed.format_choice is not None
    assert (feed.format_choice.format, feed.format_choice.auto) == (kind, True)
    assert f"Content-Type {DOCUMENTS[kind][1].split(';')[0]}" in feed.format_choice.reason


@pytest.mark.parametrize(
    ("kind", "served_as"), [("rss", "text/xml"), ("atom", "application/xml"), ("jsonfeed", "application/json")]
)
def test_auto_decides_from_the_first_bytes_when_the_content_type_is_generic(
    kind: str, served_as: str, httpserver: HTTPServer
) -> None:
    site = site_for(httpserver)
    render = DOCUMENTS[kind][0]
    httpserver.expect_request("/feed").respond_with_handler(
        lambda request: Response(render(site).encode(), content_type=served_as)
    )
    feed = source(httpserver, "/feed")
    list(feed.records())
    assert feed.format_choice is not None and feed.format_choice.format == kind


def test_auto_tells_wordpress_from_a_plain_json_list_by_its_headers(httpserver: HTTPServer) -> None:
    site = site_for(httpserver)
    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_handler(wordpress_handler(site))
    httpserver.expect_request("/plain", query_string="page=1").respond_with_json(
        [{"id": 1, "url": "/a", "updated_at": "2026-01-01T00:00:00Z", "title": "t", "body": "b"}]
    )
    httpserver.expect_request("/plain", query_string="page=2").respond_with_json([])
    wp = source(httpserver, "/wp-json/wp/v2/posts")
    plain = source(httpserver, "/plain?page=1")
    list(wp.records()), list(plain.records())
    assert wp.format_choice is not None and wp.format_choice.format == "wordpress"
    assert "X-WP-Total header" in wp.format_choice.reason
    assert plain.format_choice is not None and plain.format_choice.format == "json"


@pytest.mark.parametrize(("kind", "name"), [("rss", "feed.xml"), ("atom", "feed.atom"), ("jsonfeed", "feed.json")])
def test_auto_reads_a_saved_feed_file_by_its_bytes(kind: str, name: str, tmp_path: Path) -> None:
    site = Site(base="http://localhost", posts=sample_posts(2))
    path = tmp_path / name
    path.write_text(DOCUMENTS[kind][0](site))
    feed = open_source(
        str(path), session=None, allowed_hosts=("localhost",), field_map=None, timeout=1,
        max_page_bytes=1 << 20, max_body_bytes=1 << 20,
    )  # fmt: skip
    assert isinstance(feed, DocumentFileSource)
    items = checked(list(feed.records()))
    assert all(isinstance(i, FeedItem) for i in items) and len(items) == 2
    assert feed.format_choice is not None and feed.format_choice.format == kind


# --- a wrong explicit format -------------------------------------------------------------------


def test_a_wrong_explicit_format_says_what_was_expected_and_what_came(httpserver: HTTPServer) -> None:
    site = site_for(httpserver)
    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_handler(wordpress_handler(site))
    with pytest.raises(InputError) as err:
        list(source(httpserver, "/wp-json/wp/v2/posts", fmt="rss").records())
    message = err.value.message
    assert "is not an RSS 2.0 document as IMPORT_FORMAT=rss says: it is a WordPress REST API page" in message
    assert "it looks like wordpress (IMPORT_FORMAT=wordpress or auto)" in message
    assert err.value.retry_safe and "fix IMPORT_FORMAT" in err.value.hint


def test_a_wrong_format_from_the_command_line_exits_2_and_writes_nothing(
    run_cli, env_file: Path, httpserver: HTTPServer
) -> None:
    site = site_for(httpserver)
    httpserver.expect_request("/feed/").respond_with_handler(document_handler(site, "rss"))
    env_file.write_text(env_file.read_text() + f"SITE_URL={site.base}\nIMPORT_SOURCE={site.base}/feed/\n")
    result = run_cli(SCRIPT, "--format", "jsonfeed")
    assert result.returncode == 2
    assert "Error: feed page" in result.stderr and "it is an RSS 2.0 document (<rss> root)" in result.stderr
    assert "Content-Type application/rss+xml" in result.stderr and "Traceback" not in result.stderr
    assert run_cli(SCRIPT, "--format", "rss").returncode == 0  # the same source with the right format
    bad = run_cli(SCRIPT, "--format", "yaml")
    assert bad.returncode == 2 and "--format is not a format this tool reads" in bad.stderr


def test_auto_refuses_a_document_it_cannot_read_and_names_it(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/page").respond_with_data(
        "<!doctype html><html><body>hi</body></html>", content_type="text/html"
    )
    with pytest.raises(InputError, match=r"not a feed format this tool reads: it is .*HTML page"):
        list(source(httpserver, "/page").records())


# --- entity-safe XML ---------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<rss version="2.0"><channel><title>t</title><item><title>&lol3;</title></item></channel></rss>"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE feed [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>&secret;</title></entry></feed>"""


@pytest.mark.parametrize(
    ("body", "content_type"), [(BILLION_LAUGHS, "application/rss+xml"), (EXTERNAL, "application/atom+xml")]
)
@pytest.mark.parametrize("fmt", ["auto", "explicit"])
def test_a_dtd_or_entity_in_rss_or_atom_is_refused(
    body: str, content_type: str, fmt: str, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/feed").respond_with_data(body, content_type=content_type)
    kind = "rss" if "rss" in content_type else "atom"
    with pytest.raises(InputError) as err:
        list(source(httpserver, "/feed", fmt=kind if fmt == "explicit" else "auto").records())
    assert "DOCTYPE" in err.value.message and "refused for safety" in err.value.message


def test_an_entity_bomb_run_exits_2_and_imports_nothing(run_cli, env_file: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed/").respond_with_data(BILLION_LAUGHS, content_type="application/rss+xml")
    base = f"http://localhost:{httpserver.port}"
    env_file.write_text(env_file.read_text() + f"SITE_URL={base}\nIMPORT_SOURCE={base}/feed/\nIMPORT_FORMAT=rss\n")
    result = run_cli(SCRIPT)
    assert result.returncode == 2 and "declares a DOCTYPE" in result.stderr


def test_a_feed_over_the_page_cap_is_refused_before_parsing(httpserver: HTTPServer) -> None:
    site = site_for(httpserver, count=20)
    httpserver.expect_request("/feed").respond_with_handler(document_handler(site, "rss"))
    with pytest.raises(InputError, match="IMPORT_MAX_PAGE_BYTES"):
        list(source(httpserver, "/feed", max_page_bytes=4096).records())


# --- naive timestamps --------------------------------------------------------------------------


def naive_item(stamp: str = "2026-02-01T10:00:00") -> RawRecord:
    data = {"id": "1", "url": "http://localhost/a/", "updated_at": stamp, "title": "t", "body": "b"}
    return RawRecord(__import__("edgecron.feed", fromlist=["Position"]).Position(3), data)


def test_a_naive_timestamp_without_a_declared_zone_is_a_reject_saying_how_to_declare_it() -> None:
    [reject] = checked([naive_item()])
    assert isinstance(reject, Reject) and reject.field == "updated_at"
    assert "IMPORT_NAIVE_TIMEZONE=UTC" in reject.expected
    [utc] = checked([naive_item()], naive_timezone=UTC)
    assert isinstance(utc, FeedItem) and utc.updated_text == "2026-02-01T10:00:00+00:00"
    [berlin] = checked([naive_item()], naive_timezone=ZoneInfo("Europe/Berlin"))
    assert isinstance(berlin, FeedItem) and berlin.updated_text == "2026-02-01T09:00:00+00:00"


def test_wordpress_modified_gmt_is_utc_by_the_declared_rule_but_a_local_field_needs_the_setting(
    httpserver: HTTPServer,
) -> None:
    site = site_for(httpserver, count=1)
    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_handler(wordpress_handler(site))
    by_rule = checked(list(source(httpserver, "/wp-json/wp/v2/posts").records()))
    assert isinstance(by_rule[0], FeedItem) and by_rule[0].updated_text == "2026-02-01T10:00:00+00:00"
    local = source(httpserver, "/wp-json/wp/v2/posts", field_map={"updated_at": "modified"})
    [reject] = checked(list(local.records()), field_map={"updated_at": "modified"})
    assert isinstance(reject, Reject) and reject.field == "modified" and "IMPORT_NAIVE_TIMEZONE" in reject.expected


def test_a_naive_feed_date_in_a_run_is_reported_with_the_hint(run_cli, env_file: Path, httpserver: HTTPServer) -> None:
    base = f"http://localhost:{httpserver.port}"
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "t",
        "items": [
            {"id": "1", "url": f"{base}/a/", "title": "A", "content_text": "x", "date_published": "2026-02-01T10:00:00"}
        ],
    }
    httpserver.expect_request("/feed.json").respond_with_data(json.dumps(doc), content_type="application/feed+json")
    env_file.write_text(
        env_file.read_text() + f"SITE_URL={base}\nIMPORT_SOURCE={base}/feed.json\nIMPORT_MAX_REJECT_RATE=1\n"
    )
    result = run_cli(SCRIPT)
    assert result.returncode == 1
    assert "updated_at: got '2026-02-01T10:00:00'" in result.stderr and "IMPORT_NAIVE_TIMEZONE=UTC" in result.stderr
    env_file.write_text(env_file.read_text() + "IMPORT_NAIVE_TIMEZONE=UTC\n")
    assert run_cli(SCRIPT).returncode == 0
    env_file.write_text(env_file.read_text() + "IMPORT_NAIVE_TIMEZONE=Mars/Olympus\n")
    wrong = run_cli(SCRIPT)
    assert wrong.returncode == 2 and "IMPORT_NAIVE_TIMEZONE" in wrong.stderr


# --- Link pagination ---------------------------------------------------------------------------


def item(i: int) -> dict[str, str]:
    return {"id": f"k{i}", "url": f"/a/{i}", "updated_at": "2026-01-01T00:00:00Z", "title": f"T{i}", "body": "b"}


def test_a_json_api_is_paged_by_link_headers_relative_targets_resolved(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/items").respond_with_json(
        [item(1), item(2)], headers={"Link": '</api/items/p2?cursor=abc>; rel="next"'}
    )
    httpserver.expect_request("/api/items/p2").respond_with_json(
        {"data": [item(3)]}, headers={"Link": '<p3>; rel="next", </api/items>; rel="first"'}
    )
    httpserver.expect_request("/api/items/p3").respond_with_json(
        [item(4)],
        headers={"Link": '</api/items/p2?cursor=abc>; rel="prev"'},  # no next: the last page
    )
    feed = source(httpserver, "/api/items")
    assert [r.data["id"] for r in feed.records()] == ["k1", "k2", "k3", "k4"]
    assert [req.path for req, _ in httpserver.log] == ["/api/items", "/api/items/p2", "/api/items/p3"]


def test_a_link_next_to_another_host_is_refused_even_an_allowed_one(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api").respond_with_json(
        [item(1)], headers={"Link": '<http://www.example.com/api?page=2>; rel="next"'}
    )
    with pytest.raises(InputError) as err:
        list(source(httpserver, "/api").records())
    assert "has a Link rel=next to another host" in err.value.message and "localhost" in err.value.message


def test_a_link_next_loop_is_refused(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/1").respond_with_json([item(1)], headers={"Link": '</api/2>; rel="next"'})
    httpserver.expect_request("/api/2").respond_with_json([item(2)], headers={"Link": '</api/1>; rel="next"'})
    with pytest.raises(InputError, match="loops back"):
        list(source(httpserver, "/api/1").records())


def test_a_json_feed_next_url_and_an_atom_next_link_stay_on_the_host(httpserver: HTTPServer) -> None:
    feed_doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "t",
        "items": [],
        "next_url": "http://www.example.com/f2",
    }
    httpserver.expect_request("/feed.json").respond_with_data(
        json.dumps(feed_doc), content_type="application/feed+json"
    )
    atom = '<feed xmlns="http://www.w3.org/2005/Atom"><link rel="next" href="http://www.example.com/a2"/></feed>'
    httpserver.expect_request("/atom").respond_with_data(atom, content_type="application/atom+xml")
    for path, via in (("/feed.json", "next_url"), ("/atom", "<link rel=next>")):
        with pytest.raises(InputError, match=f"has a {via} to another host"):
            list(source(httpserver, path).records())


# --- WordPress paging --------------------------------------------------------------------------


def test_wordpress_stops_at_x_wp_totalpages_even_with_a_stale_next_link(httpserver: HTTPServer) -> None:
    base = f"http://localhost:{httpserver.port}"
    post = json.loads(json.dumps(_one_post(base)))
    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_json(
        [post],
        headers={"X-WP-Total": "1", "X-WP-TotalPages": "1", "Link": f'<{base}/wp-json/wp/v2/posts?page=2>; rel="next"'},
    )
    feed = source(httpserver, "/wp-json/wp/v2/posts", fmt="wordpress")
    assert len(list(feed.records())) == 1 and len(httpserver.log) == 1


def test_wordpress_without_link_headers_pages_by_x_wp_totalpages(httpserver: HTTPServer) -> None:
    site = site_for(httpserver, count=3)
    handler = wordpress_handler(site)

    def without_link(request):  # a proxy that strips Link but keeps X-WP-*
        response = handler(request)
        response.headers.pop("Link", None)
        return response

    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_handler(without_link)
    feed = source(httpserver, "/wp-json/wp/v2/posts?per_page=2")
    assert len(list(feed.records())) == 3 and len(site.requests) == 2


def test_wordpress_400_on_a_page_it_said_exists_is_an_error_naming_the_drift(httpserver: HTTPServer) -> None:
    site = site_for(httpserver, count=3)
    handler = wordpress_handler(site)

    def shrinking(request):
        response = handler(request)
        if request.args.get("page") == "1":
            site.posts.pop()  # a post unpublished between the two requests
            site.posts.pop()
        return response

    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_handler(shrinking)
    feed = source(httpserver, "/wp-json/wp/v2/posts?per_page=2&page=1")
    records = feed.records()
    assert len([next(records), next(records)]) == 2
    with pytest.raises(InputError) as err:
        list(records)
    assert "answered HTTP 400" in err.value.message and "X-WP-TotalPages 2" in err.value.message
    assert "rerun" in err.value.hint


def test_a_resumed_page_that_is_gone_restarts_from_the_first_page(httpserver: HTTPServer) -> None:
    from edgecron.feed import Position

    site = site_for(httpserver, count=2)
    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_handler(wordpress_handler(site))
    feed = source(httpserver, "/wp-json/wp/v2/posts?per_page=2")
    resume = Position(2, page=f"{site.base}/wp-json/wp/v2/posts?per_page=2&page=3")
    assert len(list(feed.records(resume))) == 2


def _one_post(base: str) -> dict:
    return {
        "id": 4,
        "modified_gmt": "2017-02-14T00:00:00",
        "link": f"{base}/?p=4",
        "title": {"rendered": "REST API Client Fixture: Post"},
        "content": {"rendered": "<p>Updated post content.</p>\n", "protected": False},
    }


# --- field rules -------------------------------------------------------------------------------


def test_atom_links_resolve_against_nested_xml_base_and_xhtml_content_is_kept_as_markup(httpserver: HTTPServer) -> None:
    # RFC 4287 section 1.1's example, with relative links under xml:base (as WordPress's
    # /feed/atom/ sets xml:base on the root).
    atom = (
        """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="/blog/">
  <title type="text">dive into mark</title>
  <entry xml:base="2026/">
    <title type="html">Atom&amp;amp;RSS &amp;#8217;draft&amp;#8217;</title>
    <link rel="alternate" type="text/html" href="atom-draft"/>
    <link rel="enclosure" type="audio/mpeg" length="1337" href="/media/a.mp3"/>
    <id>tag:example.org,2003:3.2397</id>
    <updated>2005-07-31T12:29:29-07:00</updated>
    <content type="xhtml" xml:lang="en"><div xmlns="http://www.w3.org/1999/xhtml"><p><i>[Update: The Atom draft is finished.]</i></p></div></content>
  </entry>
  <entry>
    <title>Summary only</title>
    <link href="http://localhost:PORT/elsewhere"/>
    <id>urn:uuid:1</id>
    <updated>2005-07-31T12:29:29Z</updated>
    <summary>Only a summary.</summary>
  </entry>
</feed>"""
    ).replace("PORT", str(httpserver.port))
    httpserver.expect_request("/atom").respond_with_data(atom, content_type="application/atom+xml")
    first, second = checked(list(source(httpserver, "/atom").records()))
    assert isinstance(first, FeedItem) and isinstance(second, FeedItem)
    assert first.url == f"http://localhost:{httpserver.port}/blog/2026/atom-draft"
    assert first.title == "Atom&RSS ’draft’"
    assert first.body == "<p><i>[Update: The Atom draft is finished.]</i></p>"
    assert first.updated_at == datetime(2005, 7, 31, 19, 29, 29, tzinfo=UTC)
    assert (second.url, second.body) == (f"http://localhost:{httpserver.port}/elsewhere", "Only a summary.")


def test_rss_fallbacks_and_rfc_822_dates(httpserver: HTTPServer) -> None:
    base = f"http://localhost:{httpserver.port}"
    rss = f"""<?xml version="1.0"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom"><channel>
<title>Liftoff News</title><link>{base}/</link><description>x</description>
<item><title>Star City</title><link>{base}/news/2003/06/03.html</link>
<description>How do Americans get ready to work with Russians aboard the ISS?</description>
<pubDate>Tue, 03 Jun 2003 09:39:21 GMT</pubDate><guid>{base}/2003/06/03.html#item573</guid></item>
<item><title>No guid</title><link>{base}/news/2003/05/30.html</link><description>d</description>
<pubDate>Fri, 30 May 2003 11:06:42 EST</pubDate><dc:date>2003-05-31T00:00:00+02:00</dc:date></item>
<item><title>Edited</title><link>{base}/e</link><description>d</description>
<pubDate>Fri, 30 May 2003 11:06:42 -0500</pubDate><atom:updated>2003-06-10T04:00:00Z</atom:updated></item>
</channel></rss>"""  # items from the RSS 2.0 specification's sample feed (rssboard.org)
    httpserver.expect_request("/rss").respond_with_data(rss, content_type="application/rss+xml")
    star, no_guid, edited = checked(list(source(httpserver, "/rss").records()))
    assert isinstance(star, FeedItem) and isinstance(no_guid, FeedItem) and isinstance(edited, FeedItem)
    assert star.key == f"{base}/2003/06/03.html#item573" and star.body.startswith("How do Americans")
    assert star.updated_at == datetime(2003, 6, 3, 9, 39, 21, tzinfo=UTC)
    assert no_guid.key == f"{base}/news/2003/05/30.html"
    assert no_guid.updated_at == datetime(2003, 5, 30, 22, 0, tzinfo=UTC)  # dc:date before pubDate
    assert edited.updated_at == datetime(2003, 6, 10, 4, 0, tzinfo=UTC)  # atom:updated first


def test_json_feed_fallbacks(httpserver: HTTPServer) -> None:
    base = f"http://localhost:{httpserver.port}"
    doc = {  # the JSON Feed 1.1 specification's first example, with dates added
        "version": "https://jsonfeed.org/version/1.1",
        "title": "My Example Feed",
        "home_page_url": f"{base}/",
        "feed_url": f"{base}/feed.json",
        "items": [
            {"id": "2", "content_text": "This is a second item.", "url": f"{base}/second-item", "title": "Second &amp; last",
             "date_published": "2026-02-02T10:00:00-05:00"},
            {"id": "1", "content_html": "<p>Hello, world!</p>", "url": f"{base}/initial-post", "title": "First",
             "date_published": "2026-02-01T10:00:00Z", "date_modified": "2026-02-03T10:00:00Z"},
        ],
    }  # fmt: skip
    httpserver.expect_request("/feed.json").respond_with_data(json.dumps(doc), content_type="application/feed+json")
    second, first = checked(list(source(httpserver, "/feed.json").records()))
    assert isinstance(second, FeedItem) and isinstance(first, FeedItem)
    assert (second.body, second.title, second.updated_text) == (
        "This is a second item.",
        "Second & last",
        "2026-02-02T15:00:00+00:00",
    )
    assert (first.body, first.updated_text) == ("<p>Hello, world!</p>", "2026-02-03T10:00:00+00:00")


def test_field_map_is_refused_for_rss_and_atom_whose_fields_are_fixed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="IMPORT_FIELD_MAP does not apply to RSS"):
        open_source(
            "https://www.example.com/feed/", session=make_session(), allowed_hosts=("www.example.com",),
            field_map={"id": "guid"}, timeout=1, max_page_bytes=1024, max_body_bytes=1024, format="rss",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="is for files"):
        open_source(
            "https://www.example.com/feed/", session=make_session(), allowed_hosts=("www.example.com",),
            field_map=None, timeout=1, max_page_bytes=1024, max_body_bytes=1024, format="csv",
        )  # fmt: skip


# --- what auto chose is said -------------------------------------------------------------------


@pytest.mark.slow
def test_the_chosen_format_is_in_the_event_log_and_on_a_terminal(
    run_script, run_in_terminal, env_file: Path, httpserver: HTTPServer
) -> None:
    site = site_for(httpserver)
    httpserver.expect_request("/feed.xml").respond_with_handler(document_handler(site, "atom"))
    env_file.write_text(env_file.read_text() + f"SITE_URL={site.base}\nIMPORT_SOURCE={site.base}/feed.xml\n")
    quiet = run_script(SCRIPT)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")  # cron: silent on success
    events = [
        json.loads(line) for line in (env_file.parent / "state" / "logs" / "import.jsonl").read_text().splitlines()
    ]
    [chosen] = [e for e in events if e.get("event") == "format"]
    assert chosen["format"] == "atom" and "Content-Type application/atom+xml" in chosen["chosen_by"]
    code, screen = run_in_terminal(SCRIPT)
    assert code == 0 and "format atom: detected from Content-Type application/atom+xml" in screen


@pytest.mark.parametrize(
    ("body", "says"),
    [(b"", "it is an empty document"), (b'{"items": [', "it is not valid JSON (Expecting value: line 1")],
)
def test_auto_names_an_empty_or_broken_document(body: bytes, says: str, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api").respond_with_data(body, content_type="application/json")
    with pytest.raises(InputError) as err:
        list(source(httpserver, "/api").records())
    assert says in err.value.message


def test_wordpress_400_past_x_wp_totalpages_is_the_end(httpserver: HTTPServer) -> None:
    base = f"http://localhost:{httpserver.port}"
    past_end = {"code": "rest_post_invalid_page_number", "message": "The page number requested is larger than the number of pages available.", "data": {"status": 400}}  # fmt: skip
    httpserver.expect_request("/wp-json/wp/v2/posts", query_string="page=3").respond_with_json(past_end, status=400)
    httpserver.expect_request("/wp-json/wp/v2/posts").respond_with_json(
        [_one_post(base)],  # a plugin's Link skips past the last page the headers announce
        headers={"X-WP-Total": "2", "X-WP-TotalPages": "2", "Link": f'<{base}/wp-json/wp/v2/posts?page=3>; rel="next"'},
    )
    feed = source(httpserver, "/wp-json/wp/v2/posts", fmt="wordpress")
    assert len(list(feed.records())) == 1
    assert [req.query_string for req, _ in httpserver.log] == [b"", b"page=3"]
