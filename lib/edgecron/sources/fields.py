"""Records keyed the way the `Validator` reads them, from a format's field rules.

A rule names where each of our fields comes from: a dotted path into a JSON object
(`title.rendered`), tried in order when a format has fallbacks (`date_modified` else
`date_published`). IMPORT_FIELD_MAP replaces a field's rule with one path of its own; the record
key is then that path, as the validator expects (`FeedItem` fields it does not name stay out).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

OUR_FIELDS = ("id", "url", "updated_at", "title", "body")


class FieldRules:
    def __init__(self, defaults: Mapping[str, tuple[str, ...]], field_map: Mapping[str, str] | None) -> None:
        mapped = field_map or {}
        self.paths = {f: ((mapped[f],) if f in mapped else defaults[f]) for f in OUR_FIELDS}
        self.keys = {f: mapped.get(f, f) for f in OUR_FIELDS}

    def record(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """Our fields of one JSON object; a title's HTML entities decoded (`&#8217;` → `’`)."""
        out: dict[str, Any] = {}
        for name, paths in self.paths.items():
            value = first_present(source, paths)
            if name == "title" and isinstance(value, str):
                value = html.unescape(value)
            if value is not None:
                out[self.keys[name]] = value
        return out


def first_present(source: Mapping[str, Any], paths: tuple[str, ...]) -> Any:
    """The first path that holds a value other than null or an empty string."""
    for path in paths:
        value = dotted(source, path)
        if value is not None and value != "":
            return value
    return None


def dotted(source: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(source, Mapping):
            return None
        source = source.get(part)
    return source
