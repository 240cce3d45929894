"""The page reader of each format name (IMPORT_FORMAT, or what `detect.choose` decided)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .jsonapi import JsonApiReader
from .jsonfeed import JsonFeedReader
from .wordpress import WordPressReader
from .xmlfeeds import AtomReader, RssReader

PageReader = JsonApiReader | WordPressReader | JsonFeedReader | RssReader | AtomReader


def reader_for(name: str, field_map: Mapping[str, str] | None) -> PageReader:
    if name == "json":
        return JsonApiReader()
    readers: dict[str, Callable[[Mapping[str, str] | None], PageReader]] = {
        "wordpress": WordPressReader,
        "jsonfeed": JsonFeedReader,
        "rss": RssReader,
        "atom": AtomReader,
    }
    return readers[name](field_map)
