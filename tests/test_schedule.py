"""Cron semantics (Vixie), the APScheduler translation, and the schedule table from settings.

The next-fire cases also run against cronsim (healthchecks' Debian-cron-compatible library,
evaluated in issue 12 as a replacement for our computation). It agrees on every case but one: asked
from the second pass of a repeated hour, it returns a fixed-time job's first-pass run, which lies in
the past. So we keep ours; that case is a strict xfail for cronsim and says so if cronsim changes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from cronsim import CronSim
from edgecron import schedule as module
from edgecron.config import load_settings
from edgecron.errors import ConfigError
from freezegun import freeze_time

RIGA = ZoneInfo("Europe/Riga")  # 2021: DST begins 03-28 03:00→04:00, ends 10-31 04:00→03:00
NEW_YORK = ZoneInfo("America/New_York")  # 2026: begins 03-08 02:00→03:00, ends 11-01 02:00→01:00


def next_fire(implementation: str, expr: str, after: datetime, tz: ZoneInfo) -> datetime:
    """The first fire time strictly after `after`, from our code or from cronsim."""
    if implementation == "cronsim":
        return next(CronSim(module.MACROS.get(expr, expr), after.astimezone(tz))).astimezone(tz)
    return module.next_fire(module.parse_cron(expr), after, tz)


def fires(
    expr: str, start: datetime, tz: ZoneInfo = ZoneInfo("UTC"), count: int = 5, implementation: str = "edgecron"
) -> list[str]:
    out = [next_fire(implementation, expr, start, tz)]
    while len(out) < count:
        out.append(next_fire(implementation, expr, out[-1], tz))
    return [t.isoformat() for t in out]


IMPLEMENTATIONS = ["edgecron", "cronsim"]


def trigger_fires(expr: str, start: datetime, tz: ZoneInfo, count: int) -> list[float]:
    """Fire times the way the scheduler asks for them: (previous fire time, now)."""
    trigger = module.to_trigger(module.parse_cron(expr), tz)
    out: list[float] = []
    previous = None
    now = start + timedelta(microseconds=1)
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        assert previous is not None
        out.append(previous.timestamp())
        now = previous
    return out


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "field", "expected"),
    [
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("0 9-17/4 * * *", "hours", (9, 13, 17)),
        ("0 0 1,15,31 * *", "days", (1, 15, 31)),
        ("0 0 * jan-mar,DEC *", "months", (1, 2, 3, 12)),
        ("0 0 * * 0", "weekdays", (0,)),
        ("0 0 * * 7", "weekdays", (0,)),
        ("0 0 * * 5-7", "weekdays", (0, 5, 6)),
        ("0 0 * * mon-fri", "weekdays", (1, 2, 3, 4, 5)),
        ("@weekly", "weekdays", (0,)),
        ("@hourly", "minutes", (0,)),
    ],
)
def test_parse_cron_expands_fields(expr: str, field: str, expected: tuple[int, ...]) -> None:
    assert getattr(module.parse_cron(expr), field) == expected


@pytest.mark.parametrize(
    ("expr", "field", "fragment"),
    [
        ("60 * * * *", "minute", "0-59"),
        ("* 24 * * *", "hour", "0-23"),
        ("* * 0 * *", "day-of-month", "1-31"),
        ("* * * 13 *", "month", "1-12 or jan-dec"),
        ("* * * * 8", "day-of-week", "0-7 or sun-sat (0 and 7 are Sunday)"),
        ("*/0 * * * *", "minute", "a step of 1 or more"),
        ("5/15 * * * *", "minute", "a step only after '*' or a range"),
        ("* 5-1 * * *", "hour", "a range from low to high"),
        ("* * * * moon", "day-of-week", "sun-sat"),
        ("* * *", "expression", "5 fields"),
        ("* * * * * *", "expression", "not 6"),
        ("@reboot", "macro", "@daily"),
        ("0 0 30 2 *", "day-of-month", "never run"),
    ],
)
def test_parse_cron_rejects_with_field_and_range(expr: str, field: str, fragment: str) -> None:
    with pytest.raises(module.CronSyntaxError) as info:
        module.parse_cron(expr)
    assert info.value.field == field
    assert fragment in str(info.value)


# --- semantics, pinned with calendar facts -----------------------------------------------------------


SATURDAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # Saturday


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_sunday_is_0_and_7(dow: str, implementation: str) -> None:
    assert fires(f"0 3 * * {dow}", SATURDAY, count=2, implementation=implementation) == [
        "2026-11-29T03:00:00+00:00",
        "2026-12-06T03:00:00+00:00",
    ]


def test_apscheduler_from_crontab_reads_0_as_monday_which_is_why_we_translate() -> None:
    # Pins APScheduler 3.x behaviour: if an upgrade fixes it, this test says so.
    naive = CronTrigger.from_crontab("0 3 * * 0", timezone=UTC).get_next_fire_time(None, SATURDAY)
    ours = module.to_trigger(module.parse_cron("0 3 * * 0"), ZoneInfo("UTC")).get_next_fire_time(None, SATURDAY)
    assert naive is not None and naive.strftime("%A") == "Monday"
    assert ours is not None and ours.isoformat() == "2026-11-29T03:00:00+00:00"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_day_of_month_or_day_of_week_when_both_restricted(implementation: str) -> None:
    # Friday the 13th rule: every 13th *and* every Friday (Vixie's OR), not only Friday the 13ths.
    assert fires("0 0 13 * 5", datetime(2026, 11, 1, tzinfo=UTC), count=8, implementation=implementation) == [
        "2026-11-06T00:00:00+00:00",
        "2026-11-13T00:00:00+00:00",
        "2026-11-20T00:00:00+00:00",
        "2026-11-27T00:00:00+00:00",
        "2026-12-04T00:00:00+00:00",
        "2026-12-11T00:00:00+00:00",
        "2026-12-13T00:00:00+00:00",
        "2026-12-18T00:00:00+00:00",
    ]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_star_prefixed_day_field_means_and(implementation: str) -> None:
    # '*/2' starts with '*', so Vixie ANDs: Mondays that fall on odd days of the month.
    assert fires("0 0 */2 * 1", datetime(2026, 11, 1, tzinfo=UTC), count=3, implementation=implementation) == [
        "2026-11-09T00:00:00+00:00",
        "2026-11-23T00:00:00+00:00",
        "2026-12-07T00:00:00+00:00",
    ]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_every_minute_fires_each_minute_strictly_after_now(implementation: str) -> None:
    assert fires("* * * * *", datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC), count=3, implementation=implementation) == [
        "2026-11-28T12:01:00+00:00",
        "2026-11-28T12:02:00+00:00",
        "2026-11-28T12:03:00+00:00",
    ]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_dst_skipped_hour_runs_fixed_time_job_right_after_the_change(implementation: str) -> None:
    start = datetime(2021, 3, 27, 22, 0, tzinfo=UTC)
    assert fires("30 3 * * *", start, RIGA, count=2, implementation=implementation) == [
        "2021-03-28T04:00:00+03:00",
        "2021-03-29T03:30:00+03:00",
    ]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_dst_skipped_hour_has_no_wildcard_runs(implementation: str) -> None:
    start = datetime(2021, 3, 28, 0, 15, tzinfo=UTC)  # 02:15 EET
    assert fires("*/30 * * * *", start, RIGA, count=3, implementation=implementation) == [
        "2021-03-28T02:30:00+02:00",
        "2021-03-28T04:00:00+03:00",
        "2021-03-28T04:30:00+03:00",
    ]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_dst_repeated_hour_runs_fixed_time_job_once_and_wildcards_twice(implementation: str) -> None:
    start = datetime(2021, 10, 30, 22, 0, tzinfo=UTC)
    assert fires("30 3 * * *", start, RIGA, count=2, implementation=implementation) == [
        "2021-10-31T03:30:00+03:00",
        "2021-11-01T03:30:00+02:00",
    ]
    assert fires("*/30 3 * * *", start, RIGA, count=4, implementation=implementation) == [
        "2021-10-31T03:00:00+03:00",
        "2021-10-31T03:30:00+03:00",
        "2021-10-31T03:00:00+02:00",
        "2021-10-31T03:30:00+02:00",
    ]


SAO_PAULO = ZoneInfo("America/Sao_Paulo")  # 2018-11-04: midnight skipped (00:00→01:00); 2019-02-17: 00:00→23:00
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a 30-minute shift: 2026-10-04 02:00→02:30, 2026-04-05 02:00→01:30
CRONSIM_RETURNS_THE_PAST = pytest.mark.xfail(
    strict=True,
    reason="cronsim 2.8 returns 2021-10-31T03:30+03:00, the first pass, 40 minutes before `now`: why we keep ours",
)


DST_AND_CALENDAR_EDGES = [  # (id, expression, zone, now, the fire times expected)
    (
        "fixed-time-asked-in-the-second-pass-of-a-repeated-hour",
        "30 3 * * *",
        RIGA,
        datetime(2021, 10, 31, 1, 10, tzinfo=UTC),  # 03:10 EET: the second pass of 03:00-03:59
        ["2021-11-01T03:30:00+02:00", "2021-11-02T03:30:00+02:00"],
    ),
    (
        "wildcard-asked-in-the-first-pass-runs-the-second",
        "*/30 3 * * *",
        RIGA,
        datetime(2021, 10, 31, 0, 40, tzinfo=UTC),  # 03:40 EEST, first pass: the wildcard job runs again
        ["2021-10-31T03:00:00+02:00", "2021-10-31T03:30:00+02:00", "2021-11-01T03:00:00+02:00"],
    ),
    (
        "skipped-and-next-wall-time-fire-once",
        "0 2-4 * * *",
        RIGA,
        datetime(2021, 3, 27, 21, 0, tzinfo=UTC),  # the skipped 03:00 and the real 04:00 are one instant: once
        ["2021-03-28T02:00:00+02:00", "2021-03-28T04:00:00+03:00", "2021-03-29T02:00:00+03:00"],
    ),
    (
        "skipped-midnight-runs-when-the-day-starts",
        "0 0 * * *",
        SAO_PAULO,
        datetime(2018, 11, 3, 12, 0, tzinfo=UTC),
        ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"],
    ),
    (
        "repeated-hour-before-midnight-changes-nothing",
        "0 0 * * *",
        SAO_PAULO,
        datetime(2019, 2, 16, 12, 0, tzinfo=UTC),
        ["2019-02-17T00:00:00-03:00", "2019-02-18T00:00:00-03:00"],
    ),
    (
        "half-hour-gap",
        "15 2 * * *",
        LORD_HOWE,
        datetime(2026, 10, 3, 12, 0, tzinfo=UTC),
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
    ),
    (
        "half-hour-repeat",
        "15 1 * * *",
        LORD_HOWE,
        datetime(2026, 4, 4, 12, 0, tzinfo=UTC),
        ["2026-04-05T01:15:00+11:00", "2026-04-06T01:15:00+10:30"],
    ),
    (
        "month-and-weekday-names",
        "0 12 * 2 mon",
        ZoneInfo("UTC"),
        datetime(2026, 11, 28, tzinfo=UTC),
        ["2027-02-01T12:00:00+00:00", "2027-02-08T12:00:00+00:00"],
    ),
    (
        "months-without-the-day-are-skipped",
        "0 0 31 * *",
        ZoneInfo("UTC"),
        datetime(2026, 11, 28, tzinfo=UTC),
        ["2026-12-31T00:00:00+00:00", "2027-01-31T00:00:00+00:00", "2027-03-31T00:00:00+00:00"],
    ),
]
ASKED_IN_THE_SECOND_PASS = "fixed-time-asked-in-the-second-pass-of-a-repeated-hour"


@pytest.mark.parametrize(
    ("implementation", "expr", "zone", "now", "expected"),
    [
        pytest.param(
            implementation,
            *case,
            id=f"{implementation}-{name}",
            marks=[CRONSIM_RETURNS_THE_PAST] if (implementation, name) == ("cronsim", ASKED_IN_THE_SECOND_PASS) else [],
        )
        for name, *case in DST_AND_CALENDAR_EDGES
        for implementation in IMPLEMENTATIONS
    ],
)
def test_dst_and_calendar_edges(
    implementation: str, expr: str, zone: ZoneInfo, now: datetime, expected: list[str]
) -> None:
    assert fires(expr, now, zone, count=len(expected), implementation=implementation) == expected


# --- the APScheduler path agrees with the cron semantics ---------------------------------------------

AGREEMENT_EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "7 * * * *",
    "30 3 * * *",
    "0,30 3 * * *",
    "0 2-4 * * *",
    "*/20 1-3 * * *",
    "0 0 * * 0",
    "0 0 * * 7",
    "30 2 * * sun",
    "0 9 1,15 * 1-5",
    "0 0 13 * 5",
    "0 9 */2 * 1",
    "15 4 * jan-mar,oct-dec mon",
    "0 12 1 * *",
    "0 0 29 2 *",
    "@weekly",
]
AGREEMENT_STARTS = [
    ("UTC", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
    ("Europe/Riga", datetime(2021, 3, 27, 21, 0, tzinfo=UTC)),  # the night DST begins
    ("Europe/Riga", datetime(2021, 10, 30, 21, 0, tzinfo=UTC)),  # the night DST ends
    ("America/New_York", datetime(2026, 3, 8, 4, 0, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 11, 1, 3, 0, tzinfo=UTC)),
]


@pytest.mark.parametrize("expr", AGREEMENT_EXPRESSIONS)
@pytest.mark.parametrize(("zone", "start"), AGREEMENT_STARTS)
def test_next_fire_times_agree_between_cron_semantics_and_apscheduler(expr: str, zone: str, start: datetime) -> None:
    tz = ZoneInfo(zone)
    count = 40 if expr.startswith("*") else 8
    with freeze_time(start):
        clock = time.time()  # "now", read from the frozen clock as the scheduler would
    # Compute outside the freeze: freezegun's FakeDatetime drops `fold`, which DST needs.
    now = datetime.fromtimestamp(clock, UTC)
    ours = [t.timestamp() for t in module.next_fires(module.parse_cron(expr), now, tz, count=count)]
    theirs = trigger_fires(expr, now, tz, count)
    assert theirs == ours


@pytest.mark.parametrize("expr", AGREEMENT_EXPRESSIONS)
@pytest.mark.parametrize(("zone", "start"), AGREEMENT_STARTS)
def test_cronsim_agrees_on_every_agreement_case(expr: str, zone: str, start: datetime) -> None:
    """85 expression × start cases across two DST changes: cronsim and ours give the same times."""
    count = 40 if expr.startswith("*") else 8
    assert fires(expr, start, ZoneInfo(zone), count, "cronsim") == fires(expr, start, ZoneInfo(zone), count)


def test_plain_crontrigger_differs_across_dst_which_is_why_we_wrap_it() -> None:
    # Without VixieDstTrigger, CronTrigger runs a skipped 03:30 at 04:30 (an hour late) and a
    # repeated 03:30 twice. Pinned so that if APScheduler changes, we notice.
    start = datetime(2021, 3, 27, 21, 0, tzinfo=UTC)
    plain = CronTrigger(hour=3, minute=30, timezone=RIGA).get_next_fire_time(None, start)
    assert plain is not None
    assert plain.astimezone(UTC) == datetime(2021, 3, 28, 1, 30, tzinfo=UTC)  # 04:30 EEST
    assert fires("30 3 * * *", start, RIGA, count=1) == ["2021-03-28T04:00:00+03:00"]


# --- the table from settings -----------------------------------------------------------------------


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(environ=env)


def test_defaults_and_override() -> None:
    table = {s.name: s for s in module.load_schedule(settings(SCHEDULE_CHECK_LOGS="*/5 * * * *"))}
    assert set(table) == {"warm", "purge", "import", "check-logs", "cache-rules"}
    assert table["check-logs"].cron is not None and table["check-logs"].cron.minutes == tuple(range(0, 60, 5))
    assert table["check-logs"].source == "SCHEDULE_CHECK_LOGS"
    assert table["warm"].source == "default"
    assert table["purge"].spec.args == ("outbox", "--retry")


def test_off_disables_a_job() -> None:
    table = {s.name: s for s in module.load_schedule(settings(SCHEDULE_IMPORT="off"))}
    assert table["import"].cron is None


def test_bad_cron_in_settings_names_the_key_and_field() -> None:
    with pytest.raises(ConfigError) as info:
        module.load_schedule(settings(SCHEDULE_WARM="*/10 25 * * *"))
    assert "SCHEDULE_WARM" in info.value.message
    assert "hour values within 0-23" in info.value.message


def test_unknown_job_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        module.load_schedule(settings(SCHEDULE_WARMUP="* * * * *"))
    assert "SCHEDULE_WARMUP names no job" in info.value.message
    assert "SCHEDULE_WARM?" in info.value.message


def test_custom_table_via_parameter() -> None:
    table = (module.JobSpec("tick", "tick.py", (), "*/2 * * * *", "test job"),)
    (only,) = module.load_schedule(settings(), table=table)
    assert only.name == "tick" and only.cron is not None and only.cron.minutes[:2] == (0, 2)


def test_bad_timezone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SCHEDULE_TIMEZONE"):
        module.schedule_timezone(settings(SCHEDULE_TIMEZONE="Mars/Olympus"))


def test_find_job_rejects_unknown_name() -> None:
    with pytest.raises(module.InputError, match="unknown job 'warmm'"):
        module.find_job("warmm")


def test_longest_gap_sees_the_weekend() -> None:
    gap = module.longest_gap(module.parse_cron("0 9 * * 1-5"), now=SATURDAY, tz=ZoneInfo("UTC"))
    assert gap == timedelta(days=3)
    assert module.longest_gap(module.parse_cron("*/15 * * * *"), now=SATURDAY, tz=ZoneInfo("UTC")) == timedelta(
        minutes=15
    )


def test_crontab_refuses_a_path_that_would_break_into_a_second_crontab_line() -> None:
    schedule = module.load_schedule(settings())
    with pytest.raises(module.InputError, match="--home holds a line break"):
        module.render_crontab(schedule, home="/opt/edgecron\n* * * * * rm -rf ~", timezone="UTC")
    text = module.render_crontab(schedule, home="/opt/edge cron", timezone="UTC")
    assert "EDGECRON_HOME=/opt/edge cron\nEDGECRON_TRIGGER=cron\n" in text
