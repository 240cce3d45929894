"""Source-format benchmark (issue 11, part 3): each reader on one large document of the shape the
real generator writes (tests/source_sites.py), beside the bare parse of the same bytes
(`ElementTree.fromstring` + `iter`, or `json.loads`): what detection, the safe parser and the
field rules cost on top. The reader's work is the whole of a source's per-page cost before the
validator (which bench_import measures).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))

from edgecron.sources.detect import detect  # noqa: E402
from edgecron.sources.jsonfeed import JsonFeedReader  # noqa: E402
from edgecron.sources.page import Page  # noqa: E402
from edgecron.sources.wordpress import WordPressReader  # noqa: E402
from edgecron.sources.xmlfeeds import AtomReader, RssReader  # noqa: E402
from source_sites import Post, Site, atom_document, jsonfeed_document, rss_document, sample_posts, wp_page_body  # noqa: E402

N_ITEMS = 10_000


def site_with(n: int) -> Site:
    site = Site(base="https://www.example.com")
    templates = sample_posts(9)
    for i in range(n):
        t = templates[i % 9]
        site.posts.append(Post(i + 1, f"post-{i}", t.title, t.body * 4, t.published, t.modified))
    return site


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The fastest of `runs`, the garbage collector off while timing (as timeit does)."""
    times = []
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        finally:
            gc.enable()
    return min(times)


def main() -> list[str]:
    site = site_with(N_ITEMS)
    cases = [
        ("rss", rss_document(site).encode(), RssReader(), lambda b: list(ElementTree.fromstring(b).iter("item"))),
        ("atom", atom_document(site).encode(), AtomReader(), lambda b: list(ElementTree.fromstring(b).iter())),
        ("jsonfeed", jsonfeed_document(site).encode(), JsonFeedReader(), json.loads),
        ("wordpress", wp_page_body(site, site.posts), WordPressReader(), json.loads),
    ]
    report = []
    for name, body, reader, bare in cases:
        page = Page(site.base + "/feed", body)
        assert detect(page).format == name
        ours = best_of(3, lambda page=page, reader=reader: reader.read(page))
        floor = best_of(3, lambda body=body, bare=bare: bare(body))
        line = (
            f"{name}: {N_ITEMS:,} items, {len(body) / 1e6:.1f} MB: {N_ITEMS / ours:,.0f} items/s "
            f"({ours / floor:.1f}× the bare parse's time)"
        )
        print(line, flush=True)
        report.append(line)
    return report


if __name__ == "__main__":
    main()
