"""Typed errors carrying what failed, what was expected, what we got and whether a rerun is safe.

The library raises these; only scripts turn them into text and exit codes.
"""

from __future__ import annotations

import errno
import sqlite3
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0  # done, nothing wrong
    PROBLEMS = 1  # the job ran and found problems (URLs failed, a check breached, items rejected)
    USAGE = 2  # usage, config or input error: nothing was changed, fix and rerun
    TEMPFAIL = 75  # lock held or upstream unavailable: safe to retry as is
    SIGINT = 130  # interrupted by SIGINT: finished items are kept, a rerun continues
    SIGTERM = 143  # interrupted by SIGTERM: finished items are kept, a rerun continues


class EdgecronError(Exception):
    """Base error: `what` failed; `expected` is what would have been accepted; `got` what was seen."""

    exit_code: ExitCode = ExitCode.USAGE
    default_hint = "Nothing was changed; fix the input and rerun."

    def __init__(
        self,
        what: str,
        *,
        expected: str | None = None,
        got: object = None,
        retry_safe: bool = False,
        hint: str | None = None,
    ) -> None:
        self.what = what
        self.expected = expected
        self.got = got
        self.retry_safe = retry_safe
        self.hint = hint or self.default_hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [self.what]
        details = []
        if self.got is not None:
            details.append(f"got {_show(self.got)}")
        if self.expected:
            details.append(f"expected {self.expected}")
        if details:
            parts.append(": " + ", ".join(details))
        return "".join(parts).rstrip(".") + "."

    def as_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "what": self.what,
            "expected": self.expected,
            "got": None if self.got is None else str(self.got),
            "retry_safe": self.retry_safe,
            "hint": self.hint,
        }


def _show(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > 200:
        text = text[:200] + "…"
    return repr(text) if isinstance(value, str) else text


class ConfigError(EdgecronError):
    """A config key is missing or malformed."""

    default_hint = "Nothing was changed; fix .env (or the environment) and rerun."


class InputError(EdgecronError):
    """Input given on the command line or read from a file/feed/sitemap is unusable."""


class UpstreamUnavailable(EdgecronError):
    """An upstream (site, API, feed) could not be reached or kept failing; safe to retry."""

    exit_code = ExitCode.TEMPFAIL
    default_hint = "Finished work is kept; rerun later, it continues where it stopped."

    def __init__(self, what: str, **kwargs: object) -> None:
        kwargs.setdefault("retry_safe", True)
        super().__init__(what, **kwargs)  # type: ignore[arg-type]


class LockHeld(EdgecronError):
    """Another run of the same job holds its lock."""

    exit_code = ExitCode.TEMPFAIL
    default_hint = "Nothing was changed; this run is safe to retry once the other one ends."

    def __init__(self, what: str, **kwargs: object) -> None:
        kwargs.setdefault("retry_safe", True)
        super().__init__(what, **kwargs)  # type: ignore[arg-type]


class StateError(EdgecronError):
    """The state database is unusable (corrupt, newer schema, not writable)."""

    default_hint = "Nothing was changed; check STATE_DIR (permissions, disk space) and rerun."


class StateUnavailable(StateError):
    """A database server that does not answer (down, unreachable, gone mid-run): temporary, as an upstream is."""

    exit_code = ExitCode.TEMPFAIL
    default_hint = "Nothing was changed; safe to retry once the database answers."

    def __init__(self, what: str, **kwargs: object) -> None:
        kwargs.setdefault("retry_safe", True)
        super().__init__(what, **kwargs)  # type: ignore[arg-type]


class ResourceError(EdgecronError):
    """The machine refused: disk full, read-only filesystem, permission denied."""

    default_hint = "Finished work is kept; fix the cause named above and rerun."


def from_unexpected(exc: BaseException) -> EdgecronError | None:
    """System and input failures that are not bugs, as typed errors (None: a bug, let it show).

    Disk full is temporary (exit 75, retry once space is freed); a read-only or unwritable place
    and input too deep or not UTF-8 need a person (exit 2).
    """
    if isinstance(exc, EdgecronError):
        return exc
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "full" in text:
            return _disk_full(text)
        if "readonly" in text or "read-only" in text:
            return ResourceError("a database could not be written", got=text, expected="a writable STATE_DIR")
        return StateError("a database is unusable", got=text, expected="a SQLite file written by edgecron")
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _disk_full(f"{exc.strerror}{where}")
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return ResourceError(
                "a file could not be written", got=f"{exc.strerror}{where}", expected="a writable place for it"
            )
        return None
    if isinstance(exc, RecursionError):
        return InputError("input is nested too deeply", got="more levels than Python can follow", expected="flat data")
    if isinstance(exc, UnicodeError):
        return InputError("input is not valid UTF-8", got=str(exc)[:200], expected="UTF-8 text")
    return None


def _disk_full(text: str) -> EdgecronError:
    error = ResourceError(
        "the disk is full", got=text, expected="free space in STATE_DIR", retry_safe=True,
        hint="Finished work is kept; free disk space and rerun (it continues where it stopped).",
    )  # fmt: skip
    error.exit_code = ExitCode.TEMPFAIL
    return error
