"""nginx log_format compilation: presets, pasted directives, escapes, fast path == regex path."""

from __future__ import annotations

import pytest
from edgecron.errors import ConfigError
from edgecron.logformat import (
    COMBINED_FORMAT,
    EDGECRON_FORMAT,
    _compile_regex,
    display,
    resolve_format,
    time_parser,
    upstream_seconds,
)

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


@pytest.mark.parametrize("preset", ["combined", "edgecron"])
def test_fast_path_agrees_with_the_regex(preset: str) -> None:
    fmt = resolve_format(preset)
    assert fmt.fast
    fields = [f for f in FIELDS if fmt.has(f)]
    fast, slow = fmt.parser(fields), _compile_regex(fmt, fields)
    lines = EDGECRON_LINES if preset == "edgecron" else [line.split(b" rt=")[0] for line in EDGECRON_LINES]
    for line in lines:
        assert fast(line) is not None
        assert fast(line) == slow(line)


def test_column_parser_matches_line_parser_and_reports_bad_lines() -> None:
    fmt = resolve_format("edgecron")
    columns = fmt.column_parser()
    rows, bad = columns.split([*EDGECRON_LINES, b'garbage "with one quote', b""])
    assert bad == [b'garbage "with one quote', b""]
    line_parse = fmt.parser(FIELDS)
    for index, field in enumerate(FIELDS):
        assert columns.columns[field](rows) == [line_parse(line)[index] for line in EDGECRON_LINES]  # type: ignore[index]


def test_pasted_directive_with_escape_json_uses_the_regex() -> None:
    fmt = resolve_format(
        "log_format api escape=json '$remote_addr [$time_local] '\n"
        "                  '\"$request\" $status $request_time';"
    )
    assert fmt.escape == "json" and not fmt.fast
    parse = fmt.parser(["request", "status", "request_time"])
    assert parse(b'10.0.0.1 [28/Nov/2026:14:40:59 +0000] "GET /\\"x\\" HTTP/1.1" 503 0.020') == (
        b'GET /\\"x\\" HTTP/1.1',
        b"503",
        b"0.020",
    )
    rows, bad = fmt.column_parser().split([b"nonsense"])
    assert rows == [] and bad == [b"nonsense"]


def test_adjacent_variables_fall_back_to_the_regex() -> None:
    fmt = resolve_format("$status$request_time [$time_local]")
    assert not fmt.fast
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
