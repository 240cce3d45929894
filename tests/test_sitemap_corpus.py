"""Real sitemaps, byte for byte as real generators wrote them, through the real reader.

The files are in tests/fixtures/real/ (sources and licences in its README.md); beside each file,
`<file>.expected.txt` lists exactly its page URLs (for an index: its child sitemaps), written by
hand from the file, never by our parser.

Each file keeps the host its generator wrote. A loopback server serves it at that very URL by
being the session's HTTP proxy (what `curl --proxy` does): an http:// URL is requested through
it and answered from the corpus, so ALLOWED_HOSTS is simply the generator's host. An https://
child cannot be served this way (the server refuses CONNECT), so such an index is checked for the
children it lists, each fetch failing on loopback and never leaving it; an https:// file itself
is read from a loopback mirror URL, its pages still on the generator's host.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from edgecron.config import load_settings
from edgecron.http import make_session
from edgecron.sitemap import SitemapReader
from loopback_site import LoopbackSite, Route

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
XML = {"Content-Type": "application/xml; charset=UTF-8"}


def expected(name: str) -> list[str]:
    """The hand-written list beside `name` (comment lines start with '#')."""
    text = (REAL / f"{name}.expected.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@dataclass(frozen=True)
class Served:
    """One corpus file and the URL its generator serves it at."""

    name: str  # path under tests/fixtures/real/
    url: str
    headers: dict[str, str] = field(default_factory=lambda: dict(XML))
    body: bytes | None = None  # default: the file's bytes


@dataclass(frozen=True)
class Case:
    id: str
    root: Served  # what the reader is pointed at
    children: tuple[Served, ...] = ()  # the index's children that the corpus has
    missing: int = 0  # children the corpus lacks (or https): each a problem, never a request off loopback


def case(
    id: str,
    name: str,
    url: str,
    *children: Served,
    missing: int = 0,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Case:
    return Case(id, Served(name, url, headers or dict(XML), body), children, missing)


SITE = "http://www.example.com"  # the host of every file generated here
WP_CHILDREN = ("posts-post-1", "posts-page-1", "taxonomies-category-1", "taxonomies-post_tag-1", "users-1")

DRUPAL = "http://www.example.com/sitemap.xml"  # simple_sitemap's index; its chunks add ?page=N

URLSETS = [
    case("wordpress-core-posts", "wordpress/wp-sitemap-posts-post-1.xml", f"{SITE}/wp-sitemap-posts-post-1.xml"),
    pytest.param(case("yoast-images", "yoast/post-sitemap1.xml", "https://primicia.com.ve/post-sitemap1.xml")),
    pytest.param(case("rank-math-images", "rank-math/post-sitemap.xml", f"{SITE}/post-sitemap.xml")),
    pytest.param(
        case("shopify-products-images", "shopify/sitemap_products_1.xml", "https://purecane.com/sitemap_products_1.xml")
    ),
    case("google-xml-sitemaps", "google-xml-sitemaps/sitemap-pt-post.xml", "https://elpitazo.net/sitemap-pt-post.xml"),
    case("hugo-en-alternates", "hugo/en/sitemap.xml", "http://www.example.com/en/sitemap.xml"),
    case("hugo-fr-alternates", "hugo/fr/sitemap.xml", "http://www.example.com/fr/sitemap.xml"),
    case("jekyll-sitemap", "jekyll/sitemap.xml", "http://www.example.com/sitemap.xml"),
    pytest.param(
        case(
            "next-sitemap-alternates-image-video", "next-sitemap/sitemap-0.xml", "http://www.example.com/sitemap-0.xml"
        )
    ),
    case("next-sitemap-news", "next-sitemap/server-sitemap-news.xml", "http://www.example.com/server-sitemap.xml"),
    case("drupal-hreflang", "drupal-simple-sitemap/sitemap-page-1.xml", f"{DRUPAL}?page=1"),
    pytest.param(case("drupal-hreflang-images", "drupal-simple-sitemap/sitemap-page-2.xml", f"{DRUPAL}?page=2")),
    case("django-i18n-alternates", "django/sitemap-pages.xml", "http://www.example.com/sitemap-pages.xml"),
    case("django-entities", "django/sitemap-articles.xml", "http://www.example.com/sitemap-articles.xml"),
    case(
        "django-gzip-response",
        "django/sitemap-articles.xml",
        "http://www.example.com/sitemap-articles.xml",
        headers={**XML, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        body=(REAL / "django/sitemap-articles.xml.gz-body").read_bytes(),
    ),
    case(
        "google-text-sitemap",
        "google-docs/sitemap.txt",
        "https://www.example.com/sitemap.txt",
        headers={"Content-Type": "text/plain"},
    ),
]

INDEXES = [
    case(
        "wordpress-core-index",
        "wordpress/wp-sitemap.xml",
        f"{SITE}/wp-sitemap.xml",
        *(Served(f"wordpress/wp-sitemap-{part}.xml", f"{SITE}/wp-sitemap-{part}.xml") for part in WP_CHILDREN),
    ),
    case("yoast-index", "yoast/sitemap_index.xml", "https://primicia.com.ve/sitemap_index.xml", missing=4),
    pytest.param(
        case(
            "rank-math-index",
            "rank-math/sitemap_index.xml",
            f"{SITE}/sitemap_index.xml",
            Served("rank-math/post-sitemap.xml", f"{SITE}/post-sitemap.xml"),
            missing=2,
        )
    ),
    case("shopify-index", "shopify/sitemap.xml", "https://purecane.com/sitemap.xml", missing=4),
    case("google-xml-sitemaps-index", "google-xml-sitemaps/sitemap.xml", "https://elpitazo.net/sitemap.xml", missing=4),
    case(
        "hugo-multilingual-index",
        "hugo/sitemap.xml",
        "http://www.example.com/sitemap.xml",
        Served("hugo/en/sitemap.xml", "http://www.example.com/en/sitemap.xml"),
        Served("hugo/fr/sitemap.xml", "http://www.example.com/fr/sitemap.xml"),
    ),
    pytest.param(
        case(
            "next-sitemap-index",
            "next-sitemap/sitemap.xml",
            "http://www.example.com/sitemap.xml",
            Served("next-sitemap/sitemap-0.xml", "http://www.example.com/sitemap-0.xml"),
        )
    ),
    pytest.param(
        case(
            "drupal-index",
            "drupal-simple-sitemap/sitemap.xml",
            DRUPAL,
            Served("drupal-simple-sitemap/sitemap-page-1.xml", f"{DRUPAL}?page=1"),
            Served("drupal-simple-sitemap/sitemap-page-2.xml", f"{DRUPAL}?page=2"),
        )
    ),
    case(
        "django-index",
        "django/sitemap.xml",
        "http://www.example.com/sitemap.xml",
        Served("django/sitemap-pages.xml", "http://www.example.com/sitemap-pages.xml"),
        Served("django/sitemap-articles.xml", "http://www.example.com/sitemap-articles.xml"),
    ),
]


class CorpusSite:
    """A loopback server answering as the generator's host: the reader's session uses it as its proxy."""

    def __init__(self, site: LoopbackSite) -> None:
        self.site = site

    def serve(self, served: Served) -> str:
        """Serve `served` and return the URL the reader should request for it."""
        url = served.url
        if urlsplit(url).scheme == "https":  # a proxy cannot answer for https: a loopback mirror instead
            url = self.site.url("/mirror/" + served.name)
        body = served.body if served.body is not None else (REAL / served.name).read_bytes()
        self.site.routes[url] = Route(body=body, headers=served.headers)
        return url

    def reader(self, *hosts: str, seen: list[str]) -> SitemapReader:
        """The reader as warm_cache.py builds it (from settings), its session through this site."""
        settings = load_settings(environ={"ALLOWED_HOSTS": ",".join((*hosts, self.site.host))}, env_file=None)
        session = make_session(retries=0)  # warm's 3 retries would only slow down the refused https children
        session.proxies = {"http": self.site.url(""), "https": self.site.url("")}
        return SitemapReader.from_settings(session, settings, on_sitemap=seen.append)


@pytest.fixture(scope="module")
def corpus_server():  # type: ignore[no-untyped-def]
    site = LoopbackSite("127.0.0.1", name="corpus")
    yield site
    site.close()


@pytest.fixture
def corpus_site(corpus_server: LoopbackSite) -> CorpusSite:
    """The module's server, emptied: each test serves only its own generator's files."""
    corpus_server.routes.clear()
    corpus_server.hits.clear()
    return CorpusSite(corpus_server)


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


@pytest.mark.parametrize("item", URLSETS, ids=lambda c: c.id)
def test_each_real_sitemap_yields_exactly_its_pages(item: Case, corpus_site: CorpusSite) -> None:
    url = corpus_site.serve(item.root)
    seen: list[str] = []
    reader = corpus_site.reader(host_of(item.root.url), seen=seen)
    pages = [entry.url for entry in reader.iter_entries([url])]
    assert pages == expected(item.root.name)  # document order; a duplicate would show twice
    assert [p.message for p in reader.report.problems] == []
    assert seen == [url]


@pytest.mark.parametrize("item", INDEXES, ids=lambda c: c.id)
def test_each_real_index_lists_exactly_its_children_and_their_pages(item: Case, corpus_site: CorpusSite) -> None:
    url = corpus_site.serve(item.root)
    for child in item.children:
        corpus_site.serve(child)
    seen: list[str] = []
    reader = corpus_site.reader(host_of(item.root.url), seen=seen)
    pages = [entry.url for entry in reader.iter_entries([url])]
    assert seen == [url, *expected(item.root.name)]  # the index, then each child it lists, in its order
    assert pages == [page for child in item.children for page in expected(child.name)]
    problems = [p.message for p in reader.report.problems]
    assert len(problems) == item.missing, problems  # children not in the corpus: refused on loopback


def test_a_generator_that_leaves_an_ampersand_raw_keeps_the_pages_before_it(corpus_site: CorpusSite) -> None:
    """next-sitemap 4.2.3's getServerSideSitemap writes `<loc>…q&a…</loc>` unescaped: not XML."""
    served = Served("next-sitemap/server-sitemap-raw-ampersand.xml", "http://www.example.com/server-sitemap.xml")
    url = corpus_site.serve(served)
    reader = corpus_site.reader("www.example.com", seen=[])
    pages = [entry.url for entry in reader.iter_entries([url])]
    assert pages == expected(served.name)
    [problem] = reader.report.problems
    assert "not well-formed XML" in problem.message


@pytest.mark.parametrize(
    ("generator", "sitemap", "children"),
    [
        ("jekyll", "sitemap.xml", ()),
        pytest.param("next-sitemap", "sitemap.xml", ("sitemap-0.xml",)),
        ("wordpress", "wp-sitemap.xml", tuple(f"wp-sitemap-{part}.xml" for part in WP_CHILDREN)),
    ],
)
def test_robots_txt_of_a_generator_leads_to_all_its_pages(
    generator: str, sitemap: str, children: tuple[str, ...], corpus_site: CorpusSite
) -> None:
    """Discovery as warm does it without SITEMAP_URLS: the generator's own robots.txt names its sitemap."""
    text = {"Content-Type": "text/plain; charset=utf-8"}
    corpus_site.serve(Served(f"{generator}/robots.txt", "http://www.example.com/robots.txt", headers=text))
    for name in (sitemap, *children):
        corpus_site.serve(Served(f"{generator}/{name}", f"http://www.example.com/{name}"))
    reader = corpus_site.reader("www.example.com", seen=[])
    sitemaps = reader.discover("http://www.example.com")
    assert sitemaps == [f"http://www.example.com/{sitemap}"]
    pages = [entry.url for entry in reader.iter_entries(sitemaps)]
    assert pages == [page for name in children or (sitemap,) for page in expected(f"{generator}/{name}")]
    assert reader.report.problems == []


def test_the_django_gzip_body_is_the_same_document() -> None:
    """The fixture pair is what Django's GZipMiddleware sent: the gzip body decompresses to the plain file."""
    plain = (REAL / "django/sitemap-articles.xml").read_bytes()
    assert gzip.decompress((REAL / "django/sitemap-articles.xml.gz-body").read_bytes()) == plain


@pytest.mark.parametrize(
    ("name", "host"),
    [("yoast/post-sitemap1.xml", "primicia.com.ve"), ("shopify/sitemap_products_1.xml", "purecane.com")],
    ids=["yoast", "shopify"],
)
def test_warm_dry_run_on_a_sitemap_with_images_lists_the_pages_and_no_image(
    name: str, host: str, run_cli: Callable[..., subprocess.CompletedProcess[str]], corpus_server: LoopbackSite
) -> None:
    """warm_cache.py --dry-run as an operator runs it: the file read from loopback, its pages on their own host."""
    corpus_server.routes.clear()
    corpus_server.hits.clear()
    path = f"/mirror/{name}"
    corpus_server.routes[path] = Route(body=(REAL / name).read_bytes(), headers=XML)
    env = {"SITE_URL": corpus_server.url(""), "ALLOWED_HOSTS": f"127.0.0.1,{host}", "WARM_RATE": "0"}
    proc = run_cli("warm_cache.py", "--dry-run", "--sitemap", corpus_server.url(path), env=env)
    prefix = "[dry-run] GET "
    listed = [line.removeprefix(prefix) for line in proc.stdout.splitlines() if line.startswith(prefix)]
    assert listed == expected(name), proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert corpus_server.hits == [path]  # the sitemap only: a dry run requests no page
