"""The one schedule table, cron expressions with exact Vixie-cron semantics, and their two outputs.

`JOBS` maps each job to its script, arguments and default cron expression; `SCHEDULE_<JOB>` in
the settings overrides the expression (`off` disables the job). The same table renders the
crontab for system cron (`render_crontab`) and the APScheduler triggers for `jobs.py schedule`
(`to_trigger`), so the two can never disagree about when a job runs.

Semantics, as in Vixie cron (and cronie, and healthchecks' cronsim):
- day-of-week 0 and 7 are Sunday (APScheduler's `from_crontab` reads 0 as Monday);
- when day-of-month and day-of-week are both restricted, a day matches if EITHER matches; if
  either field starts with `*` (including `*/2`), both must match;
- DST: a fixed-time job (neither minute nor hour starts with `*`) whose wall time falls in a
  skipped hour runs right after the change, and runs once in a repeated hour; a wildcard job
  simply follows the wall clock (nothing in a skipped hour, both passes of a repeated hour).
"""

from __future__ import annotations

import calendar
import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import Enum
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from .config import Settings
from .errors import ConfigError, InputError


@dataclass(frozen=True)
class JobSpec:
    """One schedulable job: what runs (scripts/<script> <args>) and when by default."""

    name: str
    script: str
    args: tuple[str, ...]
    default_cron: str
    purpose: str

    @property
    def key(self) -> str:
        """Its settings key, e.g. SCHEDULE_CHECK_LOGS."""
        return "SCHEDULE_" + self.name.upper().replace("-", "_")


# Fixed-time jobs avoid 01:00-03:59, where DST changes happen in most zones.
JOBS: tuple[JobSpec, ...] = (
    JobSpec("warm", "warm_cache.py", (), "*/30 * * * *", "re-warm the sitemap URLs"),
    JobSpec("purge", "purge_cache.py", ("outbox", "--retry"), "*/5 * * * *", "send pending purges"),
    JobSpec("import", "import_stale.py", ("run",), "7 * * * *", "import changed content"),
    JobSpec("check-logs", "check_logs.py", (), "*/15 * * * *", "check access logs and job health"),
    JobSpec("cache-rules", "check_cache_rules.py", ("check",), "30 6 * * *", "check cache rules"),
)

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()
    name_base: int = 0

    def allowed(self) -> str:
        text = f"{self.lo}-{self.hi}"
        if self.names:
            text += f" or {self.names[0]}-{self.names[-1]}"
        if self.name == "day-of-week":
            text += " (0 and 7 are Sunday)"
        return text


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day-of-week", 0, 7, DOW_NAMES, 0),
)


class CronSyntaxError(ValueError):
    """A cron expression that cron would refuse; `field` names the offending field."""

    def __init__(self, field: str, text: str, expected: str) -> None:
        self.field = field
        self.text = text
        self.expected = expected
        super().__init__(f"{field} field {text!r}: expected {expected}")


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday … 6 = Saturday
    dom_star: bool  # the field starts with '*': Vixie's DOM_STAR flag
    dow_star: bool
    fixed_time: bool  # neither minute nor hour starts with '*' (matters for DST)

    def day_matches(self, day: date) -> bool:
        dom_ok = day.day in self.days
        dow_ok = day.isoweekday() % 7 in self.weekdays
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok


def parse_cron(text: str) -> Cron:
    """Parse strictly; raise CronSyntaxError naming the field and its allowed range."""
    expanded = MACROS.get(text.strip().lower(), text)
    if expanded.strip().startswith("@"):
        raise CronSyntaxError("macro", text.strip(), "one of " + ", ".join(MACROS))
    parts = expanded.split()
    if len(parts) != 5:
        raise CronSyntaxError(
            "expression",
            text.strip(),
            f"5 fields (minute hour day-of-month month day-of-week), not {len(parts)}",
        )
    values = [_parse_field(part, spec) for part, spec in zip(parts, FIELDS, strict=True)]
    weekdays = tuple(sorted({d % 7 for d in values[4]}))
    cron = Cron(
        text=" ".join(parts),
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        dom_star=parts[2].startswith("*"),
        dow_star=parts[4].startswith("*"),
        fixed_time=not (parts[0].startswith("*") or parts[1].startswith("*")),
    )
    if cron.dom_star or cron.dow_star:
        longest = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in cron.months}
        if not any(d <= longest[m] for m in cron.months for d in cron.days):
            raise CronSyntaxError(
                "day-of-month",
                parts[2],
                "a day that exists in month " + parts[3] + " (this expression would never run)",
            )
    return cron


def _parse_field(text: str, spec: _Field) -> tuple[int, ...]:
    chosen: set[int] = set()
    for item in text.split(","):
        chosen.update(_parse_item(item, spec, whole=text))
    return tuple(sorted(chosen))


def _parse_item(item: str, spec: _Field, *, whole: str) -> range:
    def bad(expected: str) -> CronSyntaxError:
        return CronSyntaxError(spec.name, whole, expected)

    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise bad(f"a step of 1 or more after '/', in {spec.allowed()}")
        step = int(step_text)
    if base == "*":
        lo, hi = spec.lo, spec.hi
    else:
        first, dash, last = base.partition("-")
        lo = _value(first, spec, bad)
        hi = _value(last, spec, bad) if dash else lo
        if slash and not dash:
            raise bad(f"a step only after '*' or a range such as {spec.lo}-{spec.hi}/{step}")
        if hi < lo:
            raise bad(f"a range from low to high within {spec.allowed()}")
    return range(lo, hi + 1, step)


def _value(text: str, spec: _Field, bad: Callable[[str], CronSyntaxError]) -> int:
    word = text.strip().lower()
    if word in spec.names:
        return spec.names.index(word) + spec.name_base
    if word.isdigit() and spec.lo <= int(word) <= spec.hi:
        return int(word)
    raise bad(f"values within {spec.allowed()}")


# --- next fire time -----------------------------------------------------------------------------


class WallKind(Enum):
    NORMAL = "normal"
    REPEATED = "repeated"  # happens twice (clocks went back)
    SKIPPED = "skipped"  # never happens (clocks went forward)


MAX_DST_SHIFT = timedelta(hours=3)  # Vixie treats clock jumps under 3 h as DST changes
LAST_FIRE_REACH = timedelta(days=366 * 30)  # as far back as next_fire looks ahead


def resolve_wall(wall: datetime, tz: tzinfo) -> tuple[WallKind, tuple[datetime, ...]]:
    """The UTC instants a naive local wall time stands for: one, two (repeated), or the instant
    the skipped stretch ends (skipped)."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return WallKind.NORMAL, (first.astimezone(UTC),)
    a, b = sorted((first.astimezone(UTC), second.astimezone(UTC)))
    if a.astimezone(tz).replace(tzinfo=None) == wall:
        return WallKind.REPEATED, (a, b)
    return WallKind.SKIPPED, (_transition(a, b, tz),)


def _transition(lo: datetime, hi: datetime, tz: tzinfo) -> datetime:
    """First instant in [lo, hi] with hi's UTC offset: when a skipped stretch ends."""
    target = hi.astimezone(tz).utcoffset()
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == target:
            hi_s = mid
        else:
            lo_s = mid + 1
    return datetime.fromtimestamp(hi_s, UTC)


def fire_instants(cron: Cron, wall: datetime, tz: tzinfo) -> tuple[datetime, ...]:
    """When a matching wall time actually fires, with Vixie's DST rules."""
    kind, instants = resolve_wall(wall, tz)
    if kind is WallKind.REPEATED and cron.fixed_time:
        return instants[:1]
    if kind is WallKind.SKIPPED and not cron.fixed_time:
        return ()
    return instants


def next_fire(cron: Cron, after: datetime, tz: tzinfo, *, horizon_days: int = 366 * 30) -> datetime:
    """The first fire time strictly after `after` (aware), as an aware datetime in `tz`."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    start = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0) - MAX_DST_SHIFT
    best: datetime | None = None
    best_wall = start
    day = start.date()
    for _ in range(horizon_days):
        if day.month in cron.months and cron.day_matches(day):
            for hour in cron.hours:
                for minute in cron.minutes:
                    wall = datetime(day.year, day.month, day.day, hour, minute)  # noqa: DTZ001
                    if wall < start:
                        continue
                    if best is not None and wall > best_wall + MAX_DST_SHIFT:
                        return best.astimezone(tz)
                    for instant in fire_instants(cron, wall, tz):
                        if instant > after and (best is None or instant < best):
                            best, best_wall = instant, wall
        day += timedelta(days=1)
        if best is not None and datetime.combine(day, datetime.min.time()) > best_wall + MAX_DST_SHIFT:
            return best.astimezone(tz)
    raise InputError(f"cron expression {cron.text!r} never fires", expected="a date that exists")


def last_fire(cron: Cron, now: datetime, tz: tzinfo) -> datetime:
    """The latest fire time at or before `now` (aware), as an aware datetime in `tz`: a run's slot.

    Built on `next_fire` (a window reaching back until it holds a fire time, then forward fire by
    fire), so both share one reading of cron's DST rules and cannot disagree.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # In UTC throughout: within one zone, arithmetic and comparisons use the wall clock and ignore
    # `fold`, so the two passes of a repeated hour would look alike.
    now = now.astimezone(UTC)
    reach = timedelta(minutes=1)
    while True:
        fire = next_fire(cron, now - reach, tz).astimezone(UTC)
        if fire <= now:
            break
        if reach > LAST_FIRE_REACH:
            raise InputError(f"cron expression {cron.text!r} never fired", expected="a date that exists")
        reach *= 2
    while (following := next_fire(cron, fire, tz).astimezone(UTC)) <= now:
        fire = following
    return fire.astimezone(tz)


def slot_text(moment: datetime) -> str:
    """A slot as stored and compared across nodes: UTC, whole seconds (`2026-12-02T10:00:00+00:00`)."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def next_fires(cron: Cron, after: datetime, tz: tzinfo, *, count: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(count):
        after = next_fire(cron, after, tz)
        out.append(after)
    return out


def longest_gap(cron: Cron, *, now: datetime, tz: tzinfo, samples: int = 16) -> timedelta:
    """The longest wait between consecutive fire times ahead (e.g. Friday → Monday for 1-5), for
    "has this job succeeded recently enough" checks."""
    return max(b - a for a, b in pairwise(next_fires(cron, now, tz, count=samples)))


# --- APScheduler translation ---------------------------------------------------------------------


def _csv(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values)


def to_trigger(cron: Cron, tz: tzinfo) -> BaseTrigger:
    """An APScheduler trigger firing exactly when `next_fire` says.

    Fields are passed as explicit value lists (day-of-week as names, so 0 is never Monday); the
    day-of-month/day-of-week OR-rule becomes an OrTrigger of two CronTriggers; VixieDstTrigger
    applies cron's DST rules on top of CronTrigger's wall-clock ones.
    """
    common = {
        "minute": _csv(cron.minutes),
        "hour": _csv(cron.hours),
        "month": _csv(cron.months),
        "timezone": tz,
    }
    days = _csv(cron.days)
    weekdays = ",".join(DOW_NAMES[d] for d in cron.weekdays)
    inner: BaseTrigger
    if cron.dom_star or cron.dow_star:
        inner = CronTrigger(day=days, day_of_week=weekdays, **common)
    else:
        inner = OrTrigger([CronTrigger(day=days, **common), CronTrigger(day_of_week=weekdays, **common)])
    return VixieDstTrigger(inner, fixed_time=cron.fixed_time, timezone=tz, text=cron.text)


class VixieDstTrigger(BaseTrigger):
    """Wraps a wall-clock trigger: fixed-time jobs run right after a skipped hour and once in a
    repeated hour; wildcard jobs never fire on a wall time that does not exist."""

    def __init__(self, inner: BaseTrigger, *, fixed_time: bool, timezone: tzinfo, text: str) -> None:
        self.inner = inner
        self.fixed_time = fixed_time
        self.timezone = timezone
        self.text = text

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # Like CronTrigger: the first fire time after the previous one (so missed runs can be
        # counted), else from now. The inner trigger is always asked without a previous fire
        # time: given one in a repeated hour, CronTrigger 3.x can return the same time again.
        start = now.astimezone(UTC)
        if previous_fire_time is not None:
            start = previous_fire_time.astimezone(UTC) + timedelta(microseconds=1)
        earliest = start
        for _ in range(64):  # each step moves past one DST-affected candidate
            candidate = self.inner.get_next_fire_time(None, start)
            if candidate is None:
                return None
            fire = self._correct(candidate)
            if fire is not None and fire >= earliest:
                return fire.astimezone(self.timezone)
            start = candidate.astimezone(UTC) + timedelta(microseconds=1)
        return None

    def _correct(self, candidate: datetime) -> datetime | None:
        kind, instants = resolve_wall(candidate.replace(tzinfo=None, fold=0), self.timezone)
        if kind is WallKind.SKIPPED:
            return instants[0] if self.fixed_time else None
        # Compare timestamps: == between zones is always False for a repeated wall time (PEP 495).
        if kind is WallKind.REPEATED and self.fixed_time:
            return candidate if candidate.timestamp() == instants[0].timestamp() else None
        return candidate

    def __str__(self) -> str:
        return f"cron[{self.text}]"

    def __repr__(self) -> str:
        return f"<VixieDstTrigger ({self.text!r}, timezone={self.timezone})>"


# --- the table, from settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scheduled:
    """A job with the cron expression in force (default or SCHEDULE_<JOB>)."""

    spec: JobSpec
    cron: Cron | None  # None: disabled with SCHEDULE_<JOB>=off
    source: str  # "default" or the settings key

    @property
    def name(self) -> str:
        return self.spec.name


def schedule_timezone(settings: Settings) -> ZoneInfo:
    name = settings.get("SCHEDULE_TIMEZONE") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "SCHEDULE_TIMEZONE is not a time zone",
            got=name,
            expected="an IANA zone name such as UTC or Europe/Berlin",
        ) from None


def load_schedule(settings: Settings, *, table: Sequence[JobSpec] = JOBS) -> list[Scheduled]:
    """The table with SCHEDULE_<JOB> overrides applied; an unknown job or bad cron is a ConfigError."""
    by_key = {spec.key: spec for spec in table}
    overrides: dict[str, str] = {}
    for name, value in settings.schedules().items():
        key = "SCHEDULE_" + name.upper().replace("-", "_")
        if key not in by_key:
            close = difflib.get_close_matches(key, list(by_key), n=1)
            raise ConfigError(
                f"{key} names no job",
                expected=f"{close[0]}?" if close else "one of " + ", ".join(by_key),
            )
        overrides[key] = value
    out = []
    for spec in table:
        text = overrides.get(spec.key, "").strip()
        source = spec.key if text else "default"
        text = text or spec.default_cron
        if text.lower() == "off":
            out.append(Scheduled(spec, None, source))
            continue
        try:
            cron = parse_cron(text)
        except CronSyntaxError as exc:
            raise ConfigError(
                f"{spec.key if source != 'default' else spec.name + ' default schedule'} "
                f"is not a valid cron expression ({exc.field} field)",
                got=text,
                expected=f"{exc.field} {exc.expected}",
            ) from None
        out.append(Scheduled(spec, cron, source))
    return out


def run_slot(settings: Settings, job: str, *, args: Sequence[str], now: datetime, fired: str | None) -> str | None:
    """A scheduled run's slot (`slot_text`): the scheduler's fire time `fired` (EDGECRON_SLOT), else the
    job's latest fire time at or before `now` (cron starts a run a moment after its fire time).

    Only the scheduled command itself (`args` exactly the table's, as the crontab and the scheduler run
    it) has a slot: a line of one's own in the crontab (which sets EDGECRON_TRIGGER=cron for every line
    below it), such as `purge_cache.py everything` at 04:00, is another piece of work and always runs.
    None too when the job is not scheduled (SCHEDULE_<JOB>=off, or a schedule that does not parse: the
    run still runs, without the once-per-slot check, and `jobs.py status` names the config error).
    """
    if not any(spec.name == job and spec.args == tuple(args) for spec in JOBS):
        return None
    if fired:
        try:
            moment = datetime.fromisoformat(fired.strip())
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ConfigError(
                "EDGECRON_SLOT is not a fire time",
                got=fired,
                expected="an ISO 8601 time with its offset, as `jobs.py schedule` sets it",
            )
        return slot_text(moment)
    try:
        schedule = load_schedule(settings)
        tz = schedule_timezone(settings)
    except ConfigError:
        return None
    for item in schedule:
        if item.name == job and item.cron is not None:
            return slot_text(last_fire(item.cron, now, tz))
    return None


def find_job(name: str, *, table: Sequence[JobSpec] = JOBS) -> JobSpec:
    for spec in table:
        if spec.name == name:
            return spec
    close = difflib.get_close_matches(name, [s.name for s in table], n=1)
    raise InputError(
        f"unknown job {name!r}",
        expected=(f"{close[0]}? (" if close else "one of (") + ", ".join(s.name for s in table) + ")",
    )


def render_crontab(schedule: Sequence[Scheduled], *, home: str, timezone: str, env_file: str | None = None) -> str:
    """Crontab lines for system cron: one commented line per job, the venv's python on the script.

    Cron runs each line with `/bin/sh -c` in `$HOME`, with only HOME, LOGNAME, SHELL, PATH and the
    crontab's own assignments in the environment: so every path comes from EDGECRON_HOME, and
    EDGECRON_TRIGGER=cron tells each run that cron started it.
    """
    for name, value in (("--home", home), ("EDGECRON_ENV_FILE", env_file or "")):
        if "\n" in value or "\r" in value:  # it would end the assignment and start a crontab line
            raise InputError(f"{name} holds a line break", got=value, expected="a path on one line")
    lines = [
        "# edgecron jobs. Generated by `.venv/bin/python scripts/jobs.py crontab` (lib/edgecron/schedule.py);",
        "# change a time with SCHEDULE_<JOB> in .env and regenerate. Install: crontab -e, or",
        "# `.venv/bin/python scripts/jobs.py crontab | crontab -` (replaces your whole crontab).",
        f"# Times are in {timezone} (SCHEDULE_TIMEZONE): system cron uses the server's zone, so run",
        "# the server in that zone. Each job takes its own lock (an overlapping run exits 75 without",
        "# output and is recorded as skipped) and is silent on success, so cron mail means trouble.",
        "# Cron mails any output to MAILTO (default: this user) through the local mail transfer agent;",
        "# without one Debian's cron discards it. Install one (e.g. msmtp-mta, a relay) and set",
        "# MAILTO, or set HEALTHCHECKS_URL in .env: a run that exits non-zero is pinged as a failure",
        "# with the tail of its event log.",
        "# MAILTO=ops@example.com",
        f"EDGECRON_HOME={home}",
        "EDGECRON_TRIGGER=cron",
    ]
    if env_file:
        lines.append(f"EDGECRON_ENV_FILE={env_file}")
    for item in schedule:
        spec = item.spec
        command = " ".join(['"$EDGECRON_HOME/.venv/bin/python"', f'"$EDGECRON_HOME/scripts/{spec.script}"', *spec.args])
        lines.append("")
        origin = "override with" if item.source == "default" else "set by"
        lines.append(f"# {spec.name}: {spec.purpose} ({origin} {spec.key})")
        if item.cron is None:
            lines.append(f"# disabled by {spec.key}=off")
            continue
        lines.append(f"{item.cron.text} {command}")
    return "\n".join(lines) + "\n"
