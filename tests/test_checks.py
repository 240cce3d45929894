"""The checks: figures from log lines, job health from a real state database, deploy before/after."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from edgecron.deploys import deploy_findings, record_slots
from edgecron.errors import InputError
from edgecron.findings import Thresholds, log_findings
from edgecron.health import job_findings, max_age_from_schedule
from edgecron.lock import JobLock
from edgecron.logformat import resolve_format
from edgecron.logsummary import LogSummary
from edgecron.schedule import parse_cron
from edgecron.slowpaths import SLOW_PATHS_TRACKED, SlowPaths
from edgecron.state import StateDB, iso, open_state

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

pytestmark = pytest.mark.both_backends  # the tests on job health and deploys read and write state


def line(
    path: str = "/",
    *,
    status: int = 200,
    rt: float = 0.05,
    at: datetime = NOW,
    li: str = "0",
    cs: str = "-",
    cc: str = "-",
    urt: str | None = None,
) -> bytes:
    stamp = f"{at.day:02d}/{MONTHS[at.month - 1]}/{at.year}:{at:%H:%M:%S} +0000"
    return (
        f'198.51.100.1 - - [{stamp}] "GET {path} HTTP/1.1" {status} 10 "-" "ua" rt={rt:.3f} '
        f'urt="{urt or f"{rt:.3f}"}" cs={cs} ray=- cip=- li={li} cc="{cc}"'
    ).encode()


def summarize(lines: list[bytes], **kwargs: object) -> LogSummary:
    summary = LogSummary(resolve_format("edgecron"), **kwargs)  # type: ignore[arg-type]
    for start in range(0, len(lines), 1000):  # several chunks, as the reader gives them
        summary.feed(lines[start : start + 1000])
    return summary


def by_check(findings: list) -> dict:  # type: ignore[type-arg]
    return {f.check: f for f in findings}


def test_5xx_rate_breach_names_the_worst_paths() -> None:
    lines = [line("/ok") for _ in range(95)] + [line("/broken", status=502) for _ in range(4)]
    lines.append(line("/other", status=500))
    found = by_check(log_findings(summarize(lines), Thresholds(rate_5xx=0.01, min_requests=50)))
    assert found["5xx_rate"].status == "breach"
    assert found["5xx_rate"].value == pytest.approx(0.05)
    assert found["5xx_rate"].examples[0] == "/broken: 4×5xx"
    assert found["upstream_errors"].status == "breach"  # 502s are the upstream failing


def test_rates_are_not_judged_on_too_few_requests() -> None:
    found = by_check(log_findings(summarize([line(status=500)] * 10), Thresholds(min_requests=50)))
    assert found["5xx_rate"].status == "skipped"


def test_percentiles_and_slowest_paths() -> None:
    lines = [line("/fast", rt=0.010 + i / 10_000) for i in range(900)]
    lines += [line("/slow", rt=2.5) for _ in range(100)]
    summary = summarize(lines, slow_seconds=1.0)
    pct = summary.percentiles()
    assert pct["p50"] == pytest.approx(0.060)  # the 500th of 1,000 values
    assert pct["p95"] == 2.5 and pct["p99"] == 2.5
    path, count, p95 = summary.slowest_paths()[0]
    assert (path, count) == ("/slow", 100)
    assert 2.5 < p95 <= 2.5 * 2 ** (1 / 16)  # the upper edge of its log-scale bucket: ≤ 4.4% high
    found = by_check(log_findings(summary, Thresholds(p95_seconds=1.0)))
    assert found["p95_request_time"].status == "breach"
    assert found["p95_request_time"].examples == [f"/slow: p95 {p95:.2f}s over 100 requests"]


def test_slow_path_memory_is_bounded_by_paths_not_requests() -> None:
    """Each path costs one fixed histogram however many slow requests it has; the number of
    paths is capped, and the paths with most slow requests are still the ones found."""
    table = SlowPaths(0.5, capacity=100)
    bucket = SlowPaths.bucket_of(2.0, 0.5)
    for _ in range(10_000):
        table.add(b"/one", bucket)
    assert len(table.hists) == 1 and sum(table.hists[b"/one"]) == 10_000
    size = sys.getsizeof(table.hists[b"/one"])
    for i in range(5_000):  # a scanner: thousands of distinct slow paths, one request each
        table.add(f"/probe-{i}".encode(), bucket)
        if i % 7 == 0:
            table.add(b"/heavy", SlowPaths.bucket_of(4.0, 0.5))
    assert len(table.hists) == len(table.counts) == 100
    assert len(table._heap) == 100
    assert {sys.getsizeof(h) for h in table.hists.values()} == {size}
    # Space-saving: paths with more than N/capacity slow requests are kept, exactly enough.
    assert sum(table.hists[b"/one"]) == 10_000 and b"/one" not in table.errors
    assert sum(table.hists[b"/heavy"]) + table.errors.get(b"/heavy", 0) >= 715
    assert table.errors.get(b"/heavy", 0) <= (10_000 + 5_000 + 715) / 100


def test_slowest_paths_among_many_distinct_paths_are_still_found() -> None:
    lines = [line(f"/page-{i}", rt=0.7) for i in range(6_000)]  # more slow paths than tracked
    lines += [line("/report", rt=3.0) for _ in range(300)] + [line("/report", rt=0.02) for _ in range(10)]
    lines += [line("/export", rt=1.5) for _ in range(200)]
    summary = summarize(lines, slow_seconds=1.0)
    top = summary.slowest_paths(n=2)
    assert [(p, n) for p, n, _ in top] == [("/report", 310), ("/export", 200)]
    assert 3.0 < top[0][2] <= 3.0 * 2 ** (1 / 16) and 1.5 < top[1][2] <= 1.5 * 2 ** (1 / 16)
    assert summary.percentiles()["p95"] == 1.5  # overall: exact (the 6,185th of 6,510 values)
    assert len(summary._slow.hists) <= SLOW_PATHS_TRACKED


def test_slow_tables_merge_exactly_while_not_full() -> None:
    first, second = SlowPaths(0.5), SlowPaths(0.5)
    for table, times in ((first, (0.6, 1.0, 9.0)), (second, (1.0, 2.0))):
        for t in times:
            table.add(b"/a", SlowPaths.bucket_of(t, 0.5))
    second.add(b"/b", SlowPaths.bucket_of(0.8, 0.5))
    first.merge(second)
    assert list(first.hists) == [b"/a", b"/b"] and not first.errors
    assert first.counts == {b"/a": 5, b"/b": 1} and sum(first.hists[b"/a"]) == 5
    assert first.hists[b"/a"][SlowPaths.bucket_of(1.0, 0.5)] == 2
    assert SlowPaths.bucket_of(float("inf"), 0.5) == len(first.hists[b"/a"]) - 1
    assert SlowPaths.bucket_of(float("nan"), 0.5) == SlowPaths.bucket_of(0.49, 0.5) == -1


def test_full_slow_tables_merge_within_their_error_bounds() -> None:
    parts = [SlowPaths(0.5, capacity=50) for _ in range(2)]
    truth: dict[bytes, int] = {}
    for n, table in enumerate(parts):
        for i in range(3_000):
            path = b"/hot" if i % 5 == 0 else f"/cold-{n}-{i}".encode()
            table.add(path, 3)
            truth[path] = truth.get(path, 0) + 1
    merged, later = parts
    merged.merge(later)
    assert len(merged.hists) == len(merged.counts) == len(merged._heap) == 50
    hot = b"/hot"
    assert sum(merged.hists[hot]) <= truth[hot] <= merged.counts[hot]
    assert merged.counts[hot] - merged.errors.get(hot, 0) <= truth[hot]
    for path, count in merged.counts.items():  # every kept path: the truth lies in its range
        assert count - merged.errors.get(path, 0) <= truth[path] <= count


def test_static_routes_reaching_the_origin() -> None:
    lines = [line("/static/app.css?v=3") for _ in range(120)] + [line("/page") for _ in range(300)]
    found = by_check(log_findings(summarize(lines), Thresholds(static_origin_hits=100)))
    assert found["static_origin_hits"].status == "breach"
    assert found["static_origin_hits"].examples == ["/static/app.css: 120"]


def test_logged_in_responses_marked_cacheable() -> None:
    lines = [line("/pricing", li="1", cc="public, max-age=300")]
    lines += [line("/account", li="1", cc="private, no-store"), line("/cart", li="1", cs="HIT")]
    lines += [line("/", li="0", cc="public, max-age=300")] * 60
    found = by_check(log_findings(summarize(lines), Thresholds()))
    finding = found["loggedin_cacheable"]
    assert finding.status == "breach" and finding.value == 2
    assert finding.examples == ["/pricing (cc=public, max-age=300)", "/cart (cache=HIT)"]


def test_logged_in_check_is_skipped_when_the_format_cannot_tell() -> None:
    summary = LogSummary(resolve_format("combined"))
    summary.feed([b'::1 - - [28/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "ua"'])
    found = by_check(log_findings(summary, Thresholds()))
    assert found["loggedin_cacheable"].status == "skipped"
    assert found["p95_request_time"].status == "skipped"


def test_upstream_retries_counted() -> None:
    summary = summarize([line(urt="0.01, 0.20 : 0.05"), line(urt="-"), line(urt="0.1, 0.2, 0.3")])
    assert summary.upstream_retries == 3


def test_malformed_lines_counted_with_samples_and_wrong_format_detected() -> None:
    good = [line() for _ in range(20)]
    summary = summarize([*good, b"\x00\xffbinary", b'half "line'])
    assert summary.malformed == 2
    assert summary.malformed_samples == ["\\x00\\xffbinary", 'half "line']
    summary.check_format("edgecron")  # 2 of 22: counted, not fatal
    wrong = LogSummary(resolve_format("combined"))
    wrong.feed(good)
    with pytest.raises(InputError) as err:
        wrong.check_format("combined")
    assert "first bad line" in err.value.message and "combined" in err.value.message


def test_status_that_is_not_a_number_is_malformed() -> None:
    summary = summarize([line(), line().replace(b" 200 10 ", b" abc 10 ")])
    assert (summary.requests, summary.malformed) == (1, 1)


def test_since_until_window() -> None:
    lines = [line(at=NOW - timedelta(hours=3)), line(at=NOW - timedelta(minutes=30)), line(at=NOW)]
    summary = summarize(lines, since=(NOW - timedelta(hours=1)).timestamp(), until=NOW.timestamp())
    assert (summary.requests, summary.outside_window) == (1, 2)


@pytest.fixture
def state(state_db: Path | str) -> StateDB:
    db = open_state(state_db)
    yield db
    db.close()


def add_run(
    state: StateDB,
    job: str,
    status: str,
    *,
    finished: datetime,
    error: str | None = None,
    trigger: str | None = None,
) -> None:
    state.execute(
        "INSERT INTO runs(run_id, job, started_at, finished_at, status, error, trigger) VALUES (?,?,?,?,?,?,?)",
        (
            f"{job}-{finished.timestamp()}",
            job,
            iso(finished - timedelta(minutes=1)),
            iso(finished),
            status,
            error,
            trigger,
        ),
    )


def health(state: StateDB, tmp_path: Path, **max_ages: timedelta) -> dict[str, Any]:
    found = job_findings(
        state,
        lock_dir=tmp_path / "locks",
        now=NOW,
        limits=Thresholds(),
        max_ages={job.rstrip("_").replace("_", "-"): age for job, age in max_ages.items()},
    )
    return {f.check: f for f in found if f.status == "breach"}


def test_a_log_check_that_found_a_breach_did_its_work_so_it_is_not_stale(state: StateDB, tmp_path: Path) -> None:
    """check_logs.py exits 1 when it finds a problem; that run completed, it did not fail."""
    for minutes in (45, 30, 15):
        add_run(state, "check-logs", "problems", finished=NOW - timedelta(minutes=minutes), trigger="cron")
    assert health(state, tmp_path, check_logs=timedelta(minutes=35)) == {}
    add_run(state, "check-logs", "failed", finished=NOW - timedelta(minutes=1), trigger="cron", error="Boom")
    assert set(health(state, tmp_path, check_logs=timedelta(minutes=35))) == {"job_last_run:check-logs"}


def test_a_manual_runs_typo_is_not_a_breach_of_the_schedule(state: StateDB, tmp_path: Path) -> None:
    add_run(state, "import", "ok", finished=NOW - timedelta(minutes=30), trigger="cron")
    add_run(state, "import", "usage-error", finished=NOW - timedelta(minutes=2), trigger="manual", error="no run 3310")
    add_run(state, "warm", "failed", finished=NOW - timedelta(hours=3), trigger="scheduler", error="site down")
    add_run(state, "warm", "ok", finished=NOW - timedelta(minutes=5), trigger="manual")
    found = health(state, tmp_path, import_=timedelta(hours=1), warm=timedelta(hours=1))
    # the scheduled warm still failed last and has not completed since: a manual success does not hide it
    assert set(found) == {"job_last_run:warm", "job_stale:warm"}
    assert found["job_last_run:warm"].examples == ["site down"]


def test_runs_recorded_before_triggers_existed_count_as_scheduled(state: StateDB, tmp_path: Path) -> None:
    add_run(state, "purge", "failed", finished=NOW - timedelta(minutes=3), error="API down")
    assert set(health(state, tmp_path)) == {"job_last_run:purge"}


def test_a_skipped_overlap_is_not_the_last_run(state: StateDB, tmp_path: Path) -> None:
    add_run(state, "warm", "failed", finished=NOW - timedelta(minutes=20), trigger="cron", error="site down")
    add_run(state, "warm", "skipped", finished=NOW - timedelta(minutes=1), trigger="cron")
    assert set(health(state, tmp_path, warm=timedelta(hours=1))) == {"job_last_run:warm", "job_stale:warm"}


def test_job_health(state: StateDB, tmp_path: Path) -> None:
    add_run(state, "warm", "ok", finished=NOW - timedelta(hours=5))
    add_run(state, "warm", "failed", finished=NOW - timedelta(minutes=10), error="Boom: site down")
    add_run(state, "import", "ok", finished=NOW - timedelta(minutes=5))
    add_run(state, "purge", "problems", finished=NOW - timedelta(minutes=5))
    state.execute(
        "INSERT INTO outbox(kind, value, enqueued_at, attempts, last_error) VALUES ('url', 'https://x/a', ?, 4, '429')",
        (iso(NOW),),
    )
    lock = JobLock(tmp_path / "locks", "import")
    lock.acquire(now=NOW - timedelta(hours=3))
    try:
        findings = job_findings(
            state,
            lock_dir=tmp_path / "locks",
            now=NOW,
            limits=Thresholds(lock_max_seconds=3600, outbox_max_attempts=3),
            max_ages={"warm": timedelta(hours=1), "import": timedelta(hours=1)},
        )
    finally:
        lock.release()
    found = by_check(findings)
    assert found["job_last_run:warm"].examples == ["Boom: site down"]
    assert found["job_stale:warm"].value == "5.0h"
    assert "job_stale:import" not in found and "job_last_run:purge" not in found
    assert found["lock_held:import"].value == 3 * 3600
    assert found["outbox_failing"].status == "breach"
    assert found["outbox_failing"].examples == ["url https://x/a ×4: 429"]


def test_max_age_from_schedule_uses_exact_cron_semantics() -> None:
    utc = ZoneInfo("UTC")
    assert max_age_from_schedule(parse_cron("*/10 * * * *"), now=NOW, tz=utc) == timedelta(minutes=25)
    assert max_age_from_schedule(parse_cron("0 3 * * *"), now=NOW, tz=utc) == timedelta(days=2, minutes=5)
    # Weekdays only: the longest gap is Friday 03:00 → Monday 03:00, not the next day's gap.
    assert max_age_from_schedule(parse_cron("0 3 * * 1-5"), now=NOW, tz=utc) == timedelta(days=6, minutes=5)
    # Day of week 0 is Sunday (weekly), not Monday as in APScheduler's from_crontab.
    assert max_age_from_schedule(parse_cron("0 3 * * 0"), now=NOW, tz=utc) == timedelta(days=14, minutes=5)


def test_deploy_regression_before_and_after(state: StateDB) -> None:
    deployed = NOW - timedelta(minutes=60)
    state.execute("INSERT INTO deploys(ref, deployed_at) VALUES ('v42', ?)", (iso(deployed),))
    before = [line(at=deployed - timedelta(minutes=m % 50 + 5), rt=0.1) for m in range(200)]
    stored = summarize(before)
    with state.transaction() as conn:  # an earlier run saw the lines before the deploy
        record_slots(conn, stored.slots, now=NOW)
    after = [line(at=deployed + timedelta(minutes=m % 50 + 1), rt=0.8) for m in range(180)]
    after += [line("/x", at=deployed + timedelta(minutes=20), status=500) for _ in range(20)]
    fresh = summarize(after)
    (finding,) = deploy_findings(state, fresh.slots, now=NOW, limits=Thresholds(deploy_window_minutes=60))
    assert finding.status == "breach"
    assert any(r.startswith("5xx rate 0.00% → 10.00%") for r in finding.examples)
    assert any(r.startswith("p95 0.11s → 0.81s") for r in finding.examples)
    compare = json.loads(str(finding.value))
    assert compare["requests"] == [200, 200]


def test_deploy_without_regression_and_without_deploy(state: StateDB) -> None:
    assert deploy_findings(state, {}, now=NOW, limits=Thresholds())[0].status == "skipped"
    deployed = NOW - timedelta(minutes=60)
    state.execute("INSERT INTO deploys(ref, deployed_at) VALUES ('v43', ?)", (iso(deployed),))
    lines = [line(at=deployed + timedelta(minutes=m - 55), rt=0.1) for m in range(110) for _ in range(2)]
    (finding,) = deploy_findings(state, summarize(lines).slots, now=NOW, limits=Thresholds())
    assert finding.status == "ok", finding.summary


def test_a_run_that_died_without_recording_its_end_is_reported(state: StateDB, tmp_path: Path) -> None:
    add_run(state, "warm", "ok", finished=NOW - timedelta(minutes=40))
    # kill -9 mid-run: the row stays 'running' and nobody holds the lock any more
    state.execute(
        "INSERT INTO runs(run_id, job, started_at, status) VALUES ('dead', 'warm', ?, 'running')",
        (iso(NOW - timedelta(minutes=20)),),
    )
    held = JobLock(tmp_path / "locks", "import")
    state.execute(
        "INSERT INTO runs(run_id, job, started_at, status) VALUES ('live', 'import', ?, 'running')",
        (iso(NOW - timedelta(minutes=2)),),
    )
    held.acquire(now=NOW - timedelta(minutes=2))
    try:
        found = by_check(job_findings(state, lock_dir=tmp_path / "locks", now=NOW, limits=Thresholds(), max_ages={}))
    finally:
        held.release()
    assert found["job_died:warm"].value == "running"
    assert "job_died:import" not in found  # still running: it holds its lock


def test_the_last_run_is_the_newest_recorded_even_after_the_clock_went_back(state: StateDB, tmp_path: Path) -> None:
    add_run(state, "warm", "ok", finished=NOW, trigger="cron")
    # NTP stepped the clock back an hour: the next run is recorded later but stamped earlier
    add_run(state, "warm", "failed", finished=NOW - timedelta(hours=1), trigger="cron", error="site down")
    assert set(health(state, tmp_path)) == {"job_last_run:warm"}
