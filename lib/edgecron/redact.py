"""One redaction step for every text that came from outside, before it is printed, stored, logged or pinged.

An API that echoes the request back in an error message ("invalid header Authorization: Bearer
…"), a feed URL carrying `?api_key=…`, an exception message repeating a URL: any of these would
carry a secret into stderr, `state.db`, `logs/*.jsonl` and the healthchecks ping body (a third
party). So the few places where text leaves the process (the scripts' writers, the event log,
the run record, the outbox's last error, the ping) pass it through `redact()`, which hides:

- every secret value this process holds: a `config.Secret` registers its value when created, so a
  token echoed in any form of message is caught even without a recognisable prefix;
- any `Bearer …` / `Basic …` credential and `Authorization: …`-style header echoes;
- the value of a query parameter named like a secret (`key`, `token`, `sig`, `password`, …);
- the password of a URL's userinfo (`https://user:pass@host`).

What is hidden is replaced by `***`, so a reader still sees that something was there.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"
# Shorter values would mask ordinary words; no real token or key is this short.
MIN_SECRET_LENGTH = 6

_known: set[str] = set()
_known_lock = threading.Lock()
_known_pattern: list[re.Pattern[str] | None] = [None]

# Query/form parameter names that carry credentials (compared lower-case, without '-' and '_').
_SECRET_NAMES = (
    "key",
    "apikey",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "secret",
    "clientsecret",
    "sig",
    "signature",
    "password",
    "passwd",
    "pwd",
    "pass",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "session",
    "sessionid",
)
_SECRET_PARTS = ("token", "secret", "password", "passwd", "apikey", "signature", "credential")

# "Basic" only capitalised: the English word "basic" is followed by ordinary words.
_SCHEME_CREDENTIAL = re.compile(r"\b((?i:bearer)|Basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_HEADER_ECHO = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-auth-token|cookie|set-cookie)(\"?\s*[:=]\s*\"?)"
    r"(?!(?:bearer|basic)\s)([^\s\"',;&][^\"',;&\r\n]*)"  # to the delimiter: "Token abc" is one value
)
_HEADER_NAMES = ("authorization", "api-key", "auth-token", "cookie")
_USERINFO = re.compile(r"(://[^/@\s:]*):([^/@\s]+)@")
_PARAM_VALUE = re.compile(r"=([^&;#\s\"'<>\\]+)")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
MAX_NAME = 64


def register_secret(value: str) -> None:
    """Remember a secret value so `redact()` hides it wherever it turns up."""
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _known_lock:
        if value in _known:
            return
        _known.add(value)
        # Longest first, so a secret containing another is hidden whole.
        alternatives = sorted(_known, key=len, reverse=True)
        _known_pattern[0] = re.compile("|".join(re.escape(v) for v in alternatives))


def is_secret_name(name: str) -> bool:
    """A query parameter or field name that usually carries a credential."""
    folded = re.sub(r"[-_.\s]", "", name.lower())
    return folded in _SECRET_NAMES or any(part in folded for part in _SECRET_PARTS)


def redact(text: str) -> str:
    """`text` with every secret this module can recognise replaced by `***`.

    Called for every line printed and every event logged, so each pattern runs only when a cheap
    test says it could match (a dry run prints 50,000 URLs).
    """
    if not text:
        return text
    pattern = _known_pattern[0]
    if pattern is not None:
        text = pattern.sub(MASK, text)
    lowered = text.lower()
    if "bearer" in lowered or "Basic" in text:
        text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    if any(name in lowered for name in _HEADER_NAMES):
        text = _HEADER_ECHO.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    if "=" in text:
        text = _mask_params(text)
    return text


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside a JSON-like value (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def _mask_params(text: str) -> str:
    """Mask the value of each `name=value` whose name is secret-like (the name read backwards from `=`)."""
    pieces = []
    done = 0
    for match in _PARAM_VALUE.finditer(text):
        equals = match.start()
        start = equals
        while start > 0 and equals - start < MAX_NAME and text[start - 1] in _NAME_CHARS:
            start -= 1
        name = text[start:equals]
        if not name or match.group(1).startswith(MASK) or not is_secret_name(name):
            continue
        pieces += [text[done : equals + 1], MASK]
        done = match.end()
    return "".join(pieces) + text[done:] if pieces else text
