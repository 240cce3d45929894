"""The common-shape scanner reads exactly what the expat handlers read, for any document and any chunking.

`SitemapReader` reads runs of plain `<url><loc>…</loc></url>` entries with a regular expression and
hands expat blanks in their place (sitemap.py's docstring). The reference here is the same reader
with no scanner (`scanners_for` gives none: every entry through the handlers), fed the document in
one block. Documents are built from real-world shapes and from everything the scanner must leave to
the handlers: prefixes, attributes, comments, CDATA, references, non-ASCII, a second <loc>, foreign
namespaces, UTF-16, and malformed XML; the reader under test gets the bytes in random chunks with
small blocks, so entries are cut at every place a block can end.
"""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
from edgecron import sitemap, sitemapxml
from edgecron.errors import EdgecronError
from edgecron.http import make_session
from edgecron.sitemap import SitemapReader
from edgecron.urls import UrlPolicy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_url_policy import PATH_TOKENS

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
URL = "http://localhost/sitemap.xml"
IMAGE = 'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'

PROLOGS = [
    "",
    '<?xml version="1.0" encoding="UTF-8"?>\n',
    '<?xml version="1.0" encoding="utf-8"?>',
    '<?xml version="1.0" encoding="ISO-8859-1"?>\r\n',
    '<?xml version="1.0" encoding="US-ASCII"?>',
    '<?xml version="1.0" encoding="windows-1252"?>',
    '<?xml version="1.0"?>\n<!-- generator --><?xml-stylesheet href="s.xsl"?>\n',
    "\ufeff<?xml version='1.0' encoding='UTF-8'?>",
    '<!DOCTYPE urlset [<!ENTITY e "http://localhost/e">]>',
]
ROOTS = [  # (start tag, end tag, entry element)
    (f'<urlset xmlns="{NS}">', "</urlset>", "url"),
    (f'<urlset xmlns="{NS}" {IMAGE} xmlns:xhtml="http://www.w3.org/1999/xhtml">', "</urlset>", "url"),
    ("<urlset>", "</urlset>", "url"),
    ('<urlset xmlns="https://www.sitemaps.org/schemas/sitemap/0.9">', "</urlset>", "url"),
    (f'<s:urlset xmlns:s="{NS}">', "</s:urlset>", "url"),  # an unprefixed <url> is in no namespace here
    (f'<s:urlset xmlns:s="{NS}" xmlns="{NS}">', "</s:urlset>", "url"),
    (f'<s:urlset xmlns:s="{NS}" xmlns="urn:other">', "</s:urlset>", "url"),
    ('<urlset xmlns="urn:other">', "</urlset>", "url"),  # not a sitemap
    (f'<sitemapindex xmlns="{NS}">', "</sitemapindex>", "sitemap"),
    ("<sitemapindex>", "</sitemapindex>", "sitemap"),
]
LOCS = [
    "http://localhost/a",
    "http://localhost/b/c?d=1&amp;e=2",
    "http://localhost:8080/port",
    "http://localhost:65535/top",
    "http://localhost:65536/over",
    "http://localhost:0/zero",
    "http://localhost:08/lead",
    "https://LOCALHOST/Upper",
    "http://localhost/./dot",
    "http://localhost/x/../y",
    "http://localhost/%41%7e",
    "http://localhost/%7E",
    "http://localhost/frag#part",
    "http://localhost/sp ace",
    "http://localhost/caf\u00e9",
    "http://localhost/&#38;ref",
    "http://localhost/&amp;amp;",
    "http://localhost/a]]b",
    "http://localhost/gt>",
    "http://other.example/off",
    "http://user@localhost/at",
    "http://localhost\\@other/back",
    "ftp://localhost/ftp",
    "not a url",
    "",
    "http://localhost/" + "l" * 2100,
    "http://localhost/" + "k" * 2030,
    "HTTP://localhost/scheme",
    "http://localhost",
]
SPACES = ["", "", " ", "\n", "\r\n", "\t", "\n  ", "\r"]


@st.composite
def entries(draw: st.DrawFn, tag: str) -> str:
    ws = st.sampled_from(SPACES)
    loc = draw(st.sampled_from(LOCS))
    lastmod = st.sampled_from(["2026-12-01", "2026-12-01T10:00:00+00:00", "", " ", "2026 12"])
    others = st.lists(
        st.sampled_from(["<changefreq>daily</changefreq>", "<priority>0.5</priority>", "<priority></priority>"]),
        max_size=2,
    )
    before = "".join(draw(others)) + (
        f"<lastmod>{draw(ws)}{draw(lastmod)}{draw(ws)}</lastmod>" if draw(st.booleans()) else ""
    )
    after = "".join(draw(others)) + (f"<lastmod>{draw(lastmod)}</lastmod>" if draw(st.booleans()) else "")
    plain = f"<{tag}>{draw(ws)}{before}{draw(ws)}<loc>{draw(ws)}{loc}{draw(ws)}</loc>{draw(ws)}{after}</{tag}>"
    odd = [
        f"<{tag}>{draw(ws)}<loc>{loc}</loc><image:image><image:loc>http://localhost/img.png</image:loc></image:image></{tag}>",
        f"<{tag}><loc>{loc}</loc><!-- note --></{tag}>",
        f"<{tag}><loc><![CDATA[{loc}]]></loc></{tag}>",
        f'<{tag} id="1"><loc>{loc}</loc></{tag}>',
        f"<{tag} ><loc>{loc}</loc></{tag} >",
        f"<{tag}><loc>{loc}</loc><loc>http://localhost/second</loc></{tag}>",
        f"<{tag}><loc/></{tag}>",
        f"<{tag}><lastmod>2026-01-01</lastmod></{tag}>",
        f'<s:{tag} xmlns:s="{NS}"><s:loc>{loc}</s:loc></s:{tag}>',
        f"<s:{tag}><s:loc>{loc}</s:loc></s:{tag}>",  # unbound unless the root declares s
        f'<{tag} xmlns="urn:other"><loc>{loc}</loc></{tag}>',
        f"<{tag}><loc>{loc}<b>bold</b></loc></{tag}>",
        f"<{tag}><loc>{loc}</loc><?pi?></{tag}>",
    ]
    between = [
        "<!-- <url><loc>http://localhost/comment</loc></url> -->",
        "<![CDATA[<url><loc>http://localhost/cdata</loc></url>]]>",
        "<?pi <url><loc>http://localhost/pi</loc></url> ?>",
        "junk text",
        '<x:wrap xmlns:x="urn:x"><url><loc>http://localhost/wrapped</loc></url></x:wrap>',
        "&amp;",
    ]
    broken = ["&undefined;", "]]>", f"<{tag}><loc>http://localhost/unclosed</loc>", "</oops>", "\x01", "<url"]
    kind = draw(st.integers(0, 99))  # mostly the common shape: runs of it are what is under test
    if kind < 80:
        return plain
    if kind < 92:
        return draw(st.sampled_from(odd))
    if kind < 99:
        return draw(st.sampled_from(between))
    return draw(st.sampled_from(broken))


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    prolog = draw(st.sampled_from(PROLOGS[:2] * 8 + PROLOGS))
    start, end, tag = draw(st.sampled_from(ROOTS[:2] * 4 + ROOTS[-2:] + ROOTS))
    # mostly the root's own entry element, sometimes the other one
    entry = st.sampled_from([tag] * 4 + ["sitemap" if tag == "url" else "url"]).flatmap(entries)
    size = draw(st.integers(0, 40))
    body = "".join(draw(entry) + draw(st.sampled_from(SPACES)) for _ in range(size))
    ending = draw(st.sampled_from([end] * 6 + [end + "\n", end + "<!-- after -->", "", end + "<extra/>"]))
    text = prolog + start + draw(st.sampled_from(SPACES)) + body + ending
    encoding = draw(st.sampled_from(["utf-8"] * 8 + ["latin-1", "utf-16-le"]))
    return text.encode(encoding, "replace")


def read(body: bytes, cuts: list[int], *, max_urls: int) -> dict[str, object]:
    """Everything the reader reports for `body`, fed as the chunks `cuts` makes of it."""
    reader = SitemapReader(make_session(), allowed_hosts=["localhost"], max_urls=max_urls)
    bounds = [0, *sorted({c % (len(body) + 1) for c in cuts}), len(body)]
    chunks = iter([body[a:b] for a, b in pairwise(bounds) if b > a])
    children: list[str] = []
    failure = None
    try:
        pages = list(reader.read_body(URL, chunks, children))
    except EdgecronError as err:
        pages, failure = [], err.as_dict()
    return {
        "pages": pages,
        "children": children,
        "failure": failure,
        "problems": [err.as_dict() for err in reader.report.problems],
        "seen": reader.report.urls_seen,
        "dropped": reader.report.dropped.as_dict(),
    }


def reference(body: bytes, monkeypatch: pytest.MonkeyPatch, *, max_urls: int) -> dict[str, object]:
    with monkeypatch.context() as patch:
        patch.setattr(sitemap, "scanners_for", lambda url: {})
        patch.setattr(sitemap, "MIN_FEED", 1 << 30)
        return read(body, [], max_urls=max_urls)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=documents(),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=12),
    min_feed=st.sampled_from([1, 40, 300, 1 << 20]),
    carry=st.sampled_from([0, 30, 1 << 16]),
    held=st.sampled_from([0, 8, 1 << 14]),
    skips=st.sampled_from([0, 2, 64]),
    max_urls=st.sampled_from([3, 50_000]),
)
@example(
    body=f'<?xml version="1.0"?><urlset xmlns="{NS}"><url><loc>http://localhost/a</loc></url></urlset>'.encode(),
    cuts=[30, 61],
    min_feed=1,
    carry=0,
    held=0,
    skips=64,
    max_urls=3,
)
def test_the_scanner_reads_what_the_handlers_read(
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    cuts: list[int],
    min_feed: int,
    carry: int,
    held: int,
    skips: int,
    max_urls: int,
) -> None:
    expected = reference(body, monkeypatch, max_urls=max_urls)
    with monkeypatch.context() as patch:
        patch.setattr(sitemap, "MIN_FEED", min_feed)
        patch.setattr(sitemapxml, "CARRY_MAX", carry)
        patch.setattr(sitemapxml, "SLICE_HELD_MAX", held)
        patch.setattr(sitemapxml, "MAX_SKIP", skips)
        assert read(body, cuts, max_urls=max_urls) == expected


def test_a_plain_sitemap_is_read_by_the_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard that the equivalence test compares two readings: here the scanner reads every entry."""
    body = "".join(
        f"<url><loc>http://localhost/p{i}</loc><lastmod>2026-12-0{i % 9 + 1}</lastmod></url>" for i in range(500)
    )
    doc = f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">\n{body}\n</urlset>\n'.encode()
    scanned = []
    real_read = sitemapxml.EntryScanner.read

    def counting(self: sitemapxml.EntryScanner, text: str, start: int, end: int) -> sitemapxml.Scanned:
        found = real_read(self, text, start, end)
        scanned.extend(found.locs)
        return found

    monkeypatch.setattr(sitemapxml.EntryScanner, "read", counting)
    got = read(doc, [100, 5000], max_urls=50_000)
    assert [p.url for p in got["pages"]] == [f"http://localhost/p{i}" for i in range(500)]
    assert [p.lastmod for p in got["pages"]][:3] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert scanned == [p.url for p in got["pages"]]


TOKENS = [*PATH_TOKENS, "&", ">", "&amp;", "&#38;"]  # the policy test's, and what XML text adds


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(
    base=st.sampled_from(
        ["http://www.example.com", "https://www.example.com", "http://127.0.0.1", "HTTP://www.example.com"]
    ),
    port=st.sampled_from(["", "", ":8080", ":08080", ":65535", ":65536", ":99999", ":0", ":6553", ":70000"]),
    lead=st.sampled_from(["/", "/", "/", "", "?", "#"]),
    rest=st.lists(st.sampled_from(TOKENS), max_size=8).map("".join),
)
@example(base="http://www.example.com", port=":65535", lead="/", rest="a&b")
def test_a_loc_the_scanner_takes_is_one_the_policy_returns_unchanged(
    base: str, port: str, lead: str, rest: str
) -> None:
    """The scanner's `<loc>` pattern (the policy's, as XML text) never takes a URL that check() would change or refuse."""
    policy = UrlPolicy(("www.example.com", "127.0.0.1"))
    url = base + port + lead + rest
    source = policy.unchanged_source(amp="&amp;")
    assert source is not None
    as_xml = re.fullmatch(source, url.replace("&", "&amp;")) is not None and "/." not in url
    plain = re.fullmatch(policy.unchanged_source() or "", url) is not None and "/." not in url
    assert as_xml == plain
    if as_xml:
        assert policy.check(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://www.example.com/",
        "https://www.example.com/blog/2026/12/a-post/",
        "http://127.0.0.1:8080/c0/page-1?x=1&y=%C3%A9",
        "http://www.example.com:65535/~user/a,b;c=d:e@f!$'()*+",
    ],
)
def test_common_urls_are_taken_by_the_scanner_pattern(url: str) -> None:
    policy = UrlPolicy(("www.example.com", "127.0.0.1"))
    assert re.fullmatch(policy.unchanged_source() or "", url)
    assert policy.check(url) == url


def test_a_body_cut_inside_its_bom_is_still_xml() -> None:
    """XML or text is decided on the first bytes however the server cuts them (it was the first chunk alone)."""
    doc = f'\ufeff<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}"><url><loc>http://localhost/a</loc></url></urlset>'
    body = doc.encode()
    got = read(body, list(range(1, 70)), max_urls=50_000)  # one byte at a time up to the root
    assert got["failure"] is None
    assert [p.url for p in got["pages"]] == ["http://localhost/a"]
