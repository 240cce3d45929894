"""Feed dates as ISO 8601 text for the validator: RFC 822 (RSS `pubDate`) and RFC 3339 (Atom, dc:date).

A date without a zone stays without one, so the validator applies the declared rule
(IMPORT_NAIVE_TIMEZONE) or rejects it; a date that parses as neither is passed on as it was, so
the reject shows what the feed held.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime


def rfc822_text(text: str) -> str:
    """`Tue, 10 Jun 2003 04:00:00 GMT` → `2003-06-10T04:00:00+00:00`; RFC 3339 accepted too."""
    stripped = text.strip()
    try:
        return parsedate_to_datetime(stripped).isoformat()  # `-0000` ("zone unknown") gives a naive time
    except (TypeError, ValueError, IndexError):
        return rfc3339_text(stripped)


def rfc3339_text(text: str) -> str:
    """RFC 3339 as Python reads it (`Z`, fractions, offsets); anything else unchanged."""
    stripped = text.strip()
    try:
        return datetime.fromisoformat(stripped).isoformat()
    except ValueError:
        return stripped
