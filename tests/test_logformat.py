"""nginx log_format compilation: presets, pasted directives (one or many lines), escapes as nginx
writes them, strict structure (a line the format does not describe is malformed)."""

from __future__ import annotations

import pytest
from edgecron.errors import ConfigError
from edgecron.logformat import (
    COMBINED_FORMAT,
    EDGECRON_FORMAT,
    display,
    resolve_format,
    time_parser,
    unescape,
    upstream_seconds,
    upstream_times,
)
from hypothesis import given, settings
from hypothesis import strategies as st

FIELDS = [
    "remote_addr",
    "time_local",
    "request",
    "status",
    "body_bytes_sent",
    "http_user_agent",
    "request_time",
    "upstream_response_time",
    "upstream_cache_status",
    "http_cf_ray",
    "logged_in",
    "sent_http_cache_control",
]

# GoAccess's CI lines (IPv6, OPTIONS *, a 408 with "-" request, HEAD), in the edgecron format.
EDGECRON_LINES = [
    b'::1 - - [28/Nov/2026:14:40:59 +0100] "OPTIONS * HTTP/1.0" 200 0 "-" "curl/8" rt=0.000 '
    b'urt="-" cs=- ray=- cip=- li=0 cc="-"',
    b'2001:db8::7 - - [28/Nov/2026:14:40:59 +0000] "-" 408 0 "-" "-" rt=60.001 urt="-" cs=- ray=- cip=- li=- cc="-"',
    b'203.0.113.5 - bob [28/Nov/2026:14:41:00 -0500] "HEAD /a?x=1 HTTP/1.1" 200 0 "https://r/" '
    b'"Mozilla \\x22quoted\\x22 \\xC3\\xA9" rt=0.250 urt="0.01, 0.20 : 0.05" cs=MISS '
    b'ray=8f1c2e-FRA cip=198.51.100.7 li=1 cc="public, max-age=60"',
]


def test_edgecron_preset_parses_edge_cases() -> None:
    parse = resolve_format("edgecron").parser(FIELDS)
    v6, timeout, quoted = (dict(zip(FIELDS, parse(line) or (), strict=True)) for line in EDGECRON_LINES)
    assert v6["remote_addr"] == b"::1" and v6["request"] == b"OPTIONS * HTTP/1.0"
    assert timeout["request"] == b"-" and timeout["status"] == b"408" and timeout["request_time"] == b"60.001"
    assert quoted["http_user_agent"] == b"Mozilla \\x22quoted\\x22 \\xC3\\xA9"
    assert quoted["upstream_response_time"] == b"0.01, 0.20 : 0.05"
    assert quoted["sent_http_cache_control"] == b"public, max-age=60"
    assert quoted["logged_in"] == b"1" and quoted["http_cf_ray"] == b"8f1c2e-FRA"


def test_column_parser_matches_line_parser_and_reports_bad_lines() -> None:
    fmt = resolve_format("edgecron")
    columns = fmt.column_parser()
    rows, bad = columns.split([*EDGECRON_LINES, b'garbage "with one quote', b""])
    assert bad == [3, 4]
    line_parse = fmt.parser(FIELDS)
    for index, field in enumerate(FIELDS):
        assert columns.columns[field](rows) == [line_parse(line)[index] for line in EDGECRON_LINES]  # type: ignore[index]


def test_pasted_directive_with_escape_json() -> None:
    fmt = resolve_format(
        "log_format api escape=json '$remote_addr [$time_local] '\n"
        "                  '\"$request\" $status $request_time';"
    )
    assert fmt.escape == "json"
    parse = fmt.parser(["request", "status", "request_time"])
    assert parse(b'10.0.0.1 [28/Nov/2026:14:40:59 +0000] "GET /\\"x\\" HTTP/1.1" 503 0.020') == (
        b'GET /\\"x\\" HTTP/1.1',
        b"503",
        b"0.020",
    )
    rows, bad = fmt.column_parser().split([b"nonsense"])
    assert rows == [] and bad == [0]


def test_adjacent_variables() -> None:
    fmt = resolve_format("$status$request_time [$time_local]")
    assert fmt.parser(["status", "request_time"])(b"2000.125 [28/Nov/2026:14:40:59 +0000]") == (b"200", b"0.125")


def test_preset_names_and_strings() -> None:
    assert resolve_format("Combined").text == COMBINED_FORMAT
    assert resolve_format(EDGECRON_FORMAT).has("http_cf_connecting_ip")
    assert resolve_format("'$remote_addr $status'").variables == ("remote_addr", "status")


def test_unknown_variable_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_format('$remote_addr "$request" $status $reqest_time')
    assert "$reqest_time" in err.value.message and "$request_time?" in err.value.message


def test_map_variables_are_accepted_when_listed() -> None:
    with pytest.raises(ConfigError):
        resolve_format("$status ab=$ab_bucket")
    assert resolve_format("$status ab=$ab_bucket", map_vars=["ab_bucket"]).has("ab_bucket")
    assert resolve_format("$status $http_x_forwarded_for $cookie_sessionid").has("cookie_sessionid")


def test_format_without_variables_is_rejected() -> None:
    with pytest.raises(ConfigError):
        resolve_format("main")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"0.01, 0.20 : 0.05", 0.26), (b"-", None), (b"0.100, -", 0.1), (b"0.5", 0.5), (b"x", None), (None, None)],
)
def test_upstream_seconds_sums_attempts(raw: bytes | None, expected: float | None) -> None:
    got = upstream_seconds(raw)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_time_parsers() -> None:
    local = time_parser("time_local")
    assert local(b"28/Nov/2026:13:40:59 +0000") == 1795873259 - 1795873259 % 86400 + 13 * 3600 + 40 * 60 + 59
    assert local(b"28/Nov/2026:13:40:59 +0000") == local(b"28/Nov/2026:14:40:59 +0100")
    assert local(b"28/Nov/2026:08:40:59 -0500") == local(b"28/Nov/2026:13:40:59 +0000")
    assert local(b"99/Foo/2026:14:40:59 +0100") is None
    iso = time_parser("time_iso8601")
    assert iso(b"2026-11-28T13:40:59+00:00") == local(b"28/Nov/2026:13:40:59 +0000")
    assert time_parser("msec")(b"1795873259.123") == pytest.approx(1795873259.123)


def test_display_keeps_escapes_and_shows_raw_bytes() -> None:
    assert display(b"ua \\x22q\\x22 \xff") == "ua \\x22q\\x22 \\xff"
    assert display(b"a" * 400, limit=10) == "a" * 10 + "…"


# --- issue 11: strict structure, pasted directives, escapes exactly as nginx writes them ------------

COMBINED_LINE = b'203.0.113.5 - - [28/Nov/2026:14:41:00 +0000] "GET /a HTTP/1.1" 200 12 "-" "curl/8"'


@pytest.mark.parametrize(
    "line",
    [
        b'203.0.113.5 [28/Nov/2026:14:41:00 +0000] "GET /a HTTP/1.1" 200 12 "-" "curl/8"',  # no " - $remote_user"
        b'203.0.113.5 - - [28/Nov/2026:14:41:00 +0000] "GET /a HTTP/1.1" 200 12 "-"',  # no user agent
        b'203.0.113.5 - - [28/Nov/2026:14:41:00 +0000] "GET /a HTTP/1.1" 2000 12 "-" "curl/8"',  # status of 4 digits
        b'203.0.113.5 - - [28/Nov/2026:14:41:00 +0000] "GET /a HTTP/1.1" 200 12 "-" "curl/8" extra',
        b'203.0.113.5 - - [99/Foo/2026:14:41:00 +0000] "GET /a HTTP/1.1" 200 12 "-" "curl/8"',  # no time
        b'203.0.113.5 - - 28/Nov/2026:14:41:00 +0000 "GET /a HTTP/1.1" 200 12 "-" "curl/8"',  # no brackets
    ],
)
def test_a_line_the_combined_format_does_not_describe_is_malformed(line: bytes) -> None:
    columns = resolve_format("combined").column_parser()
    rows, bad = columns.split([COMBINED_LINE, line])
    assert bad == [1]
    assert columns.columns["status"](rows) == [b"200"]


def test_values_written_with_escape_json_are_decoded_as_nginx_encoded_them() -> None:
    # ngx_escape_json: " and \ get a backslash, \n \r \t \b \f their letter, other bytes < 0x20
    # \u00XX (upper-case hex); bytes >= 0x7f (UTF-8 or not) are written raw.
    sent = b'a"b\\c\n\r\t\x08\x0c\x01\x1f\x7f\xc3\xa9\xff'
    written = b'a\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001F\x7f\xc3\xa9\xff'
    assert unescape(written, "json") == sent
    assert unescape(b"plain", "json") == b"plain"


def test_values_written_with_default_escaping_are_decoded() -> None:
    # ngx_http_log_escape: ", \, bytes < 0x20 and >= 0x7f as \xXX; a backslash itself is \x5C
    assert unescape(b"a\\x22b\\x5Cc\\x0A\\xC3\\xA9\\x7F", "default") == b'a"b\\c\n\xc3\xa9\x7f'
    assert unescape(b"a\\x22b", "none") == b"a\\x22b"


JSON_FORMAT = '{"time":"$time_local","request":"$request","status":$status,"ua":"$http_user_agent"}'
JSON_LINE = (
    b'{"time":"28/Nov/2026:14:41:00 +0000","request":"GET /q?x=\\"1\\" HTTP/1.1","status":200,'
    b'"ua":"Mozilla \\"quoted\\" \\\\ \\u0001 \xc3\xa9"}'
)


def test_a_bare_json_format_with_log_escape_json_parses_escaped_quotes() -> None:
    fmt = resolve_format(JSON_FORMAT, escape="json")
    assert fmt.escape == "json" and not fmt.warnings
    values = fmt.parser(["request", "status", "http_user_agent"])(JSON_LINE)
    assert values is not None
    request, status, agent = values
    assert status == b"200"
    assert fmt.unescape(request or b"") == b'GET /q?x="1" HTTP/1.1'
    assert fmt.unescape(agent or b"") == 'Mozilla "quoted" \\ \x01 é'.encode()


def test_a_json_shaped_format_without_escape_json_gets_a_hint() -> None:
    fmt = resolve_format(JSON_FORMAT)
    assert fmt.escape == "default"
    assert fmt.warnings and "LOG_ESCAPE=json" in fmt.warnings[0]
    assert not resolve_format(JSON_FORMAT, escape="default").warnings  # said explicitly: no hint


def test_log_escape_must_agree_with_a_pasted_directive() -> None:
    directive = "log_format j escape=json '" + JSON_FORMAT + "';"
    assert resolve_format(directive).escape == "json"
    assert resolve_format(directive, escape="json").escape == "json"
    with pytest.raises(ConfigError) as err:
        resolve_format(directive, escape="none")
    assert "contradicts" in err.value.message
    with pytest.raises(ConfigError):
        resolve_format("$status", escape="xml")


def test_a_directive_pasted_over_many_lines_with_nginx_quoting() -> None:
    pasted = """log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '   # the usual nginx.conf layout
                      "\\"$http_user_agent\\" \\"$http_x_forwarded_for\\"";"""
    fmt = resolve_format(pasted)
    assert fmt.text == COMBINED_FORMAT + ' "$http_x_forwarded_for"'
    assert fmt.escape == "default" and fmt.name == "custom"
    none = resolve_format("log_format raw escape=none\n'$status \"$http_user_agent\"';")
    assert none.escape == "none"
    assert none.parser(["http_user_agent"])(b'200 "a "raw" quote"') == (b'a "raw" quote',)


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("log_format main '$status", "unclosed"),
        ("log_format main '$status'x;", "right after a closing quote"),
        ("log_format main;", "no format"),
        ("log_format main '$status'; access_log x;", "after its ';'"),
        ("log_format main escape=xml '$status';", "unknown escape"),
    ],
)
def test_a_broken_directive_is_a_config_error_saying_what(pasted: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_format(pasted)
    assert expected in err.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"0.001, 0.020", (0.021, 0.020)),  # several upstream servers
        (b"0.001 : 0.020", (0.021, 0.020)),  # an internal redirect
        (b"0.500, -", (0.5, None)),  # the last attempt got no response
        (b"-", (None, None)),
        (b"", (None, None)),  # escape=json/none write an absent value as nothing
        (b"0.010", (0.01, 0.01)),
    ],
)
def test_upstream_times_sum_and_last_attempt(raw: bytes, expected: tuple[float | None, float | None]) -> None:
    total, last = upstream_times(raw)
    assert (total, last) == (pytest.approx(expected[0]) if expected[0] is not None else None, expected[1])


def test_a_bare_format_that_starts_with_a_quote_is_not_taken_for_nginx_pieces() -> None:
    assert resolve_format('"$request" $status').text == '"$request" $status'
    assert resolve_format("'$request' '$status'").text == "$request$status"
    assert resolve_format("'\"$request\" '\n  '$status';").text == '"$request" $status'


def test_a_header_with_spaces_logged_unquoted_cannot_set_the_fields_after_it() -> None:
    # CF-Ray and CF-Connecting-IP are sent by whoever reaches nginx; the edgecron preset logs them
    # bare, so their spaces can mimic "li=1": the flag nginx wrote last is the one read.
    line = (
        b'203.0.113.5 - - [28/Nov/2026:14:41:00 +0000] "GET / HTTP/1.1" 200 1 "-" "ua" rt=0.001 urt="-" '
        b'cs=HIT ray=abc li=1 cip=6.6.6.6 cip=203.0.113.9 li=1 x li=0 cc="max-age=3600"'
    )
    values = resolve_format("edgecron").parser(["logged_in", "upstream_cache_status", "sent_http_cache_control"])(line)
    assert values == (b"0", b"HIT", b"max-age=3600")


def nginx_escape_default(value: bytes) -> bytes:
    """ngx_http_log_escape, from its table: ", \\, bytes < 0x20 and >= 0x7f as \\xXX (upper case)."""
    return b"".join(b"\\x%02X" % b if b in b'"\\' or b < 0x20 or b >= 0x7F else bytes((b,)) for b in value)


def nginx_escape_json(value: bytes) -> bytes:
    """ngx_escape_json: \\" \\\\ \\n \\r \\t \\b \\f, other bytes < 0x20 as \\u00XX, the rest raw."""
    named = {0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x08: b"\\b", 0x0C: b"\\f"}
    out = []
    for b in value:
        if b in b'"\\':
            out.append(b"\\" + bytes((b,)))
        elif b < 0x20:
            out.append(named.get(b, b"\\u00%02X" % b))
        else:
            out.append(bytes((b,)))
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=40))
def test_every_value_nginx_escapes_parses_and_decodes_back(value: bytes) -> None:
    for escape, encode in (("default", nginx_escape_default), ("json", nginx_escape_json)):
        written = encode(value)
        fmt = resolve_format('$status "$http_user_agent" "$http_referer"', escape=escape)
        parsed = fmt.parser(["http_user_agent", "http_referer"])(b'200 "' + written + b'" "' + written + b'"')
        assert parsed == (written, written)
        assert unescape(written, escape) == value
