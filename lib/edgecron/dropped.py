"""Listed URLs that will not be warmed: one count per reason and the first examples.

Filled where each drop happens: the sitemap reader (off-host, invalid, too long, an index child on
another host) and the warm plan (duplicate, bypass path, and the URL policy for `--urls-file`). The
script prints one warning line from it and `--json` shows it: a sitemap that lists pages that can
never be warmed is a problem the operator has to fix at the site.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from .urls import UrlRefused

# reason -> how the one-line warning names it
REASONS = {
    "off-host": "off-host",
    "invalid": "invalid",
    "too-long": "too long",
    "duplicate": "duplicate",
    "bypass-path": "bypass path",
    "off-host-child": "off-host child",
}
# UrlRefused.reason -> drop reason
_REFUSED = {"not-http": "invalid", "unsafe-url": "invalid", "off-host": "off-host"}
SHOWN_CHARS = 300  # an example is for recognising the URL, not for keeping a 2,048+ character one whole


@dataclass(frozen=True)
class DroppedUrl:
    url: str
    reason: str
    sitemap: str | None  # None: listed in --urls-file (or another URL list)


@dataclass
class DroppedUrls:
    counts: Counter[str] = field(default_factory=Counter)
    first: list[DroppedUrl] = field(default_factory=list)

    KEEP = 100

    def add(self, reason: str, url: str, *, sitemap: str | None = None) -> None:
        self.counts[reason] += 1
        if len(self.first) < self.KEEP:
            shown = url if len(url) <= SHOWN_CHARS else f"{url[:SHOWN_CHARS]}… ({len(url)} characters)"
            self.first.append(DroppedUrl(shown, reason, sitemap))

    def refused(self, refused: UrlRefused, url: str, *, sitemap: str | None = None, child: bool = False) -> None:
        reason = _REFUSED.get(refused.reason, "invalid")
        self.add("off-host-child" if child and reason == "off-host" else reason, url, sitemap=sitemap)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """`off-host 3, invalid 1`: the reasons in a fixed order."""
        return ", ".join(f"{REASONS[r]} {self.counts[r]}" for r in REASONS if self.counts[r])

    def as_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "counts": {r: self.counts[r] for r in REASONS if self.counts[r]},
            "first": [asdict(item) for item in self.first],
        }


__all__ = ["REASONS", "DroppedUrl", "DroppedUrls"]
