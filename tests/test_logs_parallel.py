"""A big log read by a pool of processes gives exactly the figures of one sequential read.

The parallel path is forced with a low `parallel_bytes` on a log of a few MB; both readers see the
same real file, and everything the checks report is compared: findings with their examples, the
per-slot figures that go to the state database, read statistics and the cursor.
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

from edgecron.accesslog import LogReader
from edgecron.findings import Thresholds, log_findings
from edgecron.logformat import resolve_format
from edgecron.logsummary import LogSummary

START = 1_795_900_000


def write_log(path: Path, count: int) -> None:
    """edgecron-format lines over several 10-minute slots, with 5xx, slow, logged-in cached
    responses, malformed lines, an over-long line and a last line without its newline."""
    rng = random.Random(7)
    pages = [f"/blog/post-{i}" for i in range(300)] + ["/static/app.css", "/img/logo.png"]
    out = []
    for i in range(count):
        stamp = _stamp(START + i // 5)
        if i % 997 == 0:
            out.append(f"garbage line {i} \xff\n")
            continue
        if i == count // 2:
            out.append("x" * 70_000 + "\n")
            continue
        roll = rng.random()
        status = 500 if roll < 0.01 else 502 if roll < 0.015 else 404 if roll < 0.05 else 200
        rt = 2 + rng.random() if rng.random() < 0.03 else rng.expovariate(8.0)
        cache = "HIT" if rng.random() < 0.01 else "-"
        out.append(
            f'203.0.113.{i % 250} - - [{stamp}] "GET {rng.choice(pages)}?v={i % 7} HTTP/1.1" {status} 512 '
            f'"-" "ua" rt={rt:.3f} urt="{rt:.3f}{", 0.010" if i % 101 == 0 else ""}" cs={cache} '
            f'ray=8f{i:012x}-FRA cip=198.51.100.{i % 200} li={int(rng.random() < 0.05)} cc="public, max-age=60"\n'
        )
    text = "".join(out)
    path.write_bytes(text.encode("utf-8", "surrogateescape") + b"203.0.113.1 - - [partial")


def _stamp(epoch: int) -> str:
    import time

    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch))


def read(path: Path, *, workers: int, parallel_bytes: int) -> tuple[LogSummary, LogReader]:
    fmt = resolve_format("edgecron")
    new_summary = partial(LogSummary, fmt, slow_seconds=1.0)
    summary = new_summary()
    reader = LogReader([path], chunk_bytes=64 * 1024)
    done = reader.consume(summary, new_sink=new_summary, workers=workers, parallel_bytes=parallel_bytes)
    assert done
    return summary, reader


def figures(summary: LogSummary, reader: LogReader) -> dict[str, object]:
    limits = Thresholds(static_origin_hits=10)
    return {
        "findings": [f.as_dict() for f in log_findings(summary, limits)],
        "lines": summary.lines,
        "requests": summary.requests,
        "malformed": (summary.malformed, summary.malformed_samples, summary.malformed_at, summary.overlong),
        "cache": summary.cache_status_counts(),
        "upstream": summary.upstream_percentiles(),
        "top_404": summary.top_paths("404", 50),
        "statuses_all": summary.status_counts(),
        "statuses": dict(summary.statuses),
        "rt_counts": dict(summary.rt_counts),
        "slowest": summary.slowest_paths(n=50, min_requests=1),
        "paths": list(summary.path_counts.items()),
        "static": summary.static_origin(n=50),
        "top_5xx": summary.top_5xx_paths(n=50),
        "slots": {k: (v[0], v[1], v[2], dict(v[3])) for k, v in summary.slots.items()},
        "upstream_retries": summary.upstream_retries,
        "loggedin": (summary.loggedin_cached, summary.loggedin_examples),
        "read": (reader.stats.lines, reader.stats.bytes_read, reader.stats.overlong, reader.stats.files),
        "cursors": reader.cursors(),
    }


def test_parallel_read_gives_the_sequential_figures(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    write_log(log, 30_000)
    sequential = figures(*read(log, workers=1, parallel_bytes=1))
    parallel_summary, parallel_reader = read(log, workers=3, parallel_bytes=1)
    parallel = figures(parallel_summary, parallel_reader)

    assert parallel == sequential
    # The comparison means something: the log exercised every figure, and parts were merged.
    assert sequential["lines"] == 30_000  # the over-long line is a malformed one, the partial one waits
    assert sequential["read"][2] == 1
    assert len(sequential["slots"]) >= 10  # type: ignore[arg-type]
    assert parallel_summary.malformed == 32 and len(parallel_summary.malformed_samples) == 5
    assert parallel_summary.overlong == 1 and len(parallel_summary.malformed_at) == 32
    assert parallel_summary.loggedin_cached > 0 and parallel_summary.upstream_retries > 0
    assert parallel_reader.cursors()[0].offset == log.stat().st_size - len(b"203.0.113.1 - - [partial")


def test_below_the_threshold_the_file_is_read_in_this_process(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    write_log(log, 2_000)
    summary, reader = read(log, workers=2, parallel_bytes=1 << 30)
    sequential, _ = read(log, workers=1, parallel_bytes=1)
    assert summary.lines == sequential.lines == 2_000
    assert reader.stats.files == 1


def test_a_stop_request_ends_the_pool_and_moves_no_cursor(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    write_log(log, 20_000)
    fmt = resolve_format("edgecron")
    new_summary = partial(LogSummary, fmt, slow_seconds=1.0)
    reader = LogReader([log], chunk_bytes=64 * 1024)
    asked: list[bool] = []

    def stop() -> bool:
        asked.append(True)
        return True  # as when SIGTERM arrived just after the parts were handed out

    done = reader.consume(new_summary(), new_sink=new_summary, stop=stop, workers=2, parallel_bytes=1)
    assert done is False and asked
    assert reader.cursors() == []  # the next run rereads from the old position
