"""Glue shared by the scripts: settings, the job frame, error → one line + hint + exit code, output.

Only scripts import this (the library never prints nor imports Typer).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "lib") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "lib"))

from edgecron.config import Settings, load_monitoring, load_settings  # noqa: E402
from edgecron.errors import ConfigError, EdgecronError, ExitCode, LockHeld, from_unexpected  # noqa: E402
from edgecron.redact import redact, redact_value  # noqa: E402
from edgecron.runner import STATUS_BY_EXIT, DoneElsewhere, JobRun  # noqa: E402
from edgecron.runs import SLOT_ENV, TRIGGER_ENV, TRIGGERS  # noqa: E402
from edgecron.safetext import json_visible, visible, visible_lines  # noqa: E402

# Lines written to stderr: a non-zero exit that has said nothing yet gets one line saying why.
_said = [0]
# The run in progress: what is said on stderr also goes to its event log, hence to the ping body,
# so the reason reaches the operator on a machine where cron's mail goes nowhere.
_current: list[JobRun] = []


def utcnow() -> datetime:
    return datetime.now(UTC)


def env_file() -> Path:
    """`.env` beside the checkout (cron runs from $HOME), or EDGECRON_ENV_FILE."""
    override = os.environ.get("EDGECRON_ENV_FILE")
    return Path(override).expanduser() if override else ROOT / ".env"


class DefaultCommandGroup(TyperGroup):
    """A command group where arguments that name no command go to `default_command`:
    `import_stale.py --dry-run` is `import_stale.py run --dry-run`, `import_stale.py` alone is `run`.

    Typer's `invoke_without_command` callback runs with no command, but cannot take the default
    command's options (`--dry-run` would be "No such command"); parsing is where the choice belongs.
    """

    default_command = ""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if self.default_command and (not args or args[0] not in {*self.commands, *ctx.help_option_names}):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def new_app(help_text: str, *, default_command: str | None = None) -> typer.Typer:
    """A script's Typer app; with `default_command`, arguments that name no command run that one."""
    group = (
        type("DefaultGroup", (DefaultCommandGroup,), {"default_command": default_command})
        if default_command
        else TyperGroup
    )
    return typer.Typer(
        help=help_text,
        cls=group,
        add_completion=False,
        no_args_is_help=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def examples(*lines: str) -> str:
    """A command epilog, so `--help` ends with examples (click keeps `\\b` blocks unwrapped)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def say(text: str) -> None:
    """One line for the operator on stderr: under cron, stderr is what reaches the mail.

    The only stderr writer: secrets are redacted and control characters made visible here, so a
    remote string (an API error, a sitemap URL, a lock holder record) can neither leak a token nor
    drive the terminal.
    """
    _said[0] += 1
    text = redact(text)
    typer.echo(visible_lines(text), err=True)
    if _current:
        _current[-1].log("said", text=text)


def out(text: str = "") -> None:
    """Text for stdout (tables, summaries, dry-run lists): redacted, control characters made visible.

    Written to the buffered stream, not through click's echo, which flushes every line: a dry run
    listing a million URLs spent more time flushing than reading its sitemaps.
    """
    text = redact(text)
    plain = text.isascii() and text.isprintable()  # a URL line: nothing to escape, skip the translate
    sys.stdout.write((text if plain else visible_lines(text)) + "\n")


def interactive() -> bool:
    """A person is watching (a terminal on stdout or stderr), as opposed to cron or the scheduler."""
    return sys.stdout.isatty() or sys.stderr.isatty()


def trigger() -> str:
    """How this run was started: the crontab and the scheduler say so; a terminal or nothing is manual."""
    marker = os.environ.get(TRIGGER_ENV, "")
    return marker if marker in TRIGGERS and marker != "manual" and not interactive() else "manual"


def fail(err: EdgecronError) -> NoReturn:
    """Print `Error: <what failed>: got …, expected ….` and the hint; exit with the error's code."""
    say(f"Error: {err.message}")
    if err.hint:
        say(err.hint)
    raise typer.Exit(int(err.exit_code))


def main(app: typer.Typer) -> None:
    """The one error edge of every script: a typed error, or a system failure that is not a bug
    (disk full, read-only STATE_DIR, a garbage database, input nested too deep), becomes one
    `Error:` line and its documented exit code wherever it was raised. A real bug keeps its traceback.
    """
    # State, content, backups, logs, locks and metrics hold error texts and content: private,
    # whatever the login shell's umask (the systemd unit sets UMask=0077 too).
    os.umask(0o077)
    try:
        readable_help(typer.main.get_command(app))()
    except Exception as exc:
        err = from_unexpected(exc)
        if err is None:
            raise
        say(f"Error: {err.message}")
        if err.hint:
            say(err.hint)
        sys.exit(int(err.exit_code))


# Typer's type labels as an operator reads them: `<float range>` says nothing, `SECONDS` does.
METAVAR_BY_NAME = {
    "timeout": "SECONDS",
    "wait": "SECONDS",
    "max_wait": "SECONDS",
    "max_retry_wait": "SECONDS",
    "max_age": "DURATION",
    "sitemap": "URL",
    "urls_file": "PATH",
    "file": "PATH",
    "log": "PATH",
    "home": "PATH",
    "source": "URL|PATH",
    "since": "TIME",
    "until": "TIME",
    "misfire_grace": "SECONDS",
    "stop_grace": "SECONDS",
    "cron": "EXPRESSION",
}
METAVAR_BY_TYPE = {"int range": "N", "int": "N", "float range": "NUMBER", "float": "NUMBER", "path": "PATH"}


def _no_type_label(ctx: Any) -> None:
    return None


def readable_help(command: Any) -> Any:
    """`command` (and its subcommands) with metavars a person reads (`SECONDS`, `URL`, `N`, not
    `<float range>` or `<list[str]>`) and each subcommand's whole first sentence in the command list
    (Typer cuts it at 45 characters)."""
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", "") == "argument":
            param.metavar = param.metavar or (param.name or "value").upper()
            param.display_type_rich = _no_type_label  # the name and help say it; `<str>` beside it does not
        elif param.metavar is None and not param.is_flag and not param.count:
            label = METAVAR_BY_NAME.get(param.name or "")
            if label is None and hasattr(param, "bare_type"):
                label = METAVAR_BY_TYPE.get(param.bare_type().strip("<>"), "TEXT")
            param.metavar = label
    for sub in getattr(command, "commands", {}).values():
        if sub.short_help is None and sub.help:
            first = sub.help.strip().split("\n\n")[0].replace("\n", " ")
            sub.short_help = first.split(". ")[0].rstrip(".")
        readable_help(sub)
    return command


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except EdgecronError as err:
        fail(err)


def settings(job: str | None = None) -> Settings:
    """The parsed settings; a config error of a scheduled `job` run is also pinged as its failure."""
    try:
        loaded = load_settings(env_file=env_file())
    except ConfigError as err:
        if job is not None and trigger() != "manual":
            _ping_config_failure(job, err)
        fail(err)
    for warning in loaded.warnings:
        say(warning)
    return loaded


def _ping_config_failure(job: str, err: ConfigError) -> None:
    """runitor's rule: a job that cannot even start still tells the monitor, when the monitor can be read."""
    monitoring = load_monitoring(env_file=env_file())
    if monitoring is None:
        return
    from edgecron.monitor import pinger_for  # requests only when pings are configured

    pinger = pinger_for(monitoring, job)
    if pinger is not None:
        pinger.finish(uuid.uuid4().hex, int(err.exit_code), body=redact(f"Error: {err.message}\n{err.hint or ''}"))


@contextmanager
def job(
    name: str,
    cfg: Settings,
    *,
    dry_run: bool = False,
    lock_wait: float = 0.0,
) -> Iterator[JobRun]:
    """Run a job inside the lock/run-record frame; map errors and signals to exit codes.

    cronic's rule: a non-zero exit always says why on stderr, except a scheduled run skipped because
    another holds the lock: the next slot retries, cron mail would cry wolf at every overlap, and
    persistent skipping is caught by the job-health checks. A manual run (a terminal, a deploy
    script) names the holder: what it was asked to do did not happen.

    A scheduled run knows its slot (the scheduler's EDGECRON_SLOT, else the schedule's latest fire
    time); when another node has done that slot it exits 0 without a word (done-elsewhere).
    """
    started_by = trigger()
    slot = None
    if started_by != "manual" and not dry_run:
        from edgecron.schedule import run_slot  # APScheduler's import only for scheduled runs

        with user_errors():
            slot = run_slot(cfg, name, args=sys.argv[1:], now=utcnow(), fired=os.environ.get(SLOT_ENV))
    run = JobRun(
        settings=cfg, job=name, dry_run=dry_run, lock_wait=lock_wait, trigger=started_by, slot=slot, now=utcnow
    )
    said_before = _said[0]
    try:
        with run:
            _current.append(run)
            try:
                yield run
            finally:
                _current.remove(run)
    except DoneElsewhere:
        raise typer.Exit(int(ExitCode.OK)) from None  # the event log says who did the slot
    except LockHeld as err:
        if started_by != "manual":
            raise typer.Exit(int(err.exit_code)) from None
        fail(err)
    except EdgecronError as err:
        fail(err)
    except KeyboardInterrupt:
        say("Interrupted: finished items are kept; a rerun continues.")
        raise typer.Exit(int(ExitCode.SIGINT)) from None
    if run.signal_received is not None:
        say(f"Interrupted by signal {run.signal_received}: finished items are kept; a rerun continues.")
    if run.exit_code != ExitCode.OK:
        if _said[0] == said_before:
            status = STATUS_BY_EXIT.get(run.exit_code, "failed")
            counts = ", ".join(f"{k} {v}" for k, v in run.counts.items() if v not in (0, None, "", [], {}))
            say(
                f"{name}: exit {int(run.exit_code)} ({status})"
                + (f": {counts}" if counts else "")
                + f"; events in {cfg.state_dir / 'logs' / (name + '.jsonl')}."
            )
        raise typer.Exit(int(run.exit_code))


def is_tty() -> bool:
    return sys.stdout.isatty()


def print_json(document: Any) -> None:
    """The one JSON writer: `json.dumps` of the redacted document, no raw control character."""
    typer.echo(json_text(document, indent=2))


def json_text(value: Any, *, indent: int | None = None) -> str:
    """JSON for stdout, redacted and inert: for a document streamed item by item."""
    return json_visible(redact_value(value), indent=indent)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table (no colours: it goes to mail and logs too); each cell one visible line."""
    cells = [[str(h) for h in headers]] + [["" if c is None else visible(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Progress:
    """A one-line progress display on stderr, only when stderr is a terminal.

    With a known total it draws a bar; for streamed work (sitemaps, logs) it shows the count, the
    rate and the elapsed time. Redrawn at most ten times a second so it never slows the job.
    """

    def __init__(self, label: str, *, total: int | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int = 1, *, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn < 0.1 and self.done != self.total:
            return
        self._drawn = now
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            filled = int(20 * self.done / self.total)
            head = f"[{'#' * filled}{'.' * (20 - filled)}] {self.done:,}/{self.total:,}"
        else:
            head = f"{self.done:,}"
        line = f"{self.label}: {head}  {rate:,.0f}/s  {int(elapsed) // 60}:{int(elapsed) % 60:02d}  {visible(note)}"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        sys.stderr.write("\r" + line[:width].ljust(width))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sys.stderr.write("\r" + " " * width + "\r")
            sys.stderr.flush()
