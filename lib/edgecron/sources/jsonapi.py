"""A plain JSON API page: an object with an items list (and maybe `next`), or a list."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from ..errors import InputError
from ..feed import brief_repr
from .page import Page, PageItems

ITEM_LIST_KEYS = ("items", "data", "results")


class JsonApiReader:
    """A JSON API page: an object with an items list (and maybe `next`), or a list. Without a
    `next` field, a `Link` header pages it; without either, a `page` parameter is counted up."""

    def read(self, page: Page) -> PageItems:
        url = page.url
        try:
            doc = json.loads(page.body)
        except (ValueError, RecursionError) as exc:  # nested too deep is not JSON we can use either
            raise InputError(
                f"feed page {url} is not valid JSON", got=str(exc), expected="a JSON object with an items list"
            ) from None
        links = page.links
        linked = bool(links.keys() & {"next", "prev", "previous", "first", "last"})
        if isinstance(doc, dict):
            items = next((doc[k] for k in ITEM_LIST_KEYS if isinstance(doc.get(k), list)), None)
            if items is None:
                raise InputError(
                    f"feed page {url} has no items list",
                    got=", ".join(sorted(doc)[:10]) or "an empty object",
                    expected="a key named " + " or ".join(ITEM_LIST_KEYS) + " holding a list",
                )
            if "next" in doc:
                link = doc["next"]
                if link is not None and not isinstance(link, str):
                    raise InputError(
                        f"feed page {url} has a next link that is not a string",
                        got=brief_repr(link),
                        expected="a URL or null",
                    )
                return PageItems(items, urljoin(url, link) if link else None, next_via=None)
        elif isinstance(doc, list):
            items = doc
        else:
            raise InputError(
                f"feed page {url} is not a JSON object or list", got=type(doc).__name__, expected="an object"
            )
        if linked:
            return PageItems(items, links.get("next"))
        return PageItems(items, _next_page(url) if items else None, paged=True)


def _next_page(url: str) -> str:
    query = dict(parse_qsl(urlsplit(url).query))
    current = query.get("page", "1")
    if not current.isdigit():
        raise InputError(f"feed URL {url} has a page parameter that is not a number", got=current, expected="page=1")
    return set_query(url, "page", str(int(current) + 1))


def set_query(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query)))
