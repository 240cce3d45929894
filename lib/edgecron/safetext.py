"""One escaping function for every remote- or file-derived string that reaches a terminal.

A sitemap `<loc>`, a feed item URL, a log file name, a lock holder record or a purge value can
hold ESC/CSI/OSC sequences (`\\x1b]0;title\\x07`, `\\x1b[2J`, the one-byte C1 CSI `\\x9b`) that
would retitle, clear or rewrite the operator's terminal, or hide a line. `visible()` shows every
C0 and C1 control character and DEL as `\\xNN`, the bidirectional overrides as `\\uNNNN` (they
reorder what is read), and a lone surrogate (a file name that is not UTF-8) as the byte it stood
for, so what is printed is exactly what was there, inert.

JSON output needs no escaping of its own (`json.dumps` escapes C0), except C1 and DEL, which
`json_visible()` escapes as `\\u00NN` so the document stays valid JSON and inert on a terminal.
"""

from __future__ import annotations

import json
from typing import Any

_C0_C1_DEL = (*range(0x20), 0x7F, *range(0x80, 0xA0))
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C, 0x2028, 0x2029)
_SURROGATE_BYTES = range(0xDC80, 0xDD00)  # os.fsdecode's surrogateescape of bytes 0x80..0xFF

CONTROL_TABLE: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in _C0_C1_DEL},
    **{c: f"\\u{c:04x}" for c in _BIDI},
    **{c: f"\\x{c - 0xDC00:02x}" for c in _SURROGATE_BYTES},
}
_LINE_TABLE = {c: v for c, v in CONTROL_TABLE.items() if c not in (0x09, 0x0A)}
_JSON_TABLE = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0), *_BIDI, *_SURROGATE_BYTES)}


def visible(text: object) -> str:
    """One field for a terminal: every control character shown as an escape, newlines included."""
    return str(text).translate(CONTROL_TABLE)


def visible_lines(text: object) -> str:
    """Text of several lines for a terminal: newlines and tabs kept, every other control escaped."""
    return str(text).translate(_LINE_TABLE)


def json_visible(document: Any, *, indent: int | None = None) -> str:
    """`json.dumps(document)` that is valid JSON and carries no raw control character."""
    text = json.dumps(document, indent=indent, default=str, ensure_ascii=False)
    return text.translate(_JSON_TABLE)
