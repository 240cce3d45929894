"""Validation of purge input, deploy manifests and sitemap <lastmod> changes (real SQLite)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from edgecron.errors import InputError
from edgecron.outbox import PurgeOutbox
from edgecron.purge import diff_manifests, parse_manifest, plan_changed, plan_request
from edgecron.state import open_state

SITE = "https://www.example.com"
HOSTS = ("www.example.com", "static.example.com")
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def check(kind, *values):
    return plan_request(kind, values, site_url=SITE, allowed_hosts=HOSTS)


def test_urls_are_made_absolute_deduplicated_and_checked():
    plan = check("url", "/a", "https://WWW.example.com/a", "https://www.example.com/b#frag", "# comment", "")
    assert plan.items["url"] == ["https://www.example.com/a", "https://www.example.com/b"]
    assert plan.rejected == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("https://evil.example.net/a", "not in ALLOWED_HOSTS"),
        ("/blog/*", "prefixes"),
        ("blog/post", "absolute http(s) URL"),
        ("ftp://www.example.com/a", "absolute http(s) URL"),
    ],
)
def test_bad_urls_are_rejected_with_a_reason(value, reason):
    plan = check("url", value, "/fine")
    assert plan.items["url"] == [f"{SITE}/fine"]
    assert len(plan.rejected) == 1 and reason in plan.rejected[0].reason


def test_empty_input_is_an_error():
    with pytest.raises(InputError, match="no urls"):
        check("url", " ", "# only a comment")


def test_prefixes_tags_and_hosts():
    prefixes = check("prefix", "/blog/2026", "https://static.example.com/img", "www.example.com/x?y=1")
    assert prefixes.items["prefix"] == ["www.example.com/blog/2026", "static.example.com/img"]
    assert [r.value for r in prefixes.rejected] == ["www.example.com/x?y=1"]
    tags = check("tag", "post-1", "has space", "ünïcode")
    assert tags.items["tag"] == ["post-1"] and len(tags.rejected) == 2
    assert check("host", "static.example.com", "other.org").items["host"] == ["static.example.com"]


def test_manifest_text_and_json_forms_agree():
    text = parse_manifest(
        "# ref: v7\nh1  ./index.html\nh2  blog/index.html\nh3 /feed.xml\n",
        source="m.txt",
        site_url=SITE,
        allowed_hosts=HOSTS,
    )
    doc = parse_manifest(
        json.dumps({"ref": "v7", "urls": {"/": "h1", "/blog/": "h2", f"{SITE}/feed.xml": "h3"}}),
        source="m.json",
        site_url=SITE,
        allowed_hosts=HOSTS,
    )
    assert text == doc and text.ref == "v7"


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"urls": {"/a": ""}}', "key 'urls./a'"),
        ('{"url": {"/a": "h"}}', "key 'url'"),
        ('{"urls": {"https://evil.example.net/": "h"}}', "urls.https://evil.example.net/"),
        ('{"urls": [1, 2]}', "key 'urls'"),
        ('{"urls": {"/a": "h"},\n}', "line 2"),
        ("h1  /a\nh2\n", "line 2"),
    ],
)
def test_malformed_manifest_names_the_key_or_line(content, where):
    with pytest.raises(InputError) as info:
        parse_manifest(content, source="m", site_url=SITE, allowed_hosts=HOSTS)
    assert where in info.value.message


def test_diff_manifests():
    diff = diff_manifests({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert (diff.changed, diff.added, diff.removed) == (["b"], ["d"], ["c"])
    first = diff_manifests(None, {"a": "1"})
    assert first.to_purge == ["a"] and not first.baseline


@dataclass
class Entry:
    url: str
    lastmod: str | None


@pytest.mark.both_backends
def test_changed_purges_only_moved_lastmods_after_a_baseline(state_db):
    with open_state(state_db) as state:
        first = plan_changed(state.conn, [Entry("u1", "2026-01-01"), Entry("u2", "2026-01-01T10:00:00Z")])
        assert first.items == {} and first.notes["baseline"] is False
        first.commit(state, now=NOW, run_id="r1")
        second = plan_changed(
            state.conn,
            [
                Entry("u1", "2026-01-01"),
                Entry("u2", "2026-01-01T11:00:00+01:00"),  # the same instant, written differently
                Entry("u3", "2026-02-01"),
                Entry("u4", None),
            ],
        )
        assert second.items == {"url": ["u3"]} and second.notes["no_lastmod"] == 1
        second.commit(state, now=NOW, run_id="r2")
        third = plan_changed(state.conn, [Entry("u1", "2026-03-01"), Entry("u3", "2026-02-01")])
        assert third.items == {"url": ["u1"]}
        assert third.commit(state, now=NOW, run_id="r3") == 1
        assert [i.value for i in PurgeOutbox(state).open_items()] == ["u3", "u1"]
