"""Feed sources and boundary validation, against real files and a real loopback HTTP server."""

from __future__ import annotations

import contextlib
import csv
import json
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from edgecron import feed as module
from edgecron.errors import ConfigError, InputError, UpstreamUnavailable
from edgecron.feedfiles import CsvSource, JsonlSource
from edgecron.feedhttp import HttpSource
from edgecron.feedsource import open_source
from edgecron.http import make_session
from pytest_httpserver import HTTPServer
from werkzeug import Response

HOSTS = ("www.example.com", "localhost")


def item(i: int, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": f"k{i}",
        "url": f"https://www.example.com/a/{i}",
        "updated_at": "2026-01-02T03:04:05Z",
        "title": f"Title {i}",
        "body": f"Body {i}",
    }
    doc.update(over)
    return doc


def check(data: object, **kwargs: object) -> module.FeedItem | module.Reject:
    validator = module.Validator(allowed_hosts=HOSTS, max_body_bytes=kwargs.pop("max_body", 100), **kwargs)  # type: ignore[arg-type]
    return validator.check(module.RawRecord(module.Position(7), data))


def source(server: HTTPServer, path: str, **kwargs: object) -> HttpSource:
    return HttpSource(
        server.url_for(path),
        session=make_session(retries=0),
        allowed_hosts=HOSTS,
        timeout=5,
        max_page_bytes=100_000,
        sleep=lambda s: None,
        **kwargs,  # type: ignore[arg-type]
    )


# --- validation --------------------------------------------------------------------------------


def test_a_valid_item_is_normalised_to_utc_and_keeps_unknown_fields_as_json() -> None:
    got = check(item(1, updated_at="2026-01-02T05:04:05+02:00", tags=["b", "a"], author="x"))
    assert isinstance(got, module.FeedItem)
    assert got.updated_text == "2026-01-02T03:04:05+00:00"
    assert json.loads(got.extra) == {"author": "x", "tags": ["b", "a"]}
    assert got.extra.index("author") < got.extra.index("tags")  # sorted keys: a stable hash


@pytest.mark.parametrize(
    ("over", "field", "expected_word"),
    [
        ({"updated_at": "2026-01-02T03:04:05"}, "updated_at", "timezone"),
        ({"updated_at": "yesterday"}, "updated_at", "ISO 8601"),
        ({"url": "https://evil.example.net/a"}, "url", "ALLOWED_HOSTS"),
        ({"url": "/relative/path"}, "url", "absolute"),
        ({"title": None}, "title", "a string"),
        ({"title": "  "}, "title", "characters"),
        ({"body": "x" * 101}, "body", "IMPORT_MAX_BODY_BYTES"),
        ({"body": "é" * 51}, "body", "at most 100 bytes"),  # 102 bytes in UTF-8
        ({"id": ""}, "id", "non-empty"),
        ({"id": 1.5}, "id", "key"),
        ({"deleted": "perhaps"}, "deleted", "true or false"),
    ],
)
def test_a_bad_field_is_rejected_naming_field_expected_got_and_position(
    over: dict[str, object], field: str, expected_word: str
) -> None:
    got = check(item(1, **over))
    assert isinstance(got, module.Reject)
    assert (got.field, got.position.label()) == (field, "line 7")
    assert expected_word in got.expected
    assert got.got


@pytest.mark.parametrize("space", ["\u00a0", "\t", "\u2028", " ", "\x1f"])
def test_a_url_with_any_whitespace_is_rejected(space: str) -> None:
    got = check(item(1, url=f"https://www.example.com/a{space}b"))
    assert isinstance(got, module.Reject) and got.field == "url"


def test_a_url_whose_host_differs_only_in_case_is_accepted() -> None:
    got = check(item(1, url="HTTPS://WWW.EXAMPLE.COM/a"))
    assert isinstance(got, module.FeedItem)


def test_a_record_that_is_not_an_object_is_rejected() -> None:
    got = check(["not", "an", "object"])
    assert isinstance(got, module.Reject) and got.got == "list"


def test_integer_keys_are_accepted_as_text() -> None:
    got = check(item(1, id=42))
    assert isinstance(got, module.FeedItem) and got.key == "42"


def test_a_tombstone_needs_only_its_key() -> None:
    got = check({"id": "k1", "deleted": True})
    assert isinstance(got, module.FeedItem) and got.deleted


def test_field_map_reads_differently_named_fields() -> None:
    mapping = module.parse_field_map("id=guid, updated_at=modified")
    got = check(
        {
            "guid": "g1",
            "url": "https://www.example.com/g",
            "modified": "2026-01-01T00:00:00Z",
            "title": "t",
            "body": "b",
        },
        field_map=mapping,
    )
    assert isinstance(got, module.FeedItem) and got.key == "g1" and got.extra == "{}"


@pytest.mark.parametrize("text", ["id", "slug=guid", "id="])
def test_a_bad_field_map_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="IMPORT_FIELD_MAP"):
        module.parse_field_map(text)


def test_content_hash_ignores_updated_at_but_not_content() -> None:
    a, b, c = check(item(1)), check(item(1, updated_at="2027-01-01T00:00:00Z")), check(item(1, body="new"))
    assert isinstance(a, module.FeedItem) and isinstance(b, module.FeedItem) and isinstance(c, module.FeedItem)
    assert a.content_hash() == b.content_hash() != c.content_hash()


# --- files -------------------------------------------------------------------------------------


def test_jsonl_bad_lines_become_rejects_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_text(json.dumps(item(1)) + "\n{not json\n\n" + json.dumps(item(2)) + "\n")
    records = list(JsonlSource(path).records())
    assert [type(r).__name__ for r in records] == ["RawRecord", "Reject", "RawRecord"]
    assert records[1].position.label() == "line 2" and records[2].position.index == 4


def test_jsonl_lines_read_as_json_loads_reads_them_and_bad_ones_carry_its_error(tmp_path: Path) -> None:
    good = json.dumps(item(1))
    lines = [f" \t{good}  ", "\x0b", f"{good}\x0c", f"{good} x", "\ufeff" + good]
    path = tmp_path / "feed.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + b'{"id": "\xff"}\n')
    records = list(JsonlSource(path).records())
    assert isinstance(records[0], module.RawRecord) and records[0].data == item(1)
    rejects = [r for r in records if isinstance(r, module.Reject)]
    assert [r.position.index for r in rejects] == [3, 4, 5, 6]  # line 2 is blank
    expected = []
    for raw in (lines[2], lines[3], lines[4]):
        with pytest.raises(ValueError) as err:
            json.JSONDecoder().decode(raw)
        expected.append(f"JSONDecodeError: {err.value}")
    assert [r.got for r in rejects[:3]] == expected
    assert rejects[3].got.startswith("UnicodeDecodeError")


def test_jsonl_resume_skips_lines_already_committed(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_text("".join(json.dumps(item(i)) + "\n" for i in range(5)))
    records = list(JsonlSource(path).records(module.Position(3)))
    assert [r.data["id"] for r in records if isinstance(r, module.RawRecord)] == ["k3", "k4"]


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read"):
        list(JsonlSource(tmp_path / "nope.jsonl").records())


def test_csv_without_a_required_column_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text("id,url,updated_at,title\nk1,https://www.example.com/1,2026-01-01T00:00:00Z,T\n")
    with pytest.raises(InputError, match="lacks column") as err:
        list(CsvSource(path, max_field=100).records())
    assert "body" in err.value.message


def test_csv_rows_with_extra_cells_are_rejected_and_multiline_bodies_kept(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text(
        "id,url,updated_at,title,body\n"
        'k1,https://www.example.com/1,2026-01-01T00:00:00Z,T,"two\nlines"\n'
        "k2,https://www.example.com/2,2026-01-01T00:00:00Z,T,b,surprise\n"
    )
    first, second = CsvSource(path, max_field=100).records()
    assert isinstance(first, module.RawRecord) and first.data["body"] == "two\nlines"
    assert first.position.label() == "record 1 (lines 2-3)"
    assert isinstance(second, module.Reject) and second.position.label() == "record 2 (line 4)"


def test_open_source_refuses_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="IMPORT_SOURCE"):
        open_source(
            str(tmp_path / "feed.txt"),
            session=None,
            allowed_hosts=HOSTS,
            field_map=None,
            timeout=1,
            max_page_bytes=1,
            max_body_bytes=1,
        )


# --- HTTP --------------------------------------------------------------------------------------


def test_http_follows_next_links_and_resumes_mid_page(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_json({"items": [item(1), item(2)], "next": "/feed/2"})
    httpserver.expect_request("/feed/2").respond_with_json({"items": [item(3)], "next": None})
    feed = source(httpserver, "/feed")
    assert [r.data["id"] for r in feed.records()] == ["k1", "k2", "k3"]
    resume = module.Position(1, page=httpserver.url_for("/feed"))
    assert [r.data["id"] for r in feed.records(resume)] == ["k2", "k3"]


def test_http_page_parameter_is_counted_up_until_an_empty_page(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api", query_string="page=1").respond_with_json([item(1)])
    httpserver.expect_request("/api", query_string="page=2").respond_with_json({"items": [item(2)]})
    httpserver.expect_request("/api", query_string="page=3").respond_with_json({"items": []})
    feed = source(httpserver, "/api?page=1")
    assert [r.data["id"] for r in feed.records()] == ["k1", "k2"]


def test_a_next_link_that_loops_is_an_input_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_json({"items": [item(1)], "next": "/b"})
    httpserver.expect_request("/b").respond_with_json({"items": [item(2)], "next": "/a"})
    with pytest.raises(InputError, match="loops back"):
        list(source(httpserver, "/a").records())


def test_a_page_parameter_the_server_ignores_is_an_input_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/same").respond_with_json({"items": [item(1)]})
    with pytest.raises(InputError, match="page parameter seems ignored"):
        list(source(httpserver, "/same").records())


def test_a_500_is_retried_then_succeeds(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/flaky").respond_with_response(Response("oops", status=500))
    httpserver.expect_request("/flaky").respond_with_json({"items": [item(1)], "next": None})
    assert len(list(source(httpserver, "/flaky").records())) == 1
    assert len(httpserver.log) == 2


def test_a_page_that_keeps_failing_is_upstream_unavailable_after_the_items_before_it(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/p1").respond_with_json({"items": [item(1)], "next": "/p2"})
    httpserver.expect_request("/p2").respond_with_response(Response("down", status=500))
    records = source(httpserver, "/p1", attempts=3).records()
    assert next(iter(records)).data["id"] == "k1"
    with pytest.raises(UpstreamUnavailable, match="after 3 attempts") as err:
        list(records)
    assert err.value.retry_safe
    assert sum(1 for req, _ in httpserver.log if req.path == "/p2") == 3


def test_malformed_json_and_off_host_links_are_input_errors(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/bad").respond_with_data("{oops", content_type="application/json")
    httpserver.expect_request("/away").respond_with_json({"items": [], "next": "https://evil.example.net/p"})
    with pytest.raises(InputError, match="not valid JSON"):
        list(source(httpserver, "/bad").records())
    with pytest.raises(InputError, match="not allowed"):
        list(source(httpserver, "/away").records())


def test_a_page_over_the_size_cap_is_refused(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/big").respond_with_json({"items": [item(i) for i in range(2000)], "next": None})
    with pytest.raises(InputError, match="IMPORT_MAX_PAGE_BYTES"):
        list(source(httpserver, "/big").records())


def test_relative_urls_are_resolved_against_the_api_page_but_not_in_files() -> None:
    validator = module.Validator(allowed_hosts=HOSTS, max_body_bytes=100)
    on_page = validator.check(
        module.RawRecord(module.Position(1, page="https://www.example.com/api?page=2"), item(1, url="/articles/one"))
    )
    in_file = validator.check(module.RawRecord(module.Position(1), item(1, url="/articles/one")))
    assert isinstance(on_page, module.FeedItem) and on_page.url == "https://www.example.com/articles/one"
    assert isinstance(in_file, module.Reject) and in_file.field == "url"


def test_a_jsonl_line_nested_too_deep_is_one_reject_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    path.write_text(json.dumps(item(1)) + "\n" + deep + "\n" + json.dumps(item(2)) + "\n")
    records = list(JsonlSource(path).records())
    assert [type(r).__name__ for r in records] == ["RawRecord", "Reject", "RawRecord"]
    assert records[1].position.label() == "line 2" and "RecursionError" in str(records[1].got)


def test_a_csv_header_that_is_not_utf8_is_one_input_error(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_bytes(b"id,url,title,body,upd\xffated_at\n1,https://www.example.com/a,A,x,2026-01-01T00:00:00Z\n")
    with pytest.raises(InputError) as err:
        list(CsvSource(path, max_field=1000).records())
    assert err.value.message.startswith(f"CSV file {path} is not UTF-8")


# --- CSV fields over csv's field limit ----------------------------------------------------------

BIG = 200_000  # IMPORT_MAX_BODY_BYTES for these files: csv's field limit is then BIG + 1 characters
LIMIT = BIG + 1
CSV_HEADER = "id,url,updated_at,title,body\n"


def csv_row(key: str, body: str, *, title: str = "T") -> str:
    quoted = '"' + body.replace('"', '""') + '"' if any(c in body for c in ',"\r\n') else body
    return f"{key},https://www.example.com/{key},2026-01-01T00:00:00Z,{title},{quoted}\n"


def read_csv(path: Path, resume: module.Position | None = None) -> list[tuple[str, str, str | None]]:
    """(position label, id or rejected field, the reject's key) per record."""
    out = []
    for record in CsvSource(path, max_field=BIG).records(resume):
        if isinstance(record, module.Reject):
            out.append((record.position.label(), f"reject {record.field}: {record.got}", record.key))
        else:
            out.append((record.position.label(), record.data["id"], None))
    return out


def test_a_csv_field_over_the_limit_is_a_reject_of_that_field_at_its_own_record(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    smuggled = csv_row("k9", "this line is inside a quoted body, not a record")
    path.write_text(
        CSV_HEADER
        + csv_row("k1", "two\nlines")  # record 1, lines 2-3
        + csv_row("k2", 'three\r\n"lines"\nhere')  # record 2, lines 4-6
        + csv_row("k3", "x" * (LIMIT + 1))  # record 3, line 7: one byte over the limit
        + csv_row("k4", "y" * LIMIT)  # record 4, line 8: at the limit, csv reads it (the validator judges it)
        + csv_row("k5", "é" * (LIMIT + 1) + "\n" + smuggled + "\nend")  # record 5, lines 9-12
        + csv_row("k6", "ok", title="t" * (LIMIT + 5))  # record 6, line 13: another column over the limit
        + "\n"  # a blank line is no record
        + csv_row("k7", "after\nall")  # record 7, lines 15-16
    )
    assert read_csv(path) == [
        ("record 1 (lines 2-3)", "k1", None),
        ("record 2 (lines 4-6)", "k2", None),
        ("record 3 (line 7)", f"reject body: {LIMIT + 1} bytes", "k3"),
        ("record 4 (line 8)", "k4", None),
        ("record 5 (lines 9-12)", f"reject body: {2 * (LIMIT + 1) + 1 + len(smuggled) + 1 + 3} bytes", "k5"),
        ("record 6 (line 13)", f"reject title: {LIMIT + 5} characters", "k6"),
        ("record 7 (lines 15-16)", "k7", None),
    ]
    body_reject = next(r for r in CsvSource(path, max_field=BIG).records() if isinstance(r, module.Reject))
    assert body_reject.expected == f"at most {BIG} bytes (IMPORT_MAX_BODY_BYTES)"  # the validator's words


def test_csv_resume_after_any_record_reads_exactly_the_records_after_it(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text(
        CSV_HEADER
        + csv_row("k1", "a\nb")
        + csv_row("k2", "z" * (LIMIT + 1) + "\nk8,not,a,record\n")
        + csv_row("k3", "c")
        + csv_row("k4", "q" * (LIMIT + 3))
        + csv_row("k5", "d\ne")
    )
    records = list(CsvSource(path, max_field=BIG).records())
    assert [r.position.label() for r in records] == [
        "record 1 (lines 2-3)",
        "record 2 (lines 4-6)",
        "record 3 (line 7)",
        "record 4 (line 8)",
        "record 5 (lines 9-10)",
    ]
    full = read_csv(path)
    for done, record in enumerate(records, 1):
        # What a checkpoint keeps of the position (content.db stores index, page and unit only).
        saved = module.Position(record.position.index, page=None, unit=record.position.unit)
        assert read_csv(path, saved) == full[done:]


def test_csv_unreadable_records_end_where_csv_itself_ends_them(tmp_path: Path) -> None:
    """Random records (quotes, doubled quotes, text after a closing quote, CR/LF/CRLF inside quotes,
    fields over the limit anywhere) read as csv with no limit reads them: the same records, and the
    first field over the limit of each is the one rejected."""
    rng = random.Random(11)
    pieces = ["a", "b,c", '"', '""', "\n", "\r\n", "\r", " ", "é", "k,u,t"]

    def cell(big: bool) -> str:
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 6)))
        if big:
            text += "w" * (LIMIT + rng.randrange(1, 3))
        if rng.random() < 0.3 and '"' not in text and not any(c in text for c in ",\r\n"):
            return text + ('"x"' if rng.random() < 0.5 else "")  # a bare field; quotes inside are literal
        quoted = '"' + text.replace('"', '""') + '"'
        return quoted + ("tail" if rng.random() < 0.1 else "")  # not strict: text after the quote joins

    lines = ["id,url,updated_at,title,body\r\n"]
    for i in range(60):
        big = {rng.randrange(5)} if rng.random() < 0.3 else set()
        cells = [f"k{i}"] + [cell(c in big) for c in range(1, 5)]
        lines.append(",".join(cells) + rng.choice(["\n", "\r\n"]))
    path = tmp_path / "random.csv"
    path.write_text("".join(lines), newline="")

    expected = []
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        for row in reader:
            over = next((i for i, v in enumerate(row) if len(v) > LIMIT), None)
            if over is None:
                expected.append((row[0], dict(zip(header, row, strict=False))))
            else:
                size = len(row[over].encode()) if header[over] == "body" else len(row[over])
                expected.append((row[0], f"reject {header[over]}: {size}"))
    got = []
    for record in CsvSource(path, max_field=BIG).records():
        if isinstance(record, module.Reject):
            got.append((record.key, f"reject {record.field}: {record.got.split()[0]}"))
        else:
            got.append((record.data["id"], record.data))
    assert got == expected
    assert sum(1 for _, v in got if isinstance(v, str)) >= 10  # the case under test did happen


class Crash(BaseException):
    """The process dying right after a commit: nothing after it runs, not even the run's end."""


def test_a_csv_import_that_dies_after_any_commit_resumes_to_the_same_rows_and_each_reject_once(
    tmp_path: Path,
) -> None:
    from edgecron.content import ContentStore
    from edgecron.importer import Importer, ImportOptions

    path = tmp_path / "feed.csv"
    path.write_text(
        CSV_HEADER
        + csv_row("k1", "a\nb")
        + csv_row("k2", "z" * (LIMIT + 1) + "\n" + csv_row("k8", "smuggled"))
        + csv_row("k3", "c")
        + csv_row("k4", "q" * (LIMIT + 3))
        + csv_row("k5", "d\ne")
    )

    def run(store: ContentStore, run_id: str, *, die_after: int | None = None) -> None:
        commits = []

        def after_commit() -> int:
            commits.append(1)
            if len(commits) == die_after:
                raise Crash
            return 0

        importer = Importer(
            store=store,
            source=CsvSource(path, max_field=BIG),
            validator=module.Validator(allowed_hosts=HOSTS, max_body_bytes=BIG),
            options=ImportOptions(batch_size=1, max_reject_rate=1.0),
            run_id=run_id,
            now=lambda: datetime(2026, 3, 1, tzinfo=UTC),
            forward_purges=after_commit,
        )
        with contextlib.suppress(Crash):
            importer.run()

    def outcome(store: ContentStore) -> tuple[list[tuple], list[tuple]]:
        rejects = store.conn.execute("SELECT position, item_key, field FROM rejects ORDER BY id").fetchall()
        return store.snapshot(), [tuple(r) for r in rejects]

    with ContentStore(tmp_path / "reference.db") as reference:
        run(reference, "whole")
        expected = outcome(reference)
    assert [key for key, *_ in expected[0]] == ["k1", "k3", "k5"]
    assert expected[1] == [("record 2 (lines 4-6)", "k2", "body"), ("record 4 (line 8)", "k4", "body")]
    for die_after in range(1, 6):  # a checkpoint on, and right after, each record and reject
        with ContentStore(tmp_path / f"died-{die_after}.db") as store:
            run(store, "first", die_after=die_after)
            run(store, "rerun")
            assert outcome(store) == expected, f"died after commit {die_after}"
