"""nginx `log_format` strings compiled into line parsers.

`LOG_FORMAT` takes the format as written in nginx.conf (a preset name, the bare format string, or
the whole `log_format name [escape=…] '...' '...';` directive pasted, over any number of lines);
`LOG_ESCAPE` says how a bare string's values were escaped. It is compiled once into one regex over
the whole line: the literals must be there and the values nginx writes itself (time, status,
sizes) must have their shape, so a line the format does not describe is malformed. Values are
kept as nginx wrote them (`unescape` gives the bytes they stand for).

Lines stay bytes end to end: non-UTF-8 bytes cost nothing and are decoded only for display.
"""

from __future__ import annotations

import calendar
import difflib
import functools
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .safetext import visible

# The recommended format (see notes/nginx-log-format.md); the demo site writes exactly this.
EDGECRON_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time urt="$upstream_response_time" '
    "cs=$upstream_cache_status ray=$http_cf_ray cip=$http_cf_connecting_ip "
    'li=$logged_in cc="$sent_http_cache_control"'
)
COMBINED_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"'
)
PRESETS = {"combined": COMBINED_FORMAT, "edgecron": EDGECRON_FORMAT}

# Variables nginx defines itself (core, log, upstream, realip, ssl modules) …
CORE_VARIABLES = frozenset(
    [
        "args",
        "binary_remote_addr",
        "body_bytes_sent",
        "bytes_sent",
        "connection",
        "connection_requests",
        "connection_time",
        "content_length",
        "content_type",
        "document_root",
        "document_uri",
        "gzip_ratio",
        "host",
        "hostname",
        "https",
        "is_args",
        "msec",
        "nginx_version",
        "pid",
        "pipe",
        "proxy_protocol_addr",
        "query_string",
        "realip_remote_addr",
        "realip_remote_port",
        "realpath_root",
        "remote_addr",
        "remote_port",
        "remote_user",
        "request",
        "request_body",
        "request_completion",
        "request_filename",
        "request_id",
        "request_length",
        "request_method",
        "request_time",
        "request_uri",
        "scheme",
        "server_addr",
        "server_name",
        "server_port",
        "server_protocol",
        "ssl_cipher",
        "ssl_protocol",
        "ssl_server_name",
        "status",
        "tcpinfo_rtt",
        "time_iso8601",
        "time_local",
        "upstream_addr",
        "upstream_bytes_received",
        "upstream_bytes_sent",
        "upstream_cache_status",
        "upstream_connect_time",
        "upstream_header_time",
        "upstream_response_length",
        "upstream_response_time",
        "upstream_status",
        "uri",
        "geoip_country_code",
        "geoip2_country_code",
    ]
)
# … and families of variables named after a header, cookie or argument.
VARIABLE_PREFIXES = (
    "http_",
    "sent_http_",
    "sent_trailer_",
    "cookie_",
    "arg_",
    "upstream_http_",
    "upstream_cookie_",
    "upstream_trailer_",
    "jwt_claim_",
)
# Set by `map` in the recommended snippet; more come from LOG_MAP_VARS.
DEFAULT_MAP_VARIABLES = ("logged_in", "sets_cookie")


@dataclass(frozen=True)
class ColumnParser:
    """`split(lines)` → (rows, indices of the lines that do not match); `columns[var](rows)` → that
    variable's raw values (as nginx wrote them: see `unescape`)."""

    split: Callable[[Sequence[bytes]], tuple[list[Any], list[int]]]
    columns: dict[str, Callable[[list[Any]], list[bytes]]]


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# Only single-quoted pieces: a bare string that starts with `"` is a format whose lines start with one.
_QUOTED_PIECES = re.compile(r"(?:\s*'(?:[^'\\]|\\.)*')+\s*;?\s*", re.S)
ESCAPES = ("default", "json", "none")
# Variables the log module writes itself, never escaped (ngx_http_log_vars), and their shapes.
# request_time may read "-" in logs written by other servers in nginx's format.
_SHAPES = {
    # strict enough that every time of this shape parses (see time_parser): no line is taken
    # with a time that cannot be placed in the window
    "time_local": rb"(?:0[1-9]|[12]\d|3[01])/(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}"
    rb":(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60) [+-](?:[01]\d|2[0-3])[0-5]\d",
    "time_iso8601": rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[+-]\d{2}:\d{2}|Z)",
    "status": rb"\d{3}",
    "msec": rb"\d+\.\d+",
    "request_time": rb"\d+\.\d+|-",
    "body_bytes_sent": rb"\d+|-",
    "bytes_sent": rb"\d+|-",
    "request_length": rb"\d+",
    "pipe": rb"[p.]",
}
# Variables of a known alphabet (whatever the escape): matched by it, they cost less and cannot
# take in the text that follows them.
_CLASSES = {
    "remote_addr": rb"[0-9A-Za-z:.%-]*",  # an IPv4/IPv6 address (with a zone), "unix:", or nothing
    "upstream_cache_status": rb"[A-Z]*|-",
}
# Any other variable, by escape: default writes `"`, `\`, bytes < 0x20 and >= 0x7f as \xXX (so no
# raw quote), json writes `\"`, `\\`, \n \r \t \b \f and \u00XX (bytes >= 0x7f raw), none writes
# the raw bytes. Greedy: where a value could hold the text that follows it (a header with spaces
# logged unquoted), it extends to the right, so the variables after it, often nginx's own (a
# `map` flag such as $logged_in), read what nginx wrote for them, not what a client sent.
_VALUES = {
    "default": rb'[^"]*',
    "json": rb'[^"\\\x00-\x1f]*(?:\\(?:["\\bfnrt/]|u[0-9A-Fa-f]{4})[^"\\\x00-\x1f]*)*',
    "none": rb".*",
}


@dataclass(frozen=True)
class Token:
    literal: str | None = None
    var: str | None = None


@dataclass(frozen=True)
class LogFormat:
    """A compiled `log_format`: one regex over the whole line, so a line the format does not
    describe is malformed, and each wanted variable is a group of it."""

    text: str
    tokens: tuple[Token, ...]
    escape: str = "default"
    name: str = "custom"
    warnings: tuple[str, ...] = ()  # e.g. a JSON-shaped format read with default escaping

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(t.var for t in self.tokens if t.var)

    def has(self, var: str) -> bool:
        return var in self.variables

    def parser(self, fields: Sequence[str]) -> Callable[[bytes], tuple[bytes | None, ...] | None]:
        """One line → the raw values of `fields` (None for a field the format lacks), or None."""
        compiled, groups = _compile(self, tuple(dict.fromkeys(fields)))
        order = [groups.get(f) for f in fields]

        def parse(line: bytes) -> tuple[bytes | None, ...] | None:
            match = compiled.fullmatch(line)
            if match is None:
                return None
            return tuple(None if g is None else match.group(g) for g in order)

        return parse

    def column_parser(self, fields: Iterable[str] | None = None) -> ColumnParser:
        """Many lines → match objects, plus a function per variable (of `fields`, default all)
        giving that variable's column.

        Columns let the caller count with `collections.Counter.update` (C speed) instead of a
        Python statement per line per figure; a column is `map(Match.group, rows, …)`, also C
        speed. Only the variables asked for are captured: each group costs time on every line.
        """
        wanted = self.variables if fields is None else fields
        compiled, groups = _compile(self, tuple(dict.fromkeys(v for v in wanted if self.has(v))))
        fullmatch = compiled.fullmatch

        def split(lines: Sequence[bytes]) -> tuple[list[Any], list[int]]:
            rows = list(map(fullmatch, lines))
            if all(rows):  # a match is true, None false: cheaper than `None in rows`
                return rows, []
            bad = [i for i, row in enumerate(rows) if row is None]
            return [row for row in rows if row is not None], bad

        return ColumnParser(split, {name: _group_getter(index) for name, index in groups.items()})

    def unescape(self, raw: bytes) -> bytes:
        return unescape(raw, self.escape)


def _group_getter(index: int) -> Callable[[list[Any]], list[bytes]]:
    group = re.Match.group

    def column(rows: list[Any]) -> list[bytes]:
        return list(map(group, rows, itertools.repeat(index)))

    return column


def resolve_format(text: str, *, escape: str = "", map_vars: Iterable[str] = ()) -> LogFormat:
    """Compile LOG_FORMAT: a preset name, a format string (bare or as nginx's quoted pieces), or
    a whole `log_format name [escape=…] '…' '…';` directive as pasted from nginx.conf (any lines).

    `escape` is LOG_ESCAPE: how nginx escaped the values of a bare format string ("" = not said,
    read as default); a pasted directive says it itself.
    """
    if escape not in ("", *ESCAPES):
        raise ConfigError("LOG_ESCAPE is not valid", got=escape, expected="default, json or none")
    raw = text.strip()
    name = raw.lower()
    said = escape
    if name in PRESETS:
        fmt = PRESETS[name]
    else:
        name = "custom"
        if re.match(r"log_format\s", raw):
            fmt, said = _directive(raw, escape)
        elif _QUOTED_PIECES.fullmatch(raw):  # '…' '…' as split over lines in nginx.conf
            fmt = "".join(_conf_words(raw, what="LOG_FORMAT"))
        else:
            fmt = raw
    if not fmt or "$" not in fmt:
        raise ConfigError(
            "LOG_FORMAT has no $variables",
            got=text,
            expected="a preset (combined, edgecron) or an nginx log_format string such as " + repr(COMBINED_FORMAT),
        )
    tokens = tuple(_tokenize(fmt))
    _check_variables(tokens, map_vars=(*DEFAULT_MAP_VARIABLES, *map_vars))
    warnings: tuple[str, ...] = ()
    if not said and fmt.lstrip().startswith("{"):
        warnings = (
            "LOG_FORMAT looks like JSON but is read with nginx's default escaping: if its log_format "
            "has escape=json, set LOG_ESCAPE=json (or paste the whole log_format directive); "
            "set LOG_ESCAPE=default to silence this",
        )
    return LogFormat(text=fmt, tokens=tokens, escape=said or "default", name=name, warnings=warnings)


def _directive(raw: str, escape: str) -> tuple[str, str]:
    """`log_format name [escape=x] '…' …;` → (the format, its escape)."""
    words = _conf_words(raw, what="the log_format directive in LOG_FORMAT")
    if len(words) < 3:
        raise ConfigError(
            "LOG_FORMAT's log_format directive has no format",
            got=raw,
            expected="log_format name [escape=default|json|none] 'format' …;",
        )
    said = "default"
    args = words[2:]
    if args[0].startswith("escape="):
        said = args[0].removeprefix("escape=")
        args = args[1:]
        if said not in ESCAPES:
            raise ConfigError(
                "LOG_FORMAT's log_format has an unknown escape", got=said, expected="default, json or none"
            )
    if escape and escape != said:
        raise ConfigError(
            f"LOG_ESCAPE={escape} contradicts the pasted log_format (escape={said})",
            expected="LOG_ESCAPE unset (the directive says how values are escaped) or the same value",
        )
    return "".join(args), said


def _conf_words(text: str, *, what: str) -> list[str]:
    """Words of one nginx.conf directive, by nginx's own rules (ngx_conf_read_token): blanks and
    newlines separate words, '…' and "…" quote, \\" \\' \\\\ \\t \\r \\n are escapes, # starts a
    comment, `;` ends the directive."""
    words: list[str] = []
    i, n = 0, len(text)
    ended = False
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ended:
            raise ConfigError(f"{what} has text after its ';'", got=text[i : i + 40], expected="one directive")
        if ch == "#":
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        if ch == ";":
            ended = True
            i += 1
            continue
        quote = ch if ch in "'\"" else ""
        i += 1 if quote else 0
        word: list[str] = []
        while True:
            if i >= n:
                if quote:
                    raise ConfigError(
                        f"{what} has an unclosed {quote}",
                        got=text[-60:],
                        expected="every quoted piece closed, as in nginx.conf",
                    )
                break
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                nxt = text[i + 1]
                word.append({"t": "\t", "r": "\r", "n": "\n"}.get(nxt, nxt if nxt in "\"'\\" else "\\" + nxt))
                i += 2
                continue
            if quote and ch == quote:
                i += 1
                if i < n and text[i] not in " \t\r\n;":
                    raise ConfigError(
                        f"{what} has {text[i]!r} right after a closing quote",
                        got=text[max(0, i - 30) : i + 10],
                        expected="a blank or ';' after each quoted piece",
                    )
                break
            if not quote and ch in " \t\r\n;":
                break
            word.append(ch)
            i += 1
        words.append("".join(word))
    return words


def _tokenize(fmt: str) -> Iterable[Token]:
    pos = 0
    for match in _VAR.finditer(fmt):
        if match.start() > pos:
            yield Token(literal=fmt[pos : match.start()])
        yield Token(var=match.group(1) or match.group(2))
        pos = match.end()
    if pos < len(fmt):
        yield Token(literal=fmt[pos:])


def _check_variables(tokens: Iterable[Token], *, map_vars: Sequence[str]) -> None:
    for token in tokens:
        var = token.var
        if var is None or var in CORE_VARIABLES or var in map_vars:
            continue
        if var.startswith(VARIABLE_PREFIXES) and len(var) > var.index("_") + 1:
            continue
        close = difflib.get_close_matches(var, sorted(CORE_VARIABLES | set(map_vars)), n=1)
        raise ConfigError(
            f"LOG_FORMAT uses an unknown nginx variable ${var}",
            expected=(f"${close[0]}? " if close else "")
            + "a core nginx variable, $http_*/$sent_http_*/$cookie_*/$arg_*/$upstream_http_*, "
            "or a map/set variable listed in LOG_MAP_VARS",
        )


@functools.lru_cache(maxsize=32)
def _compile(fmt: LogFormat, fields: tuple[str, ...]) -> tuple[re.Pattern[bytes], dict[str, int]]:
    """The whole-line regex and the group number of each of `fields` (its first occurrence)."""
    value = _VALUES[fmt.escape]
    pattern = b""
    groups: dict[str, int] = {}
    for token in fmt.tokens:
        if token.literal is not None:
            pattern += re.escape(token.literal.encode())
            continue
        var = token.var or ""
        shape = _SHAPES.get(var) or _CLASSES.get(var) or value
        if var in fields and var not in groups:
            groups[var] = len(groups) + 1
            pattern += b"(" + shape + b")"
        else:
            pattern += b"(?:" + shape + b")"
    return re.compile(pattern, re.S), groups


# --- values -------------------------------------------------------------------------------------

_DEFAULT_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_JSON_ESCAPE = re.compile(rb'\\(?:(["\\/])|([bfnrt])|u([0-9A-Fa-f]{4}))')
_JSON_CONTROL = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t"}


def unescape(raw: bytes, escape: str = "default") -> bytes:
    """A value as nginx wrote it → the bytes it stood for (ngx_http_log_escape / ngx_escape_json).

    default: `\\xXX` is that byte (nginx writes every `\\` as `\\x5C`, so there is no ambiguity);
    json: `\\"` `\\\\` `\\n` `\\r` `\\t` `\\b` `\\f` and `\\u00XX` (other code points as UTF-8);
    none: the bytes themselves.
    """
    if escape == "none" or b"\\" not in raw:
        return raw
    if escape == "json":
        return _JSON_ESCAPE.sub(_json_char, raw)
    return _DEFAULT_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw)


def _json_char(match: re.Match[bytes]) -> bytes:
    plain, control, code = match.groups()
    if plain:
        return plain
    if control:
        return _JSON_CONTROL[control]
    point = int(code, 16)
    return bytes((point,)) if point < 0x80 else chr(point).encode("utf-8", "surrogatepass")


_MONTHS = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}


def time_parser(var: str) -> Callable[[bytes], float | None]:
    """bytes of $time_local / $time_iso8601 / $msec → epoch seconds; cached per distinct value.

    Timestamps repeat within a second, so the cache turns strptime's cost into a dict lookup.
    """
    cache: dict[bytes, float | None] = {}

    def parse_local(raw: bytes) -> float | None:
        # 28/Nov/2026:15:54:33 +0000
        try:
            day, month, year = int(raw[0:2]), _MONTHS[raw[3:6]], int(raw[7:11])
            hh, mm, ss = int(raw[12:14]), int(raw[15:17]), int(raw[18:20])
            sign = -1 if raw[21:22] == b"-" else 1
            offset = sign * (int(raw[22:24]) * 3600 + int(raw[24:26]) * 60)
        except (KeyError, ValueError):
            return None
        return calendar.timegm((year, month, day, hh, mm, ss, 0, 0, 0)) - offset

    def parse_iso(raw: bytes) -> float | None:
        from datetime import datetime

        try:
            return datetime.fromisoformat(raw.decode("ascii")).timestamp()
        except (ValueError, UnicodeDecodeError):
            return None

    def parse_msec(raw: bytes) -> float | None:
        try:
            return float(raw)
        except ValueError:
            return None

    convert = {"time_local": parse_local, "time_iso8601": parse_iso, "msec": parse_msec}[var]

    def cached(raw: bytes) -> float | None:
        value = cache.get(raw)
        if value is None:
            if len(cache) > 200_000:
                cache.clear()  # bounded memory however long the run
            value = cache[raw] = convert(raw)
        return value

    return cached


def upstream_seconds(raw: bytes | None) -> float | None:
    """`$upstream_response_time` may list several attempts ("0.01, 0.20 : 0.05"): their sum."""
    return upstream_times(raw)[0]


def upstream_times(raw: bytes | None) -> tuple[float | None, float | None]:
    """`$upstream_response_time` → (sum of its attempts, the last attempt); None where none.

    `,` separates attempts at several servers and ` : ` internal redirects; `-` is an attempt
    with no time (escape=json and none write an absent value as nothing).
    """
    if not raw or raw == b"-":
        return None, None
    total = 0.0
    seen = False
    last: float | None = None
    for item in raw.replace(b":", b",").split(b","):
        item = item.strip()
        if item and item != b"-":
            try:
                last = float(item)
            except ValueError:
                return None, None
            total += last
            seen = True
        else:
            last = None
    return (total if seen else None), last


def display(raw: bytes | None, *, limit: int = 300) -> str:
    """Log bytes for a human: nginx's `\\xXX` escapes kept, other bytes shown escaped, cut short."""
    if raw is None:
        return ""
    text = visible(raw[:limit].decode("utf-8", "backslashreplace"))  # a log line must not drive a terminal
    return text + ("…" if len(raw) > limit else "")
