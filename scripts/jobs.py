#!/usr/bin/env python3
"""Operate the edgecron jobs: status over SSH, the crontab, the scheduler process, next run times."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import _cli
import typer
from edgecron.db import is_postgres_url, safe_dsn
from edgecron.errors import InputError, LockHeld
from edgecron.findings import names_nodes
from edgecron.lock import JobLock
from edgecron.logformat import display
from edgecron.migrate import every_lock_held, move_state
from edgecron.retention import state_size
from edgecron.schedule import (
    JOBS,
    CronSyntaxError,
    find_job,
    load_schedule,
    next_fires,
    parse_cron,
    render_crontab,
    schedule_timezone,
)
from edgecron.scheduler import entries_for, serve
from edgecron.state import open_state
from edgecron.status import collect_status, node_status

app = _cli.new_app(__doc__ or "")
app.info.epilog = _cli.examples(
    "jobs.py status                      # the first command over SSH",
    "jobs.py crontab | crontab -         # install the schedule for system cron",
    "jobs.py schedule                    # or run the scheduler (see notes/edgecron-scheduler.service)",
    "jobs.py next warm --count 3",
)


@app.command(
    epilog=_cli.examples(
        "jobs.py status                 # last run (and node), next due, lock holder, log checks per node, outbox",
        "jobs.py status --json | jq '.jobs[] | select(.last_status != \"ok\")'",
    )
)
def status(json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Each job's last run (time, node, result, duration), next due time and lock holder; the outbox.

    With several nodes (NODE_NAME set, or STATE_DB on PostgreSQL) it also names the node that ran
    each job and shows each node's last log check (access logs are per node).

    The first command to run over SSH. It lists the job-health breaches check_logs.py reports (the
    same reading of the same runs), but exits 0 whatever they are: it reports, cron judges.
    """
    cfg = _cli.settings()
    with _cli.user_errors():
        schedule = load_schedule(cfg)
        tz = schedule_timezone(cfg)
        with open_state(cfg.state_db) as state:
            jobs, outbox = collect_status(cfg, state, schedule, now=_cli.utcnow())
            nodes = node_status(state)
    size = state_size(state_db=cfg.state_db, content_db=cfg.content_db, state_dir=cfg.state_dir)
    if json_out:
        _cli.print_json(
            {
                "jobs": [vars(j) for j in jobs],
                "nodes": [vars(n) for n in nodes],
                "outbox": vars(outbox),
                "state_bytes": {**vars(size), "total": size.total},
            }
        )
        return
    fleet = names_nodes(cfg) or len(nodes) > 1  # one node as before: nothing to tell apart
    rows = [
        (
            j.job,
            j.schedule or "off",
            _local(j.last_started, tz),
            *([j.last_node or ""] if fleet else []),
            j.last_trigger or "",
            _result(j),
            "" if j.last_duration_s is None else f"{j.last_duration_s:.1f}s",
            _local(j.next_due, tz),
            _holder(j.lock_holder, tz),
        )
        for j in jobs
    ]
    headers = ["job", "schedule", "last run", *(["node"] if fleet else []), "by", "result", "took", "next due", "lock"]
    _cli.out(f"times in {tz.key} (SCHEDULE_TIMEZONE)")
    _cli.out(_cli.table(rows, headers))
    if fleet:
        _cli.out("\nlog checks per node:" + ("" if nodes else " none recorded yet"))
        for n in nodes:
            check = (
                f"last check {_local(n.last_check_started, tz)}, {n.last_check_status}"
                if n.last_check_status
                else "no check recorded"
            )
            saved = (
                f"positions of {n.logs} log(s) saved {_local(n.logs_saved_at, tz)}"
                if n.logs_saved_at
                else "no log position saved"
            )
            _cli.out(f"  {n.node}: {check}; {saved}")
    _cli.out(f"\npurge outbox: {outbox.pending} pending, {outbox.failing} failing")
    stores = ", ".join(
        f"{name} {_mib(bytes_)}" if isinstance(where, Path) else f"{name.split('.')[0]} in PostgreSQL"
        for name, where, bytes_ in (
            ("state.db", cfg.state_db, size.state_db),
            ("content.db", cfg.content_db, size.content_db),
        )
    )
    _cli.out(f"state on disk: {_mib(size.total)} ({stores}, logs {_mib(size.logs)})")
    for item in outbox.failing_items:
        _cli.out(f"  #{item['id']} {item['kind']} {item['value']}: {item['attempts']} attempts, {item['last_error']}")
    for j in jobs:
        if j.last_error and j.last_status not in ("ok", "running"):
            # A manual run's failure is shown, but only scheduled runs are judged by the health checks.
            aside = " (a manual run: not judged as a schedule breach)" if j.last_trigger == "manual" else ""
            _cli.out(f"{j.job}: {j.last_error}{aside}")
    breaches = [b for j in jobs for b in j.breaches] + outbox.breaches
    _cli.out(f"\nhealth, as check_logs.py judges it: {len(breaches) or 'no'} breach" + "es" * (len(breaches) != 1))
    for b in breaches:
        _cli.out(f"  [{b['severity']}] {b['check']}: {b['summary']}")


@app.command(
    epilog=_cli.examples(
        "jobs.py crontab                           # print it",
        "jobs.py crontab | crontab -               # install it (replaces your crontab)",
        "jobs.py crontab --home /opt/edgecron > crontab.example",
    )
)
def crontab(
    home: str = typer.Option(str(_cli.ROOT), help="The checkout cron should run from."),
) -> None:
    """Print crontab lines for system cron, from the same table as `jobs.py schedule`.

    Times come from SCHEDULE_<JOB> in .env, else the defaults; SCHEDULE_<JOB>=off leaves a job out.
    """
    cfg = _cli.settings()
    with _cli.user_errors():
        schedule = load_schedule(cfg)
        tz = schedule_timezone(cfg)
    # A non-default settings file must reach cron's environment too, or cron would read ./.env.
    env_file = os.environ.get("EDGECRON_ENV_FILE")
    env_file = str(Path(env_file).expanduser().resolve()) if env_file else None
    sys.stdout.write(render_crontab(schedule, home=home, timezone=tz.key, env_file=env_file))


@app.command(
    epilog=_cli.examples(
        "jobs.py schedule                          # run in the foreground; Ctrl-C stops it",
        "systemctl enable --now edgecron-scheduler # see notes/edgecron-scheduler.service",
        "SCHEDULE_WARM='*/10 * * * *' jobs.py schedule --stop-grace 120",
    )
)
def schedule(
    misfire_grace: float = typer.Option(900, min=1, help="Seconds late a run may still start."),
    stop_grace: float = typer.Option(60, min=1, help="Seconds SIGTERM waits for running jobs."),
) -> None:
    """Run the scheduler: each job as a subprocess of its script at its cron times.

    One instance per job (a run that outlasts its interval makes the next skip), coalesced
    catch-up, explicit time zone (SCHEDULE_TIMEZONE). Jobs still take their own locks, so cron,
    manual runs and this scheduler never overlap. SIGTERM: no new runs; running jobs get
    --stop-grace seconds, then SIGTERM, then are killed. Use either this or the crontab, not both.
    """
    cfg = _cli.settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # our listener says the same, plainer
    with _cli.user_errors():
        tz = schedule_timezone(cfg)
        entries = entries_for(load_schedule(cfg), python=sys.executable, scripts_dir=_cli.ROOT / "scripts", tz=tz)
        lock = JobLock(cfg.lock_dir, "scheduler")
        try:
            lock.acquire(now=_cli.utcnow())
        except LockHeld as err:
            err.hint = "Only one scheduler may run; stop the other one (systemctl stop edgecron-scheduler)."
            raise
    try:
        code = serve(entries, timezone=tz, misfire_grace=misfire_grace, stop_grace=stop_grace, cwd=_cli.ROOT)
    finally:
        lock.release()
    raise typer.Exit(code)


@app.command(
    "next",
    epilog=_cli.examples(
        "jobs.py next                       # the next run of every job",
        "jobs.py next warm --count 5",
        "jobs.py next --cron '0 6 * * 0'    # check an expression before putting it in .env",
    ),
)
def next_runs(
    job: str = typer.Argument(None, help="A job name (warm, purge, import, check-logs, cache-rules)."),
    count: int = typer.Option(1, min=1, max=100, help="How many fire times to show."),
    cron: str = typer.Option(None, help="A cron expression to try instead of a job's schedule."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show the next fire times (in SCHEDULE_TIMEZONE), with exact cron semantics."""
    cfg = _cli.settings()
    now = _cli.utcnow()
    with _cli.user_errors():
        tz = schedule_timezone(cfg)
        if cron is not None:
            try:
                plans: dict[str, Any] = {cron: parse_cron(cron)}
            except CronSyntaxError as exc:
                raise InputError(
                    f"--cron is not a valid cron expression ({exc.field} field)",
                    got=cron,
                    expected=f"{exc.field} {exc.expected}",
                ) from None
        else:
            chosen = {find_job(job).name} if job else None
            plans = {s.name: s.cron for s in load_schedule(cfg) if chosen is None or s.name in chosen}
    times = {
        name: [t.isoformat() for t in next_fires(c, now, tz, count=count)] if c else [] for name, c in plans.items()
    }
    if json_out:
        _cli.print_json({"timezone": tz.key, "next": times})
        return
    for name, fires in times.items():
        _cli.out(f"{name}: " + (", ".join(fires) if fires else "off"))


@app.command(
    "migrate-state",
    epilog=_cli.examples(
        "jobs.py migrate-state --to postgresql://edgecron@db.internal/edgecron --dry-run   # table → rows",
        'jobs.py migrate-state --to "$(cat /etc/edgecron/state-db.url)"',
        "jobs.py migrate-state --to postgresql://… --json",
    ),
)
def migrate_state(
    to: str = typer.Option(..., "--to", help="PostgreSQL URL to move state.db into (postgresql://user:pw@host/db)."),
    content_to: str = typer.Option(None, "--content-to", help="Where content.db goes [default: --to]."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show each table's rows; copy nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Move STATE_DIR's SQLite state (state.db, and content.db if present) into PostgreSQL.

    Creates the schema there, copies every table in one transaction per store and moves the id
    sequences past the copied rows. Refused when a target table already holds rows (named) or while
    any job holds its lock: it holds every job's lock itself meanwhile. The SQLite files stay as they
    are (the way back); it prints the .env lines to set (STATE_DB, CONTENT_DB), password hidden.
    --json: dry_run, stores (store, source, target, tables: table → rows, rows, not_copied),
    content_note (why content.db stays, or null) and env (the .env values; null: leave unset).
    """
    cfg = _cli.settings()
    with _cli.user_errors():
        state_url, content_url = _postgres_url(to, "--to"), _postgres_url(content_to or to, "--content-to")
        source = _sqlite_file(cfg.state_db, key="STATE_DB")
        if source is None:
            raise InputError("no state database to move", got=str(cfg.state_db), expected="STATE_DIR/state.db")
        content = _sqlite_file(cfg.content_db, key="CONTENT_DB") if isinstance(cfg.content_db, Path) else None
        with every_lock_held(cfg.lock_dir, [*(spec.name for spec in JOBS), "scheduler"], now=_cli.utcnow()):
            moved, content_note = move_state(
                state=source,
                state_url=state_url,
                content=content,
                content_url=content_url,
                node=cfg.node_name,
                dry_run=dry_run,
            )
    env = {"STATE_DB": safe_dsn(state_url), "CONTENT_DB": safe_dsn(content_url) if content_note is None else None}
    if json_out:
        _cli.print_json(
            {
                "dry_run": dry_run,
                "stores": [{**vars(m), "rows": m.rows} for m in moved],
                "content_note": content_note,
                "env": env,
            }
        )
        return
    for m in moved:
        _cli.out(f"{m.store}: {m.source} → {m.target}")
        _cli.out(_cli.table([(t, str(n)) for t, n in m.tables.items()], ["table", "rows"]))
        verb = "to copy (--dry-run: nothing copied)" if dry_run else "copied in one transaction"
        _cli.out(f"{m.rows} rows in {len(m.tables)} tables {verb}\n")
    if content_note:
        _cli.out(content_note)
    if dry_run:
        return
    _cli.out("The SQLite files are left as they were (the way back). Set in .env (password hidden: put the")
    _cli.out("full URL in a file named by STATE_DB_FILE / CONTENT_DB_FILE, mode 600), then run the jobs as before:")
    for key, value in env.items():
        if value is not None:
            _cli.out(f"  {key}={value}")


def _sqlite_file(location: Path | str, *, key: str) -> Path | None:
    """The SQLite file of a store (None when an optional one does not exist)."""
    if isinstance(location, str):
        raise InputError(f"{key} is already PostgreSQL", got=safe_dsn(location), expected="a SQLite state to move")
    return location if location.exists() else None


def _postgres_url(value: str, option: str) -> str:
    if not is_postgres_url(value):
        raise InputError(f"{option} is not a PostgreSQL URL", got=safe_dsn(value), expected="postgresql://user@host/db")
    return value.strip()


def _local(stamp: str | None, tz: tzinfo) -> str:
    """An ISO time in the schedule's zone, with the zone said (over SSH nobody knows the server's)."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return display(stamp.encode())  # the lock file is anyone's to write: never raw to a terminal
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


def _result(j: Any) -> str:
    if j.last_status is None:
        return "never ran"
    return j.last_status if j.last_exit_code in (None, 0) else f"{j.last_status} ({j.last_exit_code})"


def _holder(holder: dict[str, Any] | None, tz: tzinfo) -> str:
    if not holder:
        return ""
    return f"pid {holder['pid']} since {_local(holder['started'], tz)}"


if __name__ == "__main__":
    _cli.main(app)
