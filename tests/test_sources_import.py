"""Each real source end to end: scripts/import_stale.py (a real subprocess) against a loopback
server that answers with real-shaped bodies and headers (tests/source_sites.py says whose).

For WordPress REST, RSS 2.0, Atom and JSON Feed: the first run imports every post (format chosen
by auto from the real headers and bytes), a second run writes nothing and queues no purge, then
one post is revised and exactly that one is updated and its URL queued for purge; with the content
store in a SQLite file and in PostgreSQL (CONTENT_DB).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from content_stores import item_rows, written
from pytest_httpserver import HTTPServer
from source_sites import Site, document_handler, sample_posts, wordpress_handler

SCRIPT = "import_stale.py"
SOURCES = {
    "wordpress": "/wp-json/wp/v2/posts?per_page=2&orderby=modified&order=asc",
    "rss": "/feed/",
    "atom": "/feed.xml",
    "jsonfeed": "/feed.json",
}


def items_of(db: Path | str) -> dict[str, tuple[str, str, str, str]]:
    return {key: rest for key, *rest in item_rows(db, "key, url, updated_at, title, body")}  # type: ignore[misc]


def pending_purges(state_dir: Path) -> list[str]:
    with sqlite3.connect(state_dir / "state.db") as conn:
        return [r[0] for r in conn.execute("SELECT value FROM outbox WHERE status != 'done' ORDER BY value")]


def purge_job_sent_everything(state_dir: Path) -> None:
    """What a purge run leaves: every queued URL done, so a new purge of one shows up alone."""
    with sqlite3.connect(state_dir / "state.db") as conn:
        conn.execute("UPDATE outbox SET status = 'done'")


def serve(httpserver: HTTPServer, kind: str, site: Site) -> str:
    path = SOURCES[kind].partition("?")[0]
    handler = wordpress_handler(site) if kind == "wordpress" else document_handler(site, kind)
    httpserver.expect_request(path).respond_with_handler(handler)
    return site.base + SOURCES[kind]


@pytest.mark.both_content_backends
@pytest.mark.parametrize("kind", list(SOURCES))
def test_a_real_source_imports_then_writes_nothing_then_takes_exactly_one_revision(
    kind: str, run_cli, env_file: Path, httpserver: HTTPServer, content_db: Path | str
) -> None:
    site = Site(base=f"http://localhost:{httpserver.port}", posts=sample_posts(5))
    source = serve(httpserver, kind, site)
    since = "IMPORT_SINCE_PARAM=modified_after\n" if kind == "wordpress" else ""
    env_file.write_text(env_file.read_text() + f"SITE_URL={site.base}\nIMPORT_SOURCE={source}\n{since}")
    state, db = env_file.parent / "state", content_db

    first = run_cli(SCRIPT, "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["format"]["format"] == kind and doc["format"]["auto"] is True
    assert (doc["counts"]["inserted"], doc["counts"]["rejected"]) == (5, 0), doc["rejects"]
    stored = items_of(db)
    assert sorted(url for url, *_ in stored.values()) == sorted(site.url_of(p) for p in site.posts)
    titles = {title for _, _, title, _ in stored.values()}
    assert "It’s launch day & more" in titles and "Fish & Chips, part 2" in titles  # entities decoded once
    assert all("<p>Post" in body for *_, body in stored.values())
    assert pending_purges(state) == sorted(site.url_of(p) for p in site.posts)
    if kind == "wordpress":  # 5 posts at per_page=2: three pages by Link rel=next, none past the end
        assert [parse_qs(urlsplit(u).query).get("page", ["1"])[0] for u in site.requests] == ["1", "2", "3"]
        # modified_gmt has no offset: read as UTC by the wordpress format's declared rule
        assert {key: stamp for key, (_, stamp, _, _) in stored.items()} == {
            str(p.id): p.modified.isoformat() for p in site.posts
        }

    fingerprint = written(db)
    second = run_cli(SCRIPT, "--json")
    assert second.returncode == 0, second.stderr
    counts = json.loads(second.stdout)["counts"]
    assert (counts["inserted"], counts["updated"], counts["removed"], counts["rejected"]) == (0, 0, 0, 0)
    assert written(db) == fingerprint  # not one byte written, not one row rewritten
    assert pending_purges(state) == sorted(site.url_of(p) for p in site.posts)  # nothing new queued
    if kind == "wordpress":  # the incremental run asked WordPress only for what changed, in UTC
        asked = parse_qs(urlsplit(site.requests[-1]).query)["modified_after"][0]
        assert asked.endswith("+00:00")

    purge_job_sent_everything(state)
    revised = site.posts[2]
    revised.modified += timedelta(days=30)
    revised.body = "<p>Revised: the corrected text.</p>\n"
    if kind == "rss":  # WordPress's RSS only shows a post's publication time (see the runbook)
        revised.published += timedelta(days=30)
    third = run_cli(SCRIPT, "--json")
    assert third.returncode == 0, third.stderr
    doc = json.loads(third.stdout)
    assert (doc["counts"]["updated"], doc["counts"]["inserted"], doc["counts"]["removed"]) == (1, 0, 0)
    assert doc["changed_urls"] == [site.url_of(revised)]
    assert pending_purges(state) == [site.url_of(revised)]
    assert [body.strip() for url, _, _, body in items_of(db).values() if url == site.url_of(revised)] == [
        revised.body.strip()
    ]


def test_an_rss_edit_with_an_unchanged_pubdate_is_caught_by_max_age_as_the_runbook_says(
    run_cli, env_file: Path, httpserver: HTTPServer
) -> None:
    site = Site(base=f"http://localhost:{httpserver.port}", posts=sample_posts(3))
    source = serve(httpserver, "rss", site)
    env_file.write_text(env_file.read_text() + f"SITE_URL={site.base}\nIMPORT_SOURCE={source}\n")
    assert run_cli(SCRIPT).returncode == 0
    edited = site.posts[0]
    edited.body = "<p>Edited in WordPress: pubDate stays the publication time.</p>"
    behind = json.loads(run_cli(SCRIPT, "--json").stdout)["counts"]
    assert (behind["updated"], behind["behind_cursor"]) == (0, 2)  # the limit the runbook names (the newest is re-read)
    rechecked = json.loads(run_cli(SCRIPT, "--json", "--max-age", "0s").stdout)
    assert rechecked["counts"]["updated"] == 1 and rechecked["changed_urls"] == [site.url_of(edited)]
