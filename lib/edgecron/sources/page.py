"""One fetched feed page, the items read from it, and its RFC 8288 `Link` header targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from requests.utils import parse_header_links


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # as requested (the base of relative links)
    body: bytes
    content_type: str = ""  # media type, lower case, without parameters
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive for HTTP pages

    @property
    def links(self) -> dict[str, str]:
        """`rel` → absolute target of the `Link` header(s); the first target of each rel wins."""
        return link_targets(self.headers.get("Link", ""), base=self.url)


@dataclass(slots=True)
class PageItems:
    items: list[Any]
    next_url: str | None
    paged: bool = False  # a page-parameter feed: a repeated page means the parameter is ignored
    # Where next_url came from, for errors; a link from a header or a feed document must stay on
    # the source's host. None: the JSON API's own `next` field, checked by the URL policy alone.
    next_via: str | None = "Link rel=next"


def link_targets(header: str, *, base: str) -> dict[str, str]:
    """RFC 8288: `<…?page=1>; rel="prev", <…?page=3>; rel="next"` → {"prev": …, "next": …}.

    requests' parser splits the header; a rel holds space-separated relation types, and relative
    targets are resolved against the page URL (section 3.2).
    """
    targets: dict[str, str] = {}
    if not header.strip():
        return targets
    for link in parse_header_links(header):
        url = link.get("url", "").strip()
        for rel in link.get("rel", "").lower().split():
            if url and rel not in targets:
                targets[rel] = urljoin(base, url)
    return targets


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()
