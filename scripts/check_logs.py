#!/usr/bin/env python3
"""Check nginx access logs (new lines only, rotation-safe) and the health of the other jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

import _cli
import typer
from edgecron.accesslog import LogReader
from edgecron.config import Settings
from edgecron.deploys import deploy_findings, record_slots
from edgecron.durations import has_units, parse_duration
from edgecron.errors import ExitCode, InputError
from edgecron.findings import Finding, Thresholds, file_findings, log_findings, names_nodes, on_node
from edgecron.health import job_findings, max_ages
from edgecron.logcursors import load_cursors, save_cursors
from edgecron.logfiles import expand_paths
from edgecron.logformat import resolve_format
from edgecron.loglines import line_numbers
from edgecron.logsummary import LogSummary
from edgecron.schedule import JOBS, load_schedule, schedule_timezone
from edgecron.state import StateDB, open_existing_state

app = _cli.new_app(__doc__ or "")


@app.command(
    epilog=_cli.examples(
        "check_logs.py                              # new lines since the last run, plus job health",
        "check_logs.py --json > checks.json         # one JSON document",
        "check_logs.py --no-state --since 2h        # whole files, last two hours, nothing saved",
        "check_logs.py --log /var/log/nginx/shop.access.log --format edgecron",
        "check_logs.py --max-age 2h                 # every job must have succeeded within 2 hours",
    )
)
def check(
    log: list[str] = typer.Option([], "--log", "-l", help="Log path or glob (repeatable) [ACCESS_LOGS]."),
    log_format: str | None = typer.Option(None, "--format", help="nginx log_format or preset [LOG_FORMAT]."),
    from_start: bool = typer.Option(False, "--from-start", help="Ignore saved positions: reread the logs."),
    no_state: bool = typer.Option(False, "--no-state", help="Read whole files; save no position or result."),
    since: str | None = typer.Option(None, help="Only lines at or after this time (ISO or 30m/2h/1d ago)."),
    until: str | None = typer.Option(None, help="Only lines before this time (ISO or 30m/2h/1d ago)."),
    max_age: str | None = typer.Option(None, help="Every job must have succeeded within this (30m, 2h, 2w, 1d12h)."),
    jobs: bool = typer.Option(True, "--jobs/--no-jobs", help="Also check job runs, locks and the outbox."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Check from the saved positions; save nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document (summary and findings)."),
    summary_table: bool = typer.Option(False, "--summary", help="Print the table even when not on a terminal."),
    wait: float = typer.Option(0.0, min=0, help="Wait up to SECONDS for another check-logs run's lock."),
) -> None:
    """Answer four questions: is the site up, is it slow, are jobs failing, did the deploy change anything.

    Reads only lines added since the last run (cursor per log; rename, delaycompress, .gz and
    copytruncate rotation handled), then judges them against CHECK_* thresholds. Exit codes: 0 all
    checks pass, 1 a check breached, 2 bad config or LOG_FORMAT not matching the log, 75 lock held.
    """
    cfg = _cli.settings("check-logs")
    now = _cli.utcnow()
    with _cli.user_errors():
        fmt = resolve_format(log_format or cfg["LOG_FORMAT"], escape=cfg["LOG_ESCAPE"], map_vars=cfg["LOG_MAP_VARS"])
        window = (_when(since, now, "--since"), _when(until, now, "--until"))
        ages = _max_ages(cfg, max_age, now)
    for warning in fmt.warnings:  # e.g. a JSON-shaped format read with default escaping
        _cli.say(f"Warning: {warning}.")
    limits = Thresholds.from_settings(cfg)
    paths, unmatched, refused = expand_paths(log or cfg["ACCESS_LOGS"])
    with _cli.job("check-logs", cfg, dry_run=dry_run or no_state, lock_wait=wait) as run:
        state = run.state or _existing_state(cfg)
        cursors = load_cursors(state, node=cfg.node_name) if state is not None and not (no_state or from_start) else {}
        reader = LogReader(
            paths, cursors_before=cursors, from_start=from_start or no_state, max_line=cfg["LOG_MAX_LINE_BYTES"]
        )
        new_summary = partial(LogSummary, fmt, since=window[0], until=window[1], slow_seconds=limits.p95_seconds)
        summary = new_summary()
        progress = _cli.Progress("reading")
        # Stopped (SIGTERM/SIGINT): nothing is saved below, the next run rereads from the old positions.
        reader.consume(summary, new_sink=new_summary, stop=run.stop.is_set, on_lines=progress.advance)
        progress.close()
        summary.check_format(fmt.name if fmt.name != "custom" else "LOG_FORMAT")
        findings = log_findings(summary, limits)
        findings += file_findings(
            reader.events,
            unmatched=unmatched,
            overlong=reader.stats.overlong,
            refused=refused,
            max_line=cfg["LOG_MAX_LINE_BYTES"],
        )
        findings = on_node(findings, cfg.node_name)  # this node's logs; what follows is fleet-wide
        if jobs and state is not None:
            findings += job_findings(
                state,
                lock_dir=cfg.lock_dir,
                now=run.now(),
                limits=limits,
                max_ages=ages,
                exclude_run=run.run_id,
                node=cfg.node_name,
            )
        findings += deploy_findings(state, summary.slots, now=run.now(), limits=limits)
        if run.state is not None and not run.stop.is_set():
            with run.state.transaction() as conn:  # results first, then the positions they cover
                record_slots(conn, summary.slots, now=run.now())
                save_cursors(conn, reader.cursors(), node=cfg.node_name, now=run.now(), run_id=run.run_id)
        breaches = [f for f in findings if f.breached]
        pct = summary.percentiles()
        run.counts = {
            "lines": summary.lines,
            "requests": summary.requests,
            "errors_5xx": summary.count_5xx(),
            "p95_ms": round(pct["p95"] * 1000),
            "malformed": summary.malformed,
            "bytes_read": reader.stats.bytes_read,
            "breaches": len(breaches),
        }
        run.log("checked", **run.counts, events=[e.message for e in reader.events])
        if breaches:
            run.exit_code = ExitCode.PROBLEMS
        doc = _document(summary, reader, findings, dry_run=dry_run or no_state)
        _report(
            doc,
            findings,
            json_out=json_out,
            table=summary_table or dry_run or _cli.is_tty(),
            with_node=names_nodes(cfg),
        )


def _existing_state(cfg: Settings) -> StateDB | None:
    """Dry runs read positions, runs and deploys when a state database exists; they create none."""
    return open_existing_state(cfg.state_db)


def _duration(text: str, option: str) -> timedelta:
    return parse_duration(text, option=option)  # the grammar of every duration option (durations.py)


def _when(text: str | None, now: datetime, option: str) -> float | None:
    if text is None:
        return None
    if has_units(text):
        return (now - _duration(text, option)).timestamp()
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{option} is not a time",
            got=text,
            expected="ISO 8601 (2026-11-28T14:00, UTC unless an offset is given) or 30m/2h/1d ago",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=now.tzinfo)
    return moment.timestamp()


def _max_ages(cfg: Settings, max_age: str | None, now: datetime) -> dict[str, timedelta]:
    """Per job: --max-age for all, else from its schedule (disabled jobs are not expected to run)."""
    if max_age:
        age = _duration(max_age, "--max-age")
        return dict.fromkeys((spec.name for spec in JOBS), age)
    return max_ages(load_schedule(cfg), now=now, tz=schedule_timezone(cfg))


def _document(summary: LogSummary, reader: LogReader, findings: list[Finding], *, dry_run: bool) -> dict[str, Any]:
    numbers = line_numbers(summary.malformed_at)
    return {
        "summary": {
            "lines": summary.lines,  # = requests + outside_window + malformed
            "requests": summary.requests,
            "outside_window": summary.outside_window,
            "malformed": summary.malformed,
            "overlong": summary.overlong,
            "status_classes": summary.status_classes(),
            "statuses": summary.status_counts(),
            "client_closed_499": summary.statuses.get(b"499", 0),
            "cache_status": (
                {"variable": summary.cache_var, "counts": counts}
                if (counts := summary.cache_status_counts()) is not None
                else None
            ),
            "request_time": summary.percentiles() if summary.has_request_time else None,
            "upstream_response_time": summary.upstream_percentiles(),
            "top_404_paths": summary.top_paths("404"),
            "top_5xx_paths": summary.top_paths("5xx"),
            "malformed_lines": [
                {"file": path, "line": number, "offset": offset}
                for (path, offset), number in zip(summary.malformed_at, numbers, strict=True)
            ],
            "bytes_read": reader.stats.bytes_read,
            "files_read": reader.stats.files,
            "breaches": sum(1 for f in findings if f.breached),
            "dry_run": dry_run,
        },
        "findings": [f.as_dict() for f in findings],
        "files": [{"path": e.path, "event": e.kind, "message": e.message} for e in reader.events],
    }


def _report(doc: dict[str, Any], findings: list[Finding], *, json_out: bool, table: bool, with_node: bool) -> None:
    if json_out:
        _cli.print_json(doc)
        return
    breaches = [f for f in findings if f.breached]
    if table:
        s = doc["summary"]
        rows = [
            (f.label(with_node=with_node), f.status, f.severity, _short(f.value), _short(f.threshold), f.summary)
            for f in findings
        ]
        _cli.out(_cli.table(rows, ["check", "status", "severity", "value", "threshold", "summary"]))
        _cli.out(
            f"\n{s['lines']} lines, {s['requests']} requests, {s['malformed']} malformed, "
            f"{len(breaches)} breached" + (" (nothing saved)" if s["dry_run"] else "")
        )
        _cli.out(_figures_line(s))
    for finding in breaches:  # under cron only this reaches the mail, on stderr
        _cli.say(f"BREACH [{finding.severity}] {finding.label(with_node=with_node)}: {finding.summary}")
        for example in finding.examples[:5]:
            _cli.say(f"    {example}")


def _figures_line(s: dict[str, Any]) -> str:
    """One line: statuses (499 apart), cache statuses, where the first malformed line is."""
    parts = [", ".join(f"{k} ×{n}" for k, n in s["status_classes"].items()) or "no requests"]
    if s["cache_status"]:
        parts.append("cache " + ", ".join(f"{k} ×{n}" for k, n in list(s["cache_status"]["counts"].items())[:5]))
    if s["malformed_lines"]:
        first = s["malformed_lines"][0]
        parts.append(f"first malformed line: {first['file']}:{first['line'] or '?'}")
    return "; ".join(parts)


def _short(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 24 else text[:23] + "…"


if __name__ == "__main__":
    _cli.main(app)
