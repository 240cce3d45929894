"""JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1): items, and `next_url` for the next page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urljoin

from ..errors import InputError
from .detect import JSON_FEED_VERSION
from .fields import FieldRules
from .page import Page, PageItems

DEFAULTS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "url": ("url",),
    "updated_at": ("date_modified", "date_published"),
    "title": ("title",),
    "body": ("content_html", "content_text"),
}


class JsonFeedReader:
    def __init__(self, field_map: Mapping[str, str] | None = None) -> None:
        self.rules = FieldRules(DEFAULTS, field_map)

    def read(self, page: Page) -> PageItems:
        try:
            doc = json.loads(page.body)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"JSON Feed {page.url} is not valid JSON", got=str(exc), expected="a JSON Feed") from None
        if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith(JSON_FEED_VERSION):
            raise InputError(
                f"{page.url} is not a JSON Feed",
                got=type(doc).__name__ if not isinstance(doc, dict) else f"version {doc.get('version')!r}",
                expected=f"an object with version {JSON_FEED_VERSION}1.1",
            )
        items = doc.get("items")
        if not isinstance(items, list):
            raise InputError(f"JSON Feed {page.url} has no items list", expected="an items list (JSON Feed 1.1)")
        next_url = doc.get("next_url")
        if next_url is not None and not isinstance(next_url, str):
            raise InputError(f"JSON Feed {page.url} has a next_url that is not a string", expected="a URL")
        records = [self.rules.record(item) if isinstance(item, dict) else item for item in items]
        return PageItems(records, urljoin(page.url, next_url) if next_url else None, next_via="next_url")
