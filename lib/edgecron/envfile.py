"""`.env` read as python-dotenv reads it, with room for an nginx `log_format` directive pasted as is."""

from __future__ import annotations

import io
import re
from pathlib import Path

from dotenv import dotenv_values

from .errors import ConfigError

_PASTED_DIRECTIVE = re.compile(r"(?:export\s+)?LOG_FORMAT\s*=\s*(log_format\s.*)", re.S)
_ENV_KEY_LINE = re.compile(r"\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=")
_HOW_TO_PASTE = (
    "the log_format directive from nginx.conf pasted as is after LOG_FORMAT=, over as many lines as it "
    "takes, ending with its ';' (LOG_FORMAT=log_format main '$remote_addr …' NEWLINE '… $status';), "
    "or the bare format string on one line"
)


def read_env_file(env_file: Path) -> dict[str, str | None]:
    """`.env` as python-dotenv reads it, except that LOG_FORMAT may be an nginx `log_format`
    directive pasted as is: unquoted and over several lines, it ends at its `;` (dotenv alone
    would read each further line as an unknown key). Its text is taken raw, no `${…}` expanded."""
    lines = env_file.read_text(encoding="utf-8").splitlines(keepends=True)
    for first, line in enumerate(lines):
        match = _PASTED_DIRECTIVE.fullmatch(line.rstrip("\r\n"))
        if not match:
            continue
        block = [match.group(1)]
        last = first
        while not _directive_ended("\n".join(block)):
            last += 1
            if last == len(lines) or _ENV_KEY_LINE.match(lines[last]):
                raise ConfigError(
                    f"LOG_FORMAT in {env_file} (line {first + 1}) is a log_format directive without its closing ';'",
                    expected=_HOW_TO_PASTE,
                )
            block.append(lines[last].rstrip("\r\n"))
        values = dotenv_values(stream=io.StringIO("".join(lines[:first] + lines[last + 1 :])))
        values["LOG_FORMAT"] = "\n".join(block)
        return dict(values)
    return dict(dotenv_values(env_file))


def _directive_ended(text: str) -> bool:
    """True once `text` has a `;` outside quotes and comments (nginx.conf's rules)."""
    quote, i = "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        elif ch == ";":
            return True
        i += 1
    return False
