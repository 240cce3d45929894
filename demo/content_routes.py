"""Demo routes for the import job: a paginated JSON feed and article pages from the content store.

Mount with one call in the demo site's GET handler (query as `urllib.parse.parse_qs` gives it):

    from demo import content_routes
    answer = content_routes.handle(path, parse_qs(query))   # (status, headers, body) or None

- `GET /api/feed?page=N` — revision 1 or 2 of a small fixture, 5 items a page, with a relative
  `next` link (null on the last page). Revision 2 edits two articles, adds one and removes one
  (a tombstone), so a second import purges and re-warms exactly those pages. The revision comes
  from `?rev=`, else `configure(revision=…)`, else `EDGECRON_DEMO_FEED_REV`, else 1.
  `?updated_since=ISO` keeps only items updated at or after that time (IMPORT_SINCE_PARAM).
- `GET /articles/<slug>` — the article as imported into the content store (`configure(content_db=…)`,
  else CONTENT_DB or EDGECRON_DEMO_CONTENT_DB), 404 when the store does not hold it.
"""

from __future__ import annotations

import html
import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

PAGE_SIZE = 5
ARTICLES = 12
EDITED = (3, 7)
ADDED = 13
REMOVED = 5
Answer = tuple[int, dict[str, str], bytes]

_config: dict[str, Any] = {"content_db": None, "revision": None}


def configure(*, content_db: Path | None = None, revision: int | None = None) -> None:
    """Point the article pages at a content store and/or pick the feed revision (in-process demo)."""
    if content_db is not None:
        _config["content_db"] = Path(content_db)
    if revision is not None:
        _config["revision"] = revision


def handle(path: str, query: dict[str, list[str]]) -> Answer | None:
    """The answer for `path`, or None when the path is not one of these routes."""
    if path == "/api/feed":
        return _feed(query)
    if path.startswith("/articles/"):
        return _article(path.removeprefix("/articles/"))
    return None


def feed_items(revision: int) -> list[dict[str, Any]]:
    """The fixture: articles 1-12 at revision 1; revision 2 edits 3 and 7, adds 13, removes 5."""
    items: list[dict[str, Any]] = []
    for n in range(1, ARTICLES + (2 if revision >= 2 else 1)):
        slug = f"article-{n:02d}"
        if revision >= 2 and n == REMOVED:
            items.append({"id": slug, "deleted": True, "updated_at": "2026-11-02T09:00:00Z"})
            continue
        edited = revision >= 2 and n in EDITED
        items.append(
            {
                "id": slug,
                "url": f"/articles/{slug}",
                "updated_at": "2026-11-02T09:00:00Z" if edited or n == ADDED else f"2026-11-01T{n:02d}:00:00Z",
                "title": f"Article {n}" + (" (updated)" if edited else ""),
                "body": f"Article {n} body." + (" Corrected figures." if edited else ""),
                "author": "demo",
            }
        )
    return items


def _feed(query: dict[str, list[str]]) -> Answer:
    try:
        page = int(_one(query, "page") or "1")
        revision = int(_one(query, "rev") or _config["revision"] or os.environ.get("EDGECRON_DEMO_FEED_REV") or 1)
        since = _one(query, "updated_since")
        floor = datetime.fromisoformat(since) if since else None
    except ValueError as exc:
        return 400, {"Content-Type": "application/json"}, json.dumps({"error": str(exc)}).encode()
    items = feed_items(revision)
    if floor is not None:
        items = [i for i in items if datetime.fromisoformat(i["updated_at"]) >= floor]
    start = (page - 1) * PAGE_SIZE
    chunk = items[start : start + PAGE_SIZE] if page >= 1 else []
    extra = "".join(f"&{k}={v[0]}" for k, v in sorted(query.items()) if k != "page" and v)
    more = start + PAGE_SIZE < len(items)
    doc = {"page": page, "items": chunk, "next": f"/api/feed?page={page + 1}{extra}" if more else None}
    return 200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, json.dumps(doc).encode()


def _article(slug: str) -> Answer:
    row = _lookup(slug)
    if row is None:
        return 404, {"Content-Type": "text/html; charset=utf-8"}, b"<!doctype html><h1>no such article</h1>\n"
    title, body, updated = (html.escape(row[k]) for k in ("title", "body", "updated_at"))
    page = f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{body}</p><footer>updated {updated}</footer>\n"
    headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "public, max-age=300"}
    return 200, headers, page.encode()


def _lookup(slug: str) -> sqlite3.Row | None:
    path = _config["content_db"] or os.environ.get("EDGECRON_DEMO_CONTENT_DB") or os.environ.get("CONTENT_DB")
    if not path or not Path(path).exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT title, body, updated_at FROM items WHERE key = ?", (slug,)).fetchone()
    except sqlite3.Error:
        return None  # a store without items yet: the page does not exist
    finally:
        conn.close()


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
