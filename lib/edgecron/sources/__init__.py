"""Feed formats: a plain JSON API page, WordPress REST, RSS 2.0, Atom, JSON Feed (JSONL and CSV are files).

`page.py` holds what one fetched page is and its RFC 8288 `Link` targets, `detect.py` decides a
format from the Content-Type and the first bytes (and says why), `dates.py` turns RFC 822 and
RFC 3339 dates into ISO 8601 text, `xmlfeeds.py` reads RSS and Atom with the entity-safe parser,
`jsonfeed.py` and `wordpress.py` read their JSON, `jsonapi.py` a plain JSON API page (an items list,
a `next` link or a counted `page` parameter), and `readers.py` names the reader of each format. Each
reader turns one page into records keyed by the names the `Validator` (`feed.py`) checks, so nothing
past the validator knows which format a feed was. The sources that fetch or open the pages are
`feedhttp.py` and `feedfiles.py`.
"""

from __future__ import annotations

FORMATS = ("auto", "json", "jsonl", "csv", "wordpress", "rss", "atom", "jsonfeed")
FILE_ONLY = frozenset({"jsonl", "csv"})
# Formats whose fields are fixed by their specification: IMPORT_FIELD_MAP does not apply.
FIXED_FIELDS = frozenset({"rss", "atom"})

# Shown in --help and the README: where each of our fields comes from, per format.
FIELD_RULES = {
    "wordpress": "id=id, url=link, updated_at=modified_gmt (declared UTC: WordPress writes *_gmt without an offset), "
    "title=title.rendered, body=content.rendered",
    "rss": "id=guid else link, url=link, updated_at=atom:updated else dc:date else pubDate, title=title, "
    "body=content:encoded else description",
    "atom": "id=id, url=alternate link (resolved against xml:base), updated_at=updated, title=title, "
    "body=content else summary",
    "jsonfeed": "id=id, url=url, updated_at=date_modified else date_published, title=title, "
    "body=content_html else content_text",
}
