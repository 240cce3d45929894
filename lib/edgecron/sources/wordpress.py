"""The WordPress REST API (`/wp-json/wp/v2/posts`): a JSON list per page, paged by headers.

Pages follow `Link: <…>; rel="next"` and stop at `X-WP-TotalPages`. `modified_gmt` (and
`date_gmt`) carry no offset but are UTC by WordPress's own definition: the rule for those two
fields declares it (FIELD_RULES, shown in --help); any other timestamp field mapped in stays
without a zone and falls to IMPORT_NAIVE_TIMEZONE. Past the last page WordPress answers 400
`rest_post_invalid_page_number`; `past_end()` says when a 400 means that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import InputError
from .fields import FieldRules
from .page import Page, PageItems

DEFAULTS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "url": ("link",),
    "updated_at": ("modified_gmt",),
    "title": ("title.rendered",),
    "body": ("content.rendered",),
}
UTC_FIELDS = frozenset({"modified_gmt", "date_gmt"})  # WordPress: "as GMT", written without an offset


class WordPressReader:
    def __init__(self, field_map: Mapping[str, str] | None = None) -> None:
        self.rules = FieldRules(DEFAULTS, field_map)
        self.stamp_key = self.rules.keys["updated_at"]
        self.stamp_is_utc = self.rules.paths["updated_at"][0] in UTC_FIELDS
        self.total_pages: int | None = None

    def read(self, page: Page) -> PageItems:
        try:
            doc = json.loads(page.body)
        except (ValueError, RecursionError) as exc:
            raise InputError(
                f"WordPress page {page.url} is not valid JSON", got=str(exc), expected="a JSON list"
            ) from None
        if isinstance(doc, dict) and "code" in doc:  # a WP_Error answered with 200 by a plugin
            raise InputError(f"WordPress page {page.url} is an error", got=f"{doc.get('code')}: {doc.get('message')}")
        if not isinstance(doc, list):
            raise InputError(
                f"WordPress page {page.url} is not a list of posts",
                got=type(doc).__name__,
                expected="a JSON list (check IMPORT_SOURCE: /wp-json/wp/v2/posts)",
            )
        total = page.headers.get("X-WP-TotalPages")
        if total is not None and total.strip().isdigit():
            self.total_pages = int(total)
        current = page_number(page.url)
        next_url = page.links.get("next")
        if self.total_pages is not None:
            if current >= self.total_pages:
                next_url = None  # the headers say this is the last page, whatever a Link says
            elif next_url is None:  # a proxy that drops Link but keeps X-WP-*
                next_url = with_page(page.url, current + 1)
        records = [self._record(post) if isinstance(post, dict) else post for post in doc]
        return PageItems(records, next_url)

    def _record(self, post: dict) -> dict:
        record = self.rules.record(post)
        stamp = record.get(self.stamp_key)
        if self.stamp_is_utc and isinstance(stamp, str):
            try:
                naive = datetime.fromisoformat(stamp).tzinfo is None
            except ValueError:
                naive = False  # left as it is: the validator rejects it and shows it
            if naive:
                record[self.stamp_key] = stamp + "+00:00"  # the declared rule: *_gmt is UTC
        return record

    def past_end(self, url: str) -> bool:
        """Whether a 400 for `url` is the end of the posts: its page is past X-WP-TotalPages."""
        return self.total_pages is not None and page_number(url) > self.total_pages


def page_number(url: str) -> int:
    value = dict(parse_qsl(urlsplit(url).query)).get("page", "1")
    return int(value) if value.isdigit() else 1


def with_page(url: str, number: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("page", str(number))])))
