"""Credentials from the settings: the API token and the feed's header, never shown anywhere.

A `Secret` hides its value from repr, str, logs and JSON; `AuthHeader` is the feed's `Name: value`
line (IMPORT_AUTH_HEADER, or IMPORT_AUTH_FILE); `*_FILE` keys are read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .redact import register_secret


class Secret:
    """A string that never shows itself in repr, str, logs or JSON.

    Its value is also registered with `redact`, so an upstream that echoes it back (an API error
    quoting the Authorization header) cannot carry it into output, state, logs or pings either.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class AuthHeader:
    """`Name: value` for the feed API; the value is a Secret (never shown, redacted everywhere)."""

    name: str
    value: Secret

    def __repr__(self) -> str:
        return f"AuthHeader({self.name!r}, ***)"

    __str__ = __repr__


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def read_import_auth(text: str, file: str) -> AuthHeader | None:
    """IMPORT_AUTH_HEADER, or the line in IMPORT_AUTH_FILE; its value never appears in an error."""
    line = text.strip()
    if file:
        if line:
            raise ConfigError("IMPORT_AUTH_HEADER and IMPORT_AUTH_FILE are both set", expected="only one of them")
        line = read_secret_file(Path(file).expanduser(), key="IMPORT_AUTH_FILE", holding="the header line")
    if not line:
        return None
    name, colon, value = line.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _HEADER_NAME.fullmatch(name) or not value:
        raise ConfigError(
            "IMPORT_AUTH_HEADER is not a header line",
            got=f"{len(line)} characters" + ("" if colon else " without a colon"),  # never the secret itself
            expected="'Name: value', such as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'",
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(
            f"IMPORT_AUTH_HEADER's {name} value holds a control character (a newline?)",
            expected="one line of printable characters",
        )
    return AuthHeader(name, Secret(value))


def read_token_file(path: Path) -> str:
    return read_secret_file(path, key="CF_API_TOKEN_FILE", holding="the API token")


def read_secret_file(path: Path, *, key: str, holding: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key} is not text", got=str(path), expected=f"a UTF-8 file holding {holding}") from None
    except OSError as exc:
        raise ConfigError(
            f"{key} cannot be read",
            got=f"{path} ({exc.strerror})",
            expected=f"a readable file holding {holding}",
        ) from None
    if not token:
        raise ConfigError(f"{key} is empty", got=str(path), expected=f"a file holding {holding}")
    return token
