"""Issue 11, logs: every line read is either parsed or malformed (over-long ones too), a line the
format does not describe or whose time does not parse is malformed, and --json's figures
(per status, cache status, upstream times, top 404/5xx paths, malformed places) are exact."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from edgecron.accesslog import LogReader
from edgecron.logformat import resolve_format
from edgecron.loglines import line_numbers
from edgecron.logsummary import LogSummary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

STAMP = "28/Nov/2026:14:41:00 +0000"


def combined(path: str = "/a", *, status: int = 200, stamp: str = STAMP) -> bytes:
    return f'203.0.113.5 - - [{stamp}] "GET {path} HTTP/1.1" {status} 12 "-" "curl/8"'.encode()


def summarize(lines: list[bytes], fmt: str = "combined", **kwargs: object) -> LogSummary:
    summary = LogSummary(resolve_format(fmt), **kwargs)  # type: ignore[arg-type]
    summary.feed(lines)
    return summary


def test_a_combined_line_without_its_remote_user_fields_is_malformed_not_a_200() -> None:
    summary = summarize([combined(), combined().replace(b" - - [", b" [")])
    assert (summary.requests, summary.malformed) == (1, 1)
    assert summary.status_counts() == {"200": 1}


def test_a_line_whose_time_does_not_parse_is_malformed_not_outside_the_window() -> None:
    bad_time = combined(stamp="28/Nov/2026:25:61:00 +0000")
    summary = summarize([combined(), bad_time, combined()], since=0.0)
    assert (summary.requests, summary.outside_window, summary.malformed) == (2, 0, 1)
    assert summary.malformed_samples == [bad_time.decode()]


def test_an_iso_time_that_is_no_date_is_malformed() -> None:
    fmt = '$remote_addr [$time_iso8601] "$request" $status'
    good = b'198.51.100.1 [2026-11-28T14:41:00+00:00] "GET / HTTP/1.1" 200'
    no_date = b'198.51.100.1 [2026-02-30T14:41:00+00:00] "GET / HTTP/1.1" 200'
    summary = summarize([good, no_date, good], fmt)
    assert (summary.requests, summary.outside_window, summary.malformed) == (2, 0, 1)


def test_lines_with_escaped_quotes_in_a_json_log_all_parse() -> None:
    fmt = resolve_format(
        "log_format json_combined escape=json\n"
        "  '{'\n"
        '    \'"time_local":"$time_local",\'\n'
        '    \'"request":"$request","status": "$status",\'\n'
        '    \'"http_user_agent":"$http_user_agent","upstream_cache_status":"$upstream_cache_status"\'\n'
        "  '}';"
    )
    lines = [
        b'{"time_local":"28/Nov/2026:14:41:00 +0000","request":"GET /a?q=\\"x\\" HTTP/1.1","status": "404",'
        b'"http_user_agent":"a \\"b\\" \\\\ \\u0007","upstream_cache_status":""}',
        b'{"time_local":"28/Nov/2026:14:41:00 +0000","request":"GET /b HTTP/1.1","status": "200",'
        b'"http_user_agent":"ua","upstream_cache_status":"HIT"}',
    ]
    summary = LogSummary(fmt)
    summary.feed(lines)
    assert (summary.requests, summary.malformed) == (2, 0)
    assert summary.top_paths("404") == [{"path": "/a", "count": 1}]
    assert summary.cache_status_counts() == {"-": 1, "HIT": 1}


EDGE = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time urt="$upstream_response_time" cs=$upstream_cache_status'
)


def edge(path: str, status: int, urt: str, cs: str = "MISS") -> bytes:
    return (
        f'203.0.113.5 - - [{STAMP}] "GET {path} HTTP/1.1" {status} 1 "-" "ua" rt=0.100 urt="{urt}" cs={cs}'
    ).encode()


def test_figures_for_json_statuses_cache_upstream_times_and_top_paths() -> None:
    lines = [
        *(edge(f"/gone-{i % 3}?utm={i}", 404, "0.010") for i in range(12)),
        *(edge("/api\\x22x?id=1", 502, "0.001, 0.020") for _ in range(3)),  # a dead first server
        *(edge("/search", 504, "0.001 : 0.020", cs="-") for _ in range(2)),  # an internal redirect
        *(edge("/", 499, "-", cs="HIT") for _ in range(4)),  # the client went away
        *(edge("/", 200, "0.030", cs="HIT") for _ in range(79)),
    ]
    summary = summarize(lines, EDGE)
    assert summary.status_counts() == {"200": 79, "404": 12, "499": 4, "502": 3, "504": 2}
    assert summary.status_classes() == {"2xx": 79, "499": 4, "4xx": 12, "5xx": 5}
    assert summary.cache_status_counts() == {"HIT": 83, "MISS": 15, "-": 2}
    assert summary.top_paths("404") == [{"path": f"/gone-{i}", "count": 4} for i in range(3)]
    assert summary.top_paths("5xx") == [{"path": '/api"x', "count": 3}, {"path": "/search", "count": 2}]
    upstream = summary.upstream_percentiles()
    assert upstream is not None and upstream["requests"] == 96  # "-" is no upstream time
    assert upstream["sum"] == {"p50": 0.03, "p95": 0.03, "p99": 0.03}
    assert upstream["last"] == {"p50": 0.03, "p95": 0.03, "p99": 0.03}
    few = summarize(lines[:17], EDGE).upstream_percentiles()
    assert few is not None
    assert few["sum"] == {"p50": 0.01, "p95": 0.021, "p99": 0.021}
    assert few["last"] == {"p50": 0.01, "p95": 0.02, "p99": 0.02}
    assert summary.upstream_retries == 3


# --- total == parsed + malformed, whatever the lines ------------------------------------------------

KINDS = {
    "good": lambda i: combined(f"/p{i}"),
    "no_user": lambda i: combined(f"/p{i}").replace(b" - - [", b" ["),
    "bad_time": lambda i: combined(f"/p{i}", stamp="31/Foo/2026:14:41:00 +0000"),
    "binary": lambda i: b"\x00\xff\x1b[2J" + str(i).encode(),
    "empty": lambda i: b"",
    "overlong": lambda i: combined("/" + "x" * 700 + str(i)),
    "old": lambda i: combined(f"/p{i}", stamp="28/Nov/2020:14:41:00 +0000"),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(KINDS)), max_size=60), chunk=st.sampled_from([64, 200, 4096]))
def test_every_line_read_is_parsed_or_malformed(tmp_path: Path, kinds: list[str], chunk: int) -> None:
    log = tmp_path / f"access-{len(kinds)}-{chunk}.log"
    lines = [KINDS[kind](i) for i, kind in enumerate(kinds)]
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    new_summary = partial(LogSummary, resolve_format("combined"), since=1_700_000_000.0)
    summary = new_summary()
    reader = LogReader([log], max_line=512, chunk_bytes=chunk)
    assert reader.consume(summary, new_sink=new_summary, workers=1)

    assert summary.lines == len(lines) == summary.requests + summary.outside_window + summary.malformed
    bad = [n for n, kind in enumerate(kinds, 1) if kind not in ("good", "old")]
    assert summary.malformed == len(bad)
    assert summary.outside_window == kinds.count("old")
    assert summary.overlong == kinds.count("overlong") == reader.stats.overlong
    assert [p for p, _ in summary.malformed_at] == [str(log)] * len(bad)
    assert line_numbers(summary.malformed_at) == bad


def test_malformed_places_in_parallel_parts_are_the_sequential_ones(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = [combined(f"/p{i}") if i % 500 else b"junk %d" % i for i in range(1, 20_001)]
    lines[7_777] = b"y" * 2000
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    places = []
    for workers in (1, 3):
        new_summary = partial(LogSummary, resolve_format("combined"))
        summary = new_summary()
        reader = LogReader([log], max_line=1024, chunk_bytes=32 * 1024)
        assert reader.consume(summary, new_sink=new_summary, workers=workers, parallel_bytes=1)
        places.append(summary.malformed_at)
        assert summary.lines == 20_000 and summary.malformed == 41
    assert places[0] == places[1]
    assert line_numbers(places[0])[:3] == [500, 1000, 1500]
    assert 7_778 in line_numbers(places[0])


def test_line_numbers_in_a_gzipped_rotated_file(tmp_path: Path) -> None:
    import gzip

    rotated = tmp_path / "access.log.2.gz"
    with gzip.open(rotated, "wb") as fh:
        fh.write(b"a\nbb\nccc\n")
    assert line_numbers([(str(rotated), 0), (str(rotated), 5), (str(tmp_path / "gone"), 0)]) == [1, 3, None]


def test_cache_status_from_a_cf_cache_status_header_variable() -> None:
    fmt = '$remote_addr [$time_local] "$request" $status cf=$upstream_http_cf_cache_status'
    lines = [
        b'198.51.100.1 [28/Nov/2026:14:41:00 +0000] "GET / HTTP/1.1" 200 cf=HIT',
        b'198.51.100.1 [28/Nov/2026:14:41:00 +0000] "GET /a HTTP/1.1" 200 cf=DYNAMIC',
        b'198.51.100.1 [28/Nov/2026:14:41:00 +0000] "GET /b HTTP/1.1" 200 cf=-',
    ]
    summary = summarize(lines, fmt)
    assert summary.cache_var == "upstream_http_cf_cache_status"
    assert summary.cache_status_counts() == {"HIT": 1, "DYNAMIC": 1, "-": 1}
    assert summarize(lines[:1], "combined").cache_status_counts() is None  # the format cannot tell
