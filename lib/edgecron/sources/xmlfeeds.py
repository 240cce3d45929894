"""RSS 2.0 and Atom (RFC 4287), read with defusedxml exactly as sitemaps are: a DOCTYPE or an
entity declaration is refused before anything is expanded, and the bytes were already capped
(IMPORT_MAX_PAGE_BYTES) when fetched. feedparser is not used: it falls back to a lenient
parser on malformed XML and fetches by itself, both of which the cap and the refusal rely on
not happening (see notes/changes/2026-12-01-sources.md).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from urllib.parse import urljoin
from xml.etree.ElementTree import Element, ParseError, tostring

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException, DTDForbidden

from ..errors import ConfigError, InputError
from .dates import rfc822_text, rfc3339_text
from .page import Page, PageItems

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
DC = "{http://purl.org/dc/elements/1.1/}"
XHTML = "{http://www.w3.org/1999/xhtml}"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"


def parse_xml(page: Page, *, what: str) -> Element:
    try:
        return SafeET.fromstring(page.body, forbid_dtd=True)
    except DTDForbidden as exc:
        raise InputError(
            f"{what} {page.url} declares a DOCTYPE",
            got=f"<!DOCTYPE {exc.name}>",
            expected="a feed without DOCTYPE or ENTITY declarations (refused for safety)",
        ) from None
    except DefusedXmlException as exc:
        raise InputError(
            f"{what} {page.url} uses XML entities", got=type(exc).__name__, expected="plain XML (refused for safety)"
        ) from None
    except ParseError as exc:
        raise InputError(
            f"{what} {page.url} is not well-formed XML", got=str(exc), expected="a complete feed"
        ) from None


def refuse_field_map(field_map: Mapping[str, str] | None, name: str) -> None:
    if field_map:
        raise ConfigError(
            f"IMPORT_FIELD_MAP does not apply to {name}: its fields are fixed by the format",
            got=",".join(f"{k}={v}" for k, v in field_map.items()),
            expected="IMPORT_FIELD_MAP empty (see the field rules in import_stale.py --help)",
        )


def _text(elem: Element | None) -> str | None:
    if elem is None:
        return None
    text = "".join(elem.itertext()).strip()
    return text or None


class RssReader:
    """RSS 2.0: every `channel/item`. No pagination: a feed is its newest items."""

    def __init__(self, field_map: Mapping[str, str] | None = None) -> None:
        refuse_field_map(field_map, "RSS")

    def read(self, page: Page) -> PageItems:
        root = parse_xml(page, what="RSS feed")
        if root.tag != "rss" or root.find("channel") is None:
            raise InputError(f"{page.url} is not RSS 2.0", got=f"<{root.tag}>", expected="<rss><channel>")
        return PageItems([self._record(item) for item in root.iterfind("channel/item")], None)

    @staticmethod
    def _record(item: Element) -> dict[str, str]:
        link = _text(item.find("link"))
        updated = _text(item.find(f"{ATOM}updated")) or _text(item.find(f"{DC}date"))
        stamp = rfc3339_text(updated) if updated else rfc822_text(_text(item.find("pubDate")) or "")
        title = _text(item.find("title"))
        body = _text(item.find(f"{CONTENT}encoded")) or _text(item.find("description"))
        values = {
            "id": _text(item.find("guid")) or link,
            "url": link,
            "updated_at": stamp or None,
            "title": html.unescape(title) if title else title,
            "body": body,
        }
        return {k: v for k, v in values.items() if v is not None}


class AtomReader:
    """Atom: every `feed/entry`; RFC 5005 `<link rel="next">` pages further."""

    def __init__(self, field_map: Mapping[str, str] | None = None) -> None:
        refuse_field_map(field_map, "Atom")

    def read(self, page: Page) -> PageItems:
        root = parse_xml(page, what="Atom feed")
        if root.tag != f"{ATOM}feed":
            raise InputError(
                f"{page.url} is not an Atom feed", got=f"<{root.tag}>", expected=f"<feed xmlns={ATOM[1:-1]}>"
            )
        base = urljoin(page.url, root.get(XML_BASE, ""))
        records = [self._record(entry, base) for entry in root.iterfind(f"{ATOM}entry")]
        next_link = _link(root, "next", base)
        return PageItems(records, next_link, next_via="<link rel=next>")

    @staticmethod
    def _record(entry: Element, feed_base: str) -> dict[str, str]:
        base = urljoin(feed_base, entry.get(XML_BASE, ""))
        updated = _text(entry.find(f"{ATOM}updated"))
        body = _content(entry.find(f"{ATOM}content")) or _content(entry.find(f"{ATOM}summary"))
        values = {
            "id": _text(entry.find(f"{ATOM}id")),
            "url": _link(entry, "alternate", base),
            "updated_at": rfc3339_text(updated) if updated else None,
            "title": _title(entry.find(f"{ATOM}title")),
            "body": body,
        }
        return {k: v for k, v in values.items() if v is not None}


def _link(parent: Element, rel: str, base: str) -> str | None:
    """The `rel` link's href resolved against xml:base; for alternate, text/html is preferred."""
    found = [
        link for link in parent.iterfind(f"{ATOM}link") if link.get("rel", "alternate") == rel and link.get("href")
    ]
    if not found:
        return None
    found.sort(key=lambda link: link.get("type", "text/html") != "text/html")
    chosen = found[0]
    return urljoin(urljoin(base, chosen.get(XML_BASE, "")), chosen.get("href", "").strip())


def _title(elem: Element | None) -> str | None:
    text = _content(elem)
    if text is None or elem is None:
        return None
    return html.unescape(text) if elem.get("type") in ("html", "xhtml") else text


def _content(elem: Element | None) -> str | None:
    """Atom text construct: text and html as their text; xhtml as the markup inside its <div>."""
    if elem is None or elem.get("src"):
        return None  # out-of-line content is not in the feed
    if elem.get("type") != "xhtml":
        return _text(elem)
    div = next(iter(elem), None)
    if div is None:
        return _text(elem)
    for node in div.iter():
        if isinstance(node.tag, str) and node.tag.startswith(XHTML):
            node.tag = node.tag[len(XHTML) :]  # plain HTML tags, not ns0:p
    inner = (div.text or "") + "".join(tostring(child, encoding="unicode") for child in div)
    return inner.strip() or None
