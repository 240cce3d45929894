"""The warm plan's shortcut for a URL's path agrees with urlsplit on every URL the policy lets through."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from edgecron.dropped import DroppedUrls
from edgecron.urls import UrlPolicy, UrlRefused
from edgecron.warm import _path, plan_urls
from hypothesis import given, settings
from hypothesis import strategies as st

POLICY = UrlPolicy(("www.example.com", "127.0.0.1", "[::1]"))
TOKENS = [*"/aZ0-~!'(*,;=:@.?#é %", "/admin", "/cart", "%2F", "?q=/admin", "#/admin", "//"]


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(
    st.sampled_from(["http://www.example.com", "https://WWW.example.com", "http://127.0.0.1:8080", "http://[::1]"]),
    st.sampled_from(["", "/", "?", "#"]),
    st.lists(st.sampled_from(TOKENS), max_size=8).map("".join),
)
@pytest.mark.slow
def test_the_path_shortcut_agrees_with_urlsplit(base: str, lead: str, rest: str) -> None:
    try:
        url = POLICY.check(base + lead + rest)
    except UrlRefused:
        return
    assert _path(url) == (urlsplit(url).path or "/")


def test_a_bypass_prefix_in_the_query_is_not_the_path() -> None:
    dropped = DroppedUrls()
    urls = ["https://www.example.com/search?next=/admin", "https://www.example.com/admin?x=1"]
    planned = list(plan_urls(urls, allowed_hosts=["www.example.com"], bypass_paths=["/admin"], dropped=dropped))
    assert planned == ["https://www.example.com/search?next=/admin"]
    assert dropped.counts == {"bypass-path": 1}
