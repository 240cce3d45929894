"""nginx `log_format` strings compiled into fast line parsers.

`LOG_FORMAT` takes the format as written in nginx.conf (a preset name, the bare format string, or
the whole `log_format name '...' '...';` directive pasted). It is compiled once:

- fast path: with nginx's default escaping a raw `"` never occurs inside a variable (it is written
  `\\x22`), so a line is split on `"` and each piece is cut at the literal text the format puts
  between variables. The cutting code is generated per format (only for the fields asked for).
- fallback: a compiled bytes regex, used when the format cannot be cut that way (two variables
  with no literal between them, `escape=json`, unbalanced quotes).

Lines stay bytes end to end: non-UTF-8 bytes cost nothing and are decoded only for display.
"""

from __future__ import annotations

import calendar
import difflib
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
    """`split(lines)` → (rows, bad lines); `columns[var](rows)` → that variable's values."""

    split: Callable[[Sequence[bytes]], tuple[list[Any], list[bytes]]]
    columns: dict[str, Callable[[list[Any]], list[bytes]]]


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_DIRECTIVE = re.compile(r"^\s*log_format\s+\S+\s*(escape=(\w+)\s*)?(.*?);?\s*$", re.S)
# Patterns for the regex fallback where a variable's shape is known (unquoted values).
_SHAPES = {
    "time_local": rb"\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}",
    "time_iso8601": rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[+-]\d{2}:\d{2}|Z)",
    "status": rb"\d{3}",
    "msec": rb"\d+\.\d+",
    "request_time": rb"\d+\.\d+|-",
    "body_bytes_sent": rb"\d+|-",
    "bytes_sent": rb"\d+|-",
}


@dataclass(frozen=True)
class Token:
    literal: str | None = None
    var: str | None = None


@dataclass(frozen=True)
class LogFormat:
    """A compiled `log_format`: `parser(fields)` gives a function line → tuple of values or None."""

    text: str
    tokens: tuple[Token, ...]
    escape: str = "default"
    name: str = "custom"

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(t.var for t in self.tokens if t.var)

    def has(self, var: str) -> bool:
        return var in self.variables

    @property
    def fast(self) -> bool:
        return _fast_parts(self) is not None

    def parser(self, fields: Sequence[str]) -> Callable[[bytes], tuple[bytes | None, ...] | None]:
        """One line → the values of `fields` (None for a field the format lacks), or None."""
        parts = _fast_parts(self)
        if parts is not None:
            return _compile_split(parts, fields)
        return _compile_regex(self, fields)

    def column_parser(self) -> ColumnParser:
        """Many lines → rows, plus a function per variable giving that variable's column.

        Columns let the caller count with `collections.Counter.update` (C speed) instead of a
        Python statement per line per figure, and extract only the columns it needs (some only
        for the few rows that need them).
        """
        parts = _fast_parts(self)
        if parts is not None:
            return _compile_columns(parts, self.variables)
        names = list(dict.fromkeys(self.variables))
        row = _compile_regex(self, names)

        def split(lines: Sequence[bytes]) -> tuple[list[Any], list[bytes]]:
            rows, bad = [], []
            for line in lines:
                values = row(line)
                if values is None:
                    bad.append(line)
                else:
                    rows.append(values)
            return rows, bad

        getters = {name: _item_getter(i) for i, name in enumerate(names)}
        return ColumnParser(split, getters)


def _item_getter(index: int) -> Callable[[list[Any]], list[bytes]]:
    def column(rows: list[Any]) -> list[bytes]:
        return [r[index] for r in rows]

    return column


def resolve_format(text: str, *, map_vars: Iterable[str] = ()) -> LogFormat:
    """Compile LOG_FORMAT (preset name, format string, or a pasted `log_format` directive)."""
    raw = text.strip()
    name = raw.lower()
    escape = "default"
    if name in PRESETS:
        fmt = PRESETS[name]
    else:
        name = "custom"
        directive = _DIRECTIVE.match(raw) if raw.startswith("log_format") else None
        if directive:
            escape = directive.group(2) or "default"
            raw = directive.group(3)
        fmt = _unquote_pieces(raw)
    if not fmt or "$" not in fmt:
        raise ConfigError(
            "LOG_FORMAT has no $variables",
            got=text,
            expected="a preset (combined, edgecron) or an nginx log_format string such as " + repr(COMBINED_FORMAT),
        )
    tokens = tuple(_tokenize(fmt))
    _check_variables(tokens, map_vars=(*DEFAULT_MAP_VARIABLES, *map_vars))
    return LogFormat(text=fmt, tokens=tokens, escape=escape, name=name)


def _unquote_pieces(raw: str) -> str:
    """`'a' 'b'` (as split over lines in nginx.conf) → `ab`; a bare string is returned as is."""
    pieces = re.findall(r"'([^']*)'", raw)
    if pieces and re.fullmatch(r"(\s*'[^']*'\s*)+", raw):
        return "".join(pieces)
    return raw


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


# --- fast path: split on '"', then cut each piece at the literals --------------------------------


def _fast_parts(fmt: LogFormat) -> list[list[Token]] | None:
    """The format as pieces between quotes, or None when it cannot be cut without a regex."""
    if fmt.escape != "default":
        return None  # escape=json writes \" inside values; escape=none writes raw quotes
    parts: list[list[Token]] = [[]]
    for token in fmt.tokens:
        if token.var:
            parts[-1].append(token)
            continue
        pieces = (token.literal or "").split('"')
        for i, piece in enumerate(pieces):
            if i:
                parts.append([])
            if piece:
                parts[-1].append(Token(literal=piece))
    if len(parts) % 2 == 0:
        return None  # unbalanced quotes in the format
    for part in parts:
        for a, b in itertools.pairwise(part):
            if a.var and b.var:
                return None  # $a$b: no literal to cut at
    return parts


def _compile_split(
    parts: list[list[Token]], fields: Sequence[str]
) -> Callable[[bytes], tuple[bytes | None, ...] | None]:
    """Generate `parse(line)` for this format: split on '"', cut the pieces that hold wanted fields."""
    wanted = set(fields)
    stored: set[str] = set()
    body = [
        "def parse(line):",
        "    p = line.split(b'\"')",
        f"    if len(p) != {len(parts)}:",
        "        return None",
    ]
    consts: dict[str, bytes] = {}

    def const(value: str) -> str:
        name = f"L{len(consts)}"
        consts[name] = value.encode()
        return name

    for index, part in enumerate(parts):
        needed = {t.var for t in part if t.var in wanted and t.var not in stored}
        if not needed:
            continue  # a piece with nothing we need is not even looked at
        body.append(f"    s = p[{index}]")
        pos = "0"
        for k, token in enumerate(part):
            if token.literal is not None:
                if k == 0:
                    body += [f"    if not s.startswith({const(token.literal)}):", "        return None"]
                    pos = str(len(token.literal.encode()))
                continue
            var = token.var or ""
            store = var in needed and var not in stored
            target = f"v_{var}" if store else "_"
            nxt = part[k + 1] if k + 1 < len(part) else None
            if nxt is None:
                body.append(f"    {target} = s[{pos}:]")
            elif k + 2 == len(part):  # the piece's last literal must end the piece
                n = len((nxt.literal or "").encode())
                body += [f"    if not s.endswith({const(nxt.literal or '')}):", "        return None"]
                body.append(f"    {target} = s[{pos}:len(s) - {n}]")
            else:
                n = len((nxt.literal or "").encode())
                body += [f"    j = s.find({const(nxt.literal or '')}, {pos})", "    if j < 0:"]
                body += ["        return None", f"    {target} = s[{pos}:j]", f"    a = j + {n}"]
                pos = "a"
            if store:
                stored.add(var)
            if needed <= stored:
                break
    if "status" in wanted:
        body += ["    if not v_status.isdigit():", "        return None"]
    values = ", ".join(f"v_{f}" if f in stored else "None" for f in fields)
    body.append(f"    return ({values}{',' if len(fields) == 1 else ''})")
    namespace: dict[str, object] = dict(consts)
    exec("\n".join(body), namespace)  # generated from the format's own literals, not from input
    return namespace["parse"]  # type: ignore[return-value]


def _compile_columns(parts: list[list[Token]], variables: Iterable[str]) -> ColumnParser:
    """Generate `split(lines)` (every line split on '"') and one column function per variable.

    Within a piece, a value is cut at constant offsets when it is the piece's only variable,
    otherwise at the literal before it (searched from the right for the piece's last variable,
    from the left otherwise) and the literal after it.
    """
    consts: dict[str, bytes] = {}

    def const(value: str) -> str:
        name = f"L{len(consts)}"
        consts[name] = value.encode()
        return name

    where: dict[str, tuple[int, int]] = {}
    for index, part in enumerate(parts):
        for k, token in enumerate(part):
            if token.var and token.var not in where:
                where[token.var] = (index, k)
    n = len(parts)
    body = [
        "def split(lines):",
        "    rows = [line.split(b'\"') for line in lines]",
        f"    if set(map(len, rows)) == {{{n}}}:",
        "        return rows, []",
        f"    bad = [line for line, r in zip(lines, rows) if len(r) != {n}]",
        f"    return [r for r in rows if len(r) == {n}], bad",
    ]
    for name in variables:
        if name not in where:
            continue
        index, k = where[name]
        part = parts[index]
        before = part[k - 1].literal if k > 0 else None
        after = part[k + 1].literal if k + 1 < len(part) else None
        n_before = len((before or "").encode())
        n_after = len((after or "").encode())
        is_last_var = not any(t.var for t in part[k + 1 :])
        stop = f"-{n_after}" if n_after else ""
        fixed_start = 0 if k == 0 else n_before if k == 1 else None
        if sum(1 for t in part if t.var) == 1:
            expr = f"r[{index}][{n_before}:{stop}]" if n_before or stop else f"r[{index}]"
        elif name == "status" and fixed_start is not None:
            expr = f"r[{index}][{fixed_start}:{fixed_start + 3}]"  # nginx's status: 3 digits
        elif is_last_var and k > 0 and (before or "") not in (after or ""):
            expr = f"r[{index}].rpartition({const(before or '')})[2][:{stop}]"
        elif is_last_var:
            end = f"len(s) - {n_after}" if n_after else "len(s)"
            start = f"s.rfind({const(before or '')}, 0, {end}) + {n_before}" if k > 0 else "0"
            expr = f"(s := r[{index}])[{start}:{stop}]"
        elif fixed_start is not None:
            expr = f"r[{index}][{fixed_start}:].partition({const(after or '')})[0]"
        else:
            start = f"s.find({const(before or '')}) + {n_before}"
            expr = f"(s := r[{index}])[(a := {start}):s.find({const(after or '')}, a)]"
        body += [f"def get_{name}(rows):", f"    return [{expr} for r in rows]"]
    namespace: dict[str, Any] = dict(consts)
    exec("\n".join(body), namespace)  # generated from the format's own literals, not from input
    getters = {name: namespace[f"get_{name}"] for name in where}
    return ColumnParser(namespace["split"], getters)


# --- fallback: one compiled regex ------------------------------------------------------------------


def _compile_regex(fmt: LogFormat, fields: Sequence[str]) -> Callable[[bytes], tuple[bytes | None, ...] | None]:
    wanted = set(fields)
    quoted_value = rb'(?:[^"\\]|\\.)*' if fmt.escape == "json" else rb'[^"]*'
    pattern = b""
    inside_quotes = False
    named: set[str] = set()
    for token in fmt.tokens:
        if token.literal is not None:
            pattern += re.escape(token.literal.encode())
            inside_quotes ^= token.literal.count('"') % 2 == 1
            continue
        var = token.var or ""
        shape = quoted_value if inside_quotes else _SHAPES.get(var, rb".*?")
        if var in wanted and var not in named:
            named.add(var)
            pattern += b"(?P<" + var.encode() + b">" + shape + b")"
        else:
            pattern += b"(?:" + shape + b")"
    compiled = re.compile(pattern, re.S)
    order = [f if f in named else None for f in fields]

    def parse(line: bytes) -> tuple[bytes | None, ...] | None:
        match = compiled.fullmatch(line)
        if match is None:
            return None
        return tuple(match.group(f) if f else None for f in order)

    return parse


# --- values -------------------------------------------------------------------------------------

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
    if var == "msec":
        return convert

    def cached(raw: bytes) -> float | None:
        value = cache.get(raw)
        if value is None:
            if len(cache) > 200_000:
                cache.clear()  # bounded memory however long the run
            value = cache[raw] = convert(raw)
        return value

    return cached


def upstream_seconds(raw: bytes | None) -> float | None:
    """`$upstream_response_time` may list several attempts ("0.01, 0.20 : 0.05"): their sum.

    `,` separates retries and ` : ` internal redirects; `-` is an attempt with no response.
    """
    if raw is None or raw in (b"-", b""):
        return None
    total = 0.0
    seen = False
    for item in raw.replace(b":", b",").split(b","):
        item = item.strip()
        if item and item != b"-":
            try:
                total += float(item)
                seen = True
            except ValueError:
                return None
    return total if seen else None


def display(raw: bytes | None, *, limit: int = 300) -> str:
    """Log bytes for a human: nginx's `\\xXX` escapes kept, other bytes shown escaped, cut short."""
    if raw is None:
        return ""
    text = visible(raw[:limit].decode("utf-8", "backslashreplace"))  # a log line must not drive a terminal
    return text + ("…" if len(raw) > limit else "")
