"""The one duration grammar of every option that takes a length of time (`--max-age`, `--since 2h`).

A whole number with a unit, or several run together: `45s`, `90m`, `36h`, `30d`, `2w`, `1d12h`.
Units are s, m, h, d, w (any case); a bare number is seconds (`import_stale.py --max-age 3600`
always meant that). No config key takes a duration: those hold plain seconds or days.
"""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import InputError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"([0-9]+)\s*([smhdw])")
_WITH_UNITS = re.compile(r"(?:[0-9]+\s*[smhdw]\s*)+")
_SECONDS = re.compile(r"[0-9]+")
EXPECTED = "a whole number with a unit s, m, h, d or w, or several run together (45s, 90m, 36h, 2w, 1d12h)"


def parse_duration(text: str, *, option: str = "--max-age") -> timedelta:
    """`text` as a timedelta; an `InputError` naming `option` and the grammar when it is not one."""
    cleaned = text.strip().lower()
    if not (_SECONDS.fullmatch(cleaned) or _WITH_UNITS.fullmatch(cleaned)):
        raise InputError(f"{option} is not a duration", got=text, expected=EXPECTED)
    if _SECONDS.fullmatch(cleaned):
        seconds = int(cleaned)
    else:
        seconds = sum(int(number) * UNIT_SECONDS[unit] for number, unit in _PART.findall(cleaned))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise InputError(f"{option} is too long", got=text, expected="at most 999999999 days") from None


def has_units(text: str) -> bool:
    """Whether `text` is a duration with units, so `--since 2h` means two hours ago. A bare number
    there is not one: `--since 20261201` is an ISO date (basic format), not 234 days ago."""
    return _WITH_UNITS.fullmatch(text.strip().lower()) is not None
