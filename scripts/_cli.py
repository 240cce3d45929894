"""Glue shared by the scripts: settings, the job frame, error → one line + hint + exit code, output.

Only scripts import this (the library never prints nor imports Typer).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "lib") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "lib"))

from edgecron.config import Settings, load_settings  # noqa: E402
from edgecron.errors import EdgecronError, ExitCode  # noqa: E402
from edgecron.runner import JobRun  # noqa: E402


def utcnow() -> datetime:
    return datetime.now(UTC)


def env_file() -> Path:
    """`.env` beside the checkout (cron runs from $HOME), or EDGECRON_ENV_FILE."""
    override = os.environ.get("EDGECRON_ENV_FILE")
    return Path(override).expanduser() if override else ROOT / ".env"


def new_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        add_completion=False,
        no_args_is_help=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def examples(*lines: str) -> str:
    """A command epilog, so `--help` ends with examples (click keeps `\\b` blocks unwrapped)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def fail(err: EdgecronError) -> NoReturn:
    """Print `Error: <what failed>: got …, expected ….` and the hint; exit with the error's code."""
    typer.echo(f"Error: {err.message}", err=True)
    if err.hint:
        typer.echo(err.hint, err=True)
    raise typer.Exit(int(err.exit_code))


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except EdgecronError as err:
        fail(err)


def settings() -> Settings:
    with user_errors():
        return load_settings(env_file=env_file())


@contextmanager
def job(
    name: str,
    cfg: Settings,
    *,
    dry_run: bool = False,
    lock_wait: float = 0.0,
) -> Iterator[JobRun]:
    """Run a job inside the lock/run-record frame; map errors and signals to exit codes."""
    run = JobRun(settings=cfg, job=name, dry_run=dry_run, lock_wait=lock_wait, now=utcnow)
    try:
        with run:
            yield run
    except EdgecronError as err:
        fail(err)
    except KeyboardInterrupt:
        typer.echo("Interrupted: finished items are kept; a rerun continues.", err=True)
        raise typer.Exit(int(ExitCode.SIGINT)) from None
    if run.signal_received is not None:
        typer.echo(
            f"Interrupted by signal {run.signal_received}: finished items are kept; a rerun continues.",
            err=True,
        )
    if run.exit_code != ExitCode.OK:
        raise typer.Exit(int(run.exit_code))


def is_tty() -> bool:
    return sys.stdout.isatty()


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, default=str, ensure_ascii=False))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table (no colours: it goes to mail and logs too)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
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
        line = f"{self.label}: {head}  {rate:,.0f}/s  {int(elapsed) // 60}:{int(elapsed) % 60:02d}  {note}"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        sys.stderr.write("\r" + line[:width].ljust(width))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sys.stderr.write("\r" + " " * width + "\r")
            sys.stderr.flush()
