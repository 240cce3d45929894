"""Which files hold an access log: ACCESS_LOGS paths and globs, rotated siblings by logrotate's
names, what they look like to stat (a signature that any rotation changes), and how their text is
read (plain or gzip) and measured.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

# logrotate's names: access.log.1, access.log.2.gz (numbered); with dateext, a date or epoch of
# 8+ digits, maybe with more digit groups: -20261128, -20261128-1764300000, -20261128143000,
# .2026-11-28, -1764300000 (each optionally .gz)
_NUMBERED = re.compile(r"\.(\d{1,7})")
_DATED = re.compile(r"[-.]\d{4}[-.]?\d{2}[-.]?\d{2}(?:[-_.]?\d+)*")


def _rotation_key(suffix: str) -> tuple[int, ...] | None:
    """Sort key of a rotated file's suffix (after the log's name), older files sorting higher:
    numbered ones by their number, dated ones newest first by all their digits (the epoch or time
    after the date counts: several rotations a day); None when it is no rotated name."""
    stamp = suffix.removesuffix(".gz")
    if numbered := _NUMBERED.fullmatch(stamp):
        return (1, int(numbered.group(1)))
    if _DATED.fullmatch(stamp):
        return (0, *(-int(digits) for digits in re.findall(r"\d+", stamp)))
    return None


def is_rotated_name(path: Path) -> bool:
    """True for `x.log.1`, `x.log.2.gz`, `x.log-20261128`…: a glob must not pick those as live logs."""
    name = path.name
    if name.endswith(".gz"):
        return True
    return any(_rotation_key(name[cut:]) is not None for cut in range(1, len(name)) if name[cut] in ".-")


def expand_paths(patterns: Iterable[str]) -> tuple[list[Path], list[str], list[str]]:
    """Live log paths from ACCESS_LOGS (paths and globs); patterns that matched nothing; links refused.

    A glob match that is a symlink leading out of its directory is refused: whoever can write the
    log directory could otherwise make us read `.env` and quote it as "malformed lines".
    """
    found: list[Path] = []
    unmatched: list[str] = []
    refused: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = [Path(p) for p in sorted(glob.glob(expanded)) if not is_rotated_name(Path(p))]
            if not matches:
                unmatched.append(pattern)
            refused += [str(p) for p in matches if _leaves_its_directory(p)]
            matches = [p for p in matches if not _leaves_its_directory(p)]
        else:
            matches = [Path(expanded)]
        for path in matches:
            absolute = path.absolute()
            if absolute not in found:
                found.append(absolute)
    return found, unmatched, refused


def _leaves_its_directory(path: Path) -> bool:
    if not path.is_symlink():
        return False
    return path.resolve().parent != path.parent.resolve()


def rotated_candidates(path: Path) -> list[Path]:
    """Rotated siblings of `path`, newest first (`.1` before `.2.gz`; later stamps first)."""
    ranked: list[tuple[tuple[int, ...], Path]] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(path.name) or entry == path:
            continue
        key = _rotation_key(entry.name[len(path.name) :])
        if key is not None:
            ranked.append((key, entry))
    ranked.sort(key=lambda item: (item[0], item[1].name))
    return [entry for _, entry in ranked]


def rotation_signature(rotated: Sequence[Path]) -> str:
    """The rotated files as stat sees them (names, inodes, sizes, times): any rotation changes it."""
    parts = []
    for path in rotated:
        try:
            st = os.stat(path)
        except OSError:
            continue
        parts.append(f"{path.name}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}")
    return sha256_hex("\n".join(parts).encode())[:32]


def open_log(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_length(path: Path) -> int:
    """Bytes of text in a file: its size, or for gzip the size stored in its trailer (modulo 4 GiB,
    which is enough to tell whether a file that was read plain got more lines before its gzip)."""
    if not path.name.endswith(".gz"):
        return os.stat(path).st_size
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")
