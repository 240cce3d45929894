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
    r"(?!(?i:bearer|basic)\s)([^\s\"',;&]+)"
)
_QUERY_PARAM = re.compile(r"([?&;]|\b)([A-Za-z0-9_.-]{1,64})=([^&#\s\"'<>\\]+)")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/@\s:]*):([^/@\s]+)@")


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
    """`text` with every secret this module can recognise replaced by `***`."""
    if not text:
        return text
    pattern = _known_pattern[0]
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _HEADER_ECHO.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    return _QUERY_PARAM.sub(_mask_param, text)


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside a JSON-like value (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def _mask_param(match: re.Match[str]) -> str:
    lead, name, value = match.groups()
    if value == MASK or not is_secret_name(name):
        return match.group(0)
    return f"{lead}{name}={MASK}"
