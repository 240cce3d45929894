"""Typed errors carrying what failed, what was expected, what we got and whether a rerun is safe.

The library raises these; only scripts turn them into text and exit codes.
"""

from __future__ import annotations

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
