"""Loopback stand-ins for real feed sources: they answer with the bodies AND headers the real
generators send, rendered from a list of posts the test edits between runs.

Sources of the shapes (kept in sync by hand; see each renderer):
- WordPress REST API: `mockedApiResponse.PostsCollection` in WordPress core's
  tests/qunit/fixtures/wp-api-generated.js (GPL-2.0-or-later), paging headers and the past-the-end
  400 as observed on WordPress 6.1 (/work/shared/reference/wordpress-facts.md), JSON encoded the
  way wp_json_encode does (`\\/`, `\\uXXXX`).
- RSS 2.0: WordPress core's wp-includes/feed-rss2.php template (GPL-2.0-or-later), served as
  `application/rss+xml; charset=UTF-8` like WordPress's /feed/.
- Atom: jekyll-feed's lib/jekyll-feed/feed.xml template (MIT), `application/atom+xml`.
- JSON Feed: the JSON Feed 1.1 specification's examples and jsonfeed.org's own feed.json,
  `application/feed+json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from html import escape
from urllib.parse import urlencode

from werkzeug import Request, Response


@dataclass
class Post:
    id: int
    slug: str
    title: str  # as the author typed it: the generators escape it their own way
    body: str  # HTML
    published: datetime  # aware, UTC
    modified: datetime  # aware, UTC


@dataclass
class Site:
    """The posts a source serves; `base` is the loopback URL (http://localhost:PORT)."""

    base: str
    posts: list[Post] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # full URLs asked, in order

    def url_of(self, post: Post) -> str:
        return f"{self.base}/{post.slug}/"


def sample_posts(count: int) -> list[Post]:
    posts = []
    for i in range(1, count + 1):
        published = datetime.fromisoformat(f"2026-02-{i:02d}T09:00:00+00:00")
        title = "It’s launch day & more" if i == 1 else f"Fish & Chips, part {i}"
        body = f"<p>Post {i}: welcome to WordPress.</p>\n<p>Caf\u00e9 &amp; \u201cquotes\u201d</p>\n"
        posts.append(Post(i * 10, f"post-{i}", title, body, published, published.replace(hour=10)))
    return posts


def wp_title(text: str) -> str:
    """get_the_title() through wptexturize and esc_html: ’ and & as numeric entities."""
    return text.replace("&", "&#038;").replace("’", "&#8217;")


# --- WordPress REST API ------------------------------------------------------------------------


def wordpress_handler(site: Site):
    def handle(request: Request) -> Response:
        site.requests.append(request.url)
        per_page = int(request.args.get("per_page", "10"))
        page = int(request.args.get("page", "1"))
        posts = sorted(site.posts, key=lambda p: (p.modified, p.id))  # orderby=modified&order=asc
        since = request.args.get("modified_after")
        if since:
            cut = datetime.fromisoformat(since)  # the run sends an offset, so no site-time guess
            posts = [p for p in posts if p.modified > cut]
        total = len(posts)
        pages = math.ceil(total / per_page)
        if page > pages and total > 0:
            error = {
                "code": "rest_post_invalid_page_number",
                "message": "The page number requested is larger than the number of pages available.",
                "data": {"status": 400},
            }
            return Response(json.dumps(error), status=400, content_type="application/json; charset=UTF-8")
        body = wp_page_body(site, posts[(page - 1) * per_page : page * per_page])
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        links = []
        base_query = {k: v for k, v in request.args.items() if k != "page"}
        if page > 1:
            links.append(f'<{site.base}/wp-json/wp/v2/posts?{urlencode({**base_query, "page": page - 1})}>; rel="prev"')
        if page < pages:
            links.append(f'<{site.base}/wp-json/wp/v2/posts?{urlencode({**base_query, "page": page + 1})}>; rel="next"')
        if links:
            headers["Link"] = ", ".join(links)
        return Response(body, headers=headers, content_type="application/json; charset=UTF-8")

    return handle


def wp_page_body(site: Site, posts: list[Post]) -> bytes:
    """A page of posts as wp_json_encode writes it: `\\/` for `/`, `\\uXXXX` past ASCII."""
    return json.dumps([_wp_post(site, p) for p in posts], ensure_ascii=True).replace("/", "\\/").encode()


def _wp_post(site: Site, post: Post) -> dict:
    stamp = "%Y-%m-%dT%H:%M:%S"  # WordPress: no offset and no Z, *_gmt in UTC
    rest = f"{site.base}/wp-json/wp/v2"
    return {
        "id": post.id,
        "date": post.published.strftime(stamp),
        "date_gmt": post.published.strftime(stamp),
        "guid": {"rendered": f"{site.base}/?p={post.id}"},
        "modified": post.modified.strftime(stamp),
        "modified_gmt": post.modified.strftime(stamp),
        "slug": post.slug,
        "status": "publish",
        "type": "post",
        "link": site.url_of(post),
        "title": {"rendered": wp_title(post.title)},
        "content": {"rendered": post.body, "protected": False},
        "excerpt": {"rendered": f"<p>{wp_title(post.title)}</p>\n", "protected": False},
        "author": 1,
        "featured_media": 0,
        "comment_status": "open",
        "ping_status": "open",
        "sticky": False,
        "template": "",
        "format": "standard",
        "meta": {"footnotes": ""},
        "categories": [1],
        "tags": [],
        "_links": {
            "self": [{"href": f"{rest}/posts/{post.id}"}],
            "collection": [{"href": f"{rest}/posts"}],
            "about": [{"href": f"{rest}/types/post"}],
            "replies": [{"embeddable": True, "href": f"{site.base}/wp-json/wp/v2/comments?post={post.id}"}],
            "wp:attachment": [{"href": f"{rest}/media?parent={post.id}"}],
            "curies": [{"name": "wp", "href": "https://api.w.org/{rel}", "templated": True}],
        },
    }


# --- RSS 2.0 as WordPress's /feed/ --------------------------------------------------------------


def rss_document(site: Site) -> str:
    posts = sorted(site.posts, key=lambda p: p.published, reverse=True)  # newest published first
    items = "".join(
        f"""
	<item>
		<title>{wp_title(p.title)}</title>
		<link>{site.url_of(p)}</link>
		<comments>{site.url_of(p)}#respond</comments>
		<pubDate>{format_datetime(p.published).replace("-0000", "+0000")}</pubDate>
		<dc:creator><![CDATA[admin]]></dc:creator>
		<category><![CDATA[Uncategorized]]></category>

		<guid isPermaLink="false">{site.base}/?p={p.id}</guid>
		<description><![CDATA[{p.title} [&#8230;]]]></description>
		<content:encoded><![CDATA[{p.body}]]></content:encoded>
		<wfw:commentRss>{site.url_of(p)}feed/</wfw:commentRss>
		<slash:comments>0</slash:comments>
	</item>"""
        for p in posts
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/"
	>

<channel>
	<title>Test Blog</title>
	<atom:link href="{site.base}/feed/" rel="self" type="application/rss+xml" />
	<link>{site.base}</link>
	<description>Just another WordPress site</description>
	<lastBuildDate>{format_datetime(max(p.modified for p in posts))}</lastBuildDate>
	<language>en-US</language>
	<sy:updatePeriod>
	hourly	</sy:updatePeriod>
	<sy:updateFrequency>
	1	</sy:updateFrequency>
	<generator>https://wordpress.org/?v=6.1.9</generator>{items}
</channel>
</rss>
"""


# --- Atom as jekyll-feed's feed.xml -------------------------------------------------------------


def smartify(text: str) -> str:
    """Jekyll's `smartify`: HTML out, `&` as `&amp;`, typographic quotes as numeric entities."""
    return escape(text, quote=False).replace("’", "&#8217;")


def atom_document(site: Site) -> str:
    posts = sorted(site.posts, key=lambda p: p.published, reverse=True)
    entries = "".join(
        f"""
  <entry>
      <title type="html">{escape(smartify(p.title), quote=False)}</title>
      <link href="{site.url_of(p)}" rel="alternate" type="text/html" title="{escape(p.title)}" />
      <published>{p.published.isoformat()}</published>
      <updated>{p.modified.isoformat()}</updated>
      <id>{site.base}/{p.published:%Y/%m/%d}/{p.slug}</id>
      <content type="html" xml:base="{site.url_of(p)}">{escape(p.body.strip(), quote=False)}</content>
      <author>
          <name>Jane Doe</name>
      </author>
      <category term="news" />
      <summary type="html">{escape(p.title, quote=False)}</summary>
  </entry>"""
        for p in posts
    )
    return f"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en"><generator uri="https://jekyllrb.com/" version="4.3.4">Jekyll</generator><link href="{site.base}/feed.xml" rel="self" type="application/atom+xml" /><link href="{site.base}/" rel="alternate" type="text/html" hreflang="en" /><updated>{max(p.modified for p in posts).isoformat()}</updated><id>{site.base}/feed.xml</id><title type="html">Test Blog</title><subtitle>A Jekyll site</subtitle><author><name>Jane Doe</name></author>{entries}
</feed>
"""


# --- JSON Feed 1.1 ------------------------------------------------------------------------------


def jsonfeed_document(site: Site) -> str:
    posts = sorted(site.posts, key=lambda p: p.published, reverse=True)
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Test Blog",
        "home_page_url": f"{site.base}/",
        "feed_url": f"{site.base}/feed.json",
        "language": "en-US",
        "authors": [{"name": "Jane Doe", "url": f"{site.base}/about/"}],
        "items": [
            {
                "id": f"{site.base}/?p={p.id}",
                "url": site.url_of(p),
                "title": p.title,
                "content_html": p.body,
                "summary": p.title,
                "date_published": p.published.isoformat(),
                "date_modified": p.modified.isoformat(),
                "tags": ["news"],
            }
            for p in posts
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)


DOCUMENTS = {
    "rss": (rss_document, "application/rss+xml; charset=UTF-8"),
    "atom": (atom_document, "application/atom+xml"),
    "jsonfeed": (jsonfeed_document, "application/feed+json"),
}


def document_handler(site: Site, kind: str):
    render, content_type = DOCUMENTS[kind]

    def handle(request: Request) -> Response:
        site.requests.append(request.url)
        return Response(render(site).encode("utf-8"), content_type=content_type)

    return handle
