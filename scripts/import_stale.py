#!/usr/bin/env python3
"""Import stale content from a feed into the content store: idempotent, resumable, reversible."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import _cli
import typer
from edgecron.config import Settings
from edgecron.content import PG_BACKUP_HINT, ContentStore
from edgecron.durations import parse_duration
from edgecron.errors import ConfigError, EdgecronError, ExitCode, InputError, from_unexpected
from edgecron.feed import Validator, parse_field_map
from edgecron.feedhttp import HttpSource
from edgecron.feedsource import format_choice, open_source
from edgecron.http import make_session
from edgecron.importer import Committed, Importer, ImportOptions, forward_purges, run_history
from edgecron.outbox import PurgeOutbox
from edgecron.purge import send_for_another_job
from edgecron.retention import RetentionPolicy
from edgecron.runner import JobRun
from edgecron.sources import FIELD_RULES, FORMATS
from edgecron.state import open_existing_state
from edgecron.warm import rewarm

app = _cli.new_app("Import stale content from IMPORT_SOURCE; `run` is the default command.", default_command="run")
app.info.epilog = _cli.examples(
    "import_stale.py                      # run: import what changed since the last run",
    "import_stale.py rollback RUN_ID      # undo a bad feed",
    "import_stale.py check-db             # is the key lookup an index search?",
)


@app.command(
    epilog=_cli.examples(
        "import_stale.py --dry-run               # what would change, nothing written",
        "import_stale.py run --max-age 30d       # also re-check items older than 30 days",
        "import_stale.py --purge --warm --json   # import, purge and re-warm the changed pages",
        "import_stale.py --format wordpress      # read IMPORT_SOURCE as the WordPress REST API",
    )
    + "\n\n\b\nField rules per format (id, url, updated_at, title, body):\n"
    + "\n".join(f"  {name}: {rule}" for name, rule in FIELD_RULES.items())
)
def run(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Report what would change; write nothing."),
    max_reject_rate: float = typer.Option(
        None, help="Stop (exit 2) past this share of rejects [IMPORT_MAX_REJECT_RATE]."
    ),
    max_age: str = typer.Option(None, help="Also re-check stored items older than this (30d, 12h)."),
    source: str = typer.Option(None, help="Feed URL or file (.jsonl, .csv, .json, .xml) [IMPORT_SOURCE]."),
    feed_format: str = typer.Option(
        None, "--format", help=f"How the source is read: {', '.join(FORMATS)} [IMPORT_FORMAT, default auto]."
    ),
    purge: bool = typer.Option(False, "--purge", help="Send this run's purges to Cloudflare at the end."),
    warm: bool = typer.Option(False, "--warm", help="Re-warm the inserted and updated pages after."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    summary: bool = typer.Option(False, "--summary", help="Print the summary table even when not on a terminal."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another run's lock."),
) -> None:
    """Pull items, upsert what changed, checkpoint every batch, queue purges of changed URLs."""
    cfg = _cli.settings("import")
    with _cli.user_errors():
        options = ImportOptions(
            batch_size=cfg["IMPORT_BATCH"],
            max_reject_rate=cfg["IMPORT_MAX_REJECT_RATE"] if max_reject_rate is None else max_reject_rate,
            overlap=timedelta(seconds=cfg["IMPORT_OVERLAP"]),
            max_age=parse_duration(max_age) if max_age else None,
            dry_run=dry_run,
        )
        if not 0 <= options.max_reject_rate <= 1:
            raise InputError("--max-reject-rate is out of range", got=max_reject_rate, expected="0 to 1")
        spec = source or cfg.require("IMPORT_SOURCE")
        requested = _format(feed_format, cfg)
        if not cfg.allowed_hosts:
            raise ConfigError("SITE_URL and ALLOWED_HOSTS are both empty", expected="the hosts item URLs may use")
    with (
        _cli.job("import", cfg, dry_run=dry_run, lock_wait=wait) as job,
        ContentStore(cfg.content_db, readonly=dry_run, retention=RetentionPolicy.from_settings(cfg)) as store,
    ):
        outbox = PurgeOutbox(job.state) if job.state is not None else None
        relay = (lambda: forward_purges(store, outbox, now=job.now())) if outbox else (lambda: 0)
        relay()  # URLs a killed run committed but did not hand over yet
        feed = _open_feed(cfg, spec, store, options, requested=requested)
        importer = Importer(
            store=store,
            source=feed,
            validator=Validator(
                allowed_hosts=cfg.allowed_hosts,
                max_body_bytes=cfg["IMPORT_MAX_BODY_BYTES"],
                field_map=parse_field_map(cfg["IMPORT_FIELD_MAP"]),
                naive_timezone=ZoneInfo(cfg["IMPORT_NAIVE_TIMEZONE"]) if cfg["IMPORT_NAIVE_TIMEZONE"] else None,
            ),
            options=options,
            run_id=job.run_id,
            now=job.now,
            stop=job.stop,
            backup=lambda: _backup(store, cfg, job),
            forward_purges=relay,
        )
        report = importer.report
        table = summary or dry_run or _cli.is_tty()
        file_source = isinstance(getattr(feed, "path", None), Path)  # its checkpoint holds while it is unchanged
        chosen = None
        try:
            try:
                importer.run()
            finally:
                chosen = format_choice(feed, requested)
                if chosen is not None:
                    job.log("format", **chosen.as_dict())
                    if chosen.auto and _cli.interactive() and not json_out:
                        _cli.say(f"{feed.name}: {chosen.sentence()}")
            job.counts.update(report.counts)
            job.log("imported", **report.counts, backup=report.backup, resumed_from=report.resumed_from)
            if report.counts["rejected"]:
                job.exit_code = ExitCode.PROBLEMS
            sent = _send_purges(cfg, job, outbox) if purge and outbox else None
            warmed = _warm(cfg, job, report.live_urls) if warm and not dry_run and not job.stop.is_set() else None
        except Exception as exc:
            error = from_unexpected(exc)
            if error is None:
                raise  # a bug: keep its traceback
            job.counts.update(report.counts)
            if report.committed is not None:  # the error's own hint may say "Nothing was changed"
                error.hint = _kept(report.committed, error, file_source=file_source)
            doc = report.as_dict() | {"dry_run": dry_run, "purge": None, "warm": None, "error": error.as_dict()}
            doc["format"] = chosen.as_dict() if chosen is not None else None
            _print_report(doc, json_out=json_out, table=table)
            raise error from None
        doc = report.as_dict() | {"dry_run": dry_run, "purge": sent, "warm": warmed}
        doc["format"] = chosen.as_dict() if chosen is not None else None
        _print_report(doc, json_out=json_out, table=table)
        if report.stopped and report.committed is not None:  # interrupted: the frame says so next
            _cli.say(_kept(report.committed, None, file_source=file_source))


def _backup(store: ContentStore, cfg: Settings, job: JobRun) -> str | None:
    """A copy of a SQLite store before the first write (None on PostgreSQL: its own backups cover it)."""
    path = store.backup(cfg.state_dir / "backups", keep=cfg["BACKUP_KEEP"], now=job.now(), label=job.run_id)
    return None if path is None else str(path)


def _kept(committed: Committed, error: EdgecronError | None, *, file_source: bool) -> str:
    """What a run that ended early wrote and what a rerun does: said instead of "Nothing was changed"."""
    c = committed
    wrote = (
        f"{c.inserted} inserted, {c.updated} updated, {c.removed} removed, {c.rejected} rejected, "
        f"{c.purges_queued} URL(s) queued for purge"
    )
    if error is None:  # interrupted: the job frame says what a rerun does
        return f"Kept from this run: {wrote}; checkpoint after {c.checkpoint}."
    rerun = "Safe to rerun later" if error.exit_code == ExitCode.TEMPFAIL else "Fix the cause above and rerun"
    if not c.rerun_continues:  # the import finished; what failed came after it
        return (
            f"The import finished and is kept: {wrote}. {rerun}: it finds those items unchanged; "
            "queued purges stay in the outbox until sent."
        )
    edited = " (a file edited since is read again from its start; unchanged items are skipped)" if file_source else ""
    return f"Kept from this run: {wrote}; checkpoint after {c.checkpoint}. {rerun}: it continues from the checkpoint{edited}."


def _format(option: str | None, cfg: Settings) -> str:
    """--format, checked like IMPORT_FORMAT, else IMPORT_FORMAT."""
    if option is None:
        return str(cfg["IMPORT_FORMAT"])
    value = option.strip().lower()
    if value not in FORMATS:
        raise InputError(
            "--format is not a format this tool reads", got=option, expected="one of " + ", ".join(FORMATS)
        )
    return value


def _open_feed(cfg: Settings, spec: str, store: ContentStore, options: ImportOptions, *, requested: str) -> Any:
    feed = open_source(
        spec,
        session=make_session(),
        allowed_hosts=cfg.allowed_hosts,
        field_map=parse_field_map(cfg["IMPORT_FIELD_MAP"]),
        timeout=cfg["IMPORT_TIMEOUT"],
        max_page_bytes=cfg["IMPORT_MAX_PAGE_BYTES"],
        max_body_bytes=cfg["IMPORT_MAX_BODY_BYTES"],
        base_dir=cfg.base_dir,
        auth=cfg.import_auth,
        format=requested,
    )
    since_param = cfg["IMPORT_SINCE_PARAM"]
    if isinstance(feed, HttpSource) and since_param and options.max_age is None:
        saved = store.checkpoint(feed.name)
        if saved.cursor and saved.resume is None:  # ask the API only for what may have changed
            feed = feed.with_since(since_param, (saved.cursor[0] - options.overlap).isoformat())
    return feed


def _send_purges(cfg: Settings, job: JobRun, outbox: PurgeOutbox) -> dict[str, Any]:
    """Send what the outbox holds now, as the purge job would (purge.py takes its lock)."""
    report = send_for_another_job(outbox, cfg, run_id=job.run_id, now=job.now, stop=job.stop, log=job.log)
    if report is None:
        return {"skipped": "the purge job is running; it sends these URLs"}
    job.counts.update(purged=sum(report.sent.values()), purge_failed=len(report.failed))
    if report.error is not None:
        raise report.error
    if report.failed:
        job.exit_code = ExitCode.PROBLEMS
    return {"sent": sum(report.sent.values()), "failed": len(report.failed), "pending": outbox.counts()["pending"]}


def _warm(cfg: Settings, job: JobRun, urls: list[str]) -> dict[str, Any] | None:
    assert job.state is not None
    summary = rewarm(urls, settings=cfg, state=job.state, run_id=job.run_id, now=job.now, stop=job.stop)
    if summary is None:
        return None
    failed = summary.outcomes["failed"]
    job.counts.update(warmed=summary.requested, warm_failed=failed)
    if failed:
        job.exit_code = ExitCode.PROBLEMS
    return {"requested": summary.requested, "outcomes": dict(summary.outcomes), "failed": failed}


def _print_report(doc: dict[str, Any], *, json_out: bool, table: bool) -> None:
    counts = doc["counts"]
    if json_out:
        _cli.print_json(doc)
    elif table:
        label = "would be " if doc["dry_run"] else ""
        rows = [
            (name, counts[name])
            for name in ("read", "inserted", "updated", "removed", "unchanged", "rejected", "duplicates")
        ]
        _cli.out(_cli.table(rows, [f"items ({label}{doc['source']})", "count"]))
        if doc["resumed_from"]:
            _cli.out(f"resumed after {doc['resumed_from']}")
        if doc["backup"]:
            _cli.out(f"backup: {doc['backup']}")
    if counts["rejected"] and not json_out:
        _cli.say(f"{counts['rejected']} item(s) rejected:")
        for reject in doc["rejects"][:10]:
            _cli.say(f"  {reject['position']}: {reject['field']}: got {reject['got']}, expected {reject['expected']}")


@app.command(
    epilog=_cli.examples(
        "import_stale.py runs                    # find the run id",
        "import_stale.py rollback 3f2a9c0d       # a unique prefix is enough",
    )
)
def rollback(
    run_id: str = typer.Argument(..., help="The import run to undo (see `runs`)."),
    force: bool = typer.Option(False, "--force", help="Also overwrite items later runs changed again."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Restore the rows an import run changed to their previous versions; queue their purges."""
    cfg = _cli.settings()
    with _cli.user_errors(), ContentStore(cfg.content_db, readonly=True) as lookup:
        target = lookup.resolve_run_id(run_id)  # a typo is a usage error, not a run of the import job
    with _cli.job("import", cfg) as job, ContentStore(cfg.content_db) as store:
        assert job.state is not None
        backups: list[str | None] = []

        def backup() -> None:  # after the checks, before the first write
            backups.append(_backup(store, cfg, job))

        result = store.rollback(target, run_id=job.run_id, now=job.now(), force=force, before_write=backup)
        forward_purges(store, PurgeOutbox(job.state), now=job.now())
        job.counts.update(restored=result.restored, removed=result.removed, purges=len(result.urls))
        doc = {"run_id": job.run_id, "rolled_back": target, "restored": result.restored, "removed": result.removed}
        doc |= {"backup": backups[0], "purge_urls": result.urls}
        if json_out:
            _cli.print_json(doc)
        else:  # only ever run by a person: confirm what happened, terminal or not
            _cli.out(
                f"rolled back {target}: {result.restored} restored, {result.removed} removed, "
                f"{len(result.urls)} URL(s) queued for purge; backup {backups[0] or PG_BACKUP_HINT}"
            )


@app.command(epilog=_cli.examples("import_stale.py runs --limit 5", "import_stale.py runs --json"))
def runs(
    limit: int = typer.Option(20, min=1, help="How many runs to list."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List import runs (newest first) with their counts."""
    cfg = _cli.settings()
    with _cli.user_errors(), ContentStore(cfg.content_db, readonly=True) as store:
        state = open_existing_state(cfg.state_db)
        try:
            docs = run_history(store, state, limit=limit)
        finally:
            if state is not None:
                state.close()
    if json_out:
        _cli.print_json({"runs": docs})
        return
    fields = ("inserted", "updated", "removed", "unchanged", "rejected")
    table = [
        (
            d["run_id"],
            d["started_at"][:19],
            d["kind"],
            d["status"],
            *(d["counts"].get(f, "") for f in fields),
            d["rolled_back_by"] or "",
        )
        for d in docs
    ]
    _cli.out(_cli.table(table, ["run_id", "started", "kind", "status", *fields, "rolled back by"]))


@app.command("check-db", epilog=_cli.examples("import_stale.py check-db", "import_stale.py check-db --json"))
def check_db(json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Show the content store's indexes and the query plans of its key lookups; exit 1 on a full scan."""
    cfg = _cli.settings()
    with _cli.user_errors(), ContentStore(cfg.content_db, readonly=True) as store:
        if not store.exists:
            raise InputError("there is no content store yet", got=str(store.path), expected="an import run first")
        check = store.check()
    if json_out:
        _cli.print_json(
            {"path": str(check.path), "indexes": check.indexes, "plans": check.plans, "full_scans": check.full_scans}
        )
    else:
        rows = [(i["table"], i["name"], "unique" if i["unique"] else "", ",".join(i["columns"])) for i in check.indexes]
        _cli.out(_cli.table(rows, ["table", "index", "", "columns"]))
        for name, details in check.plans.items():
            _cli.out(f"{name}: {' / '.join(details)}")
    if check.full_scans:
        _cli.say(f"Problem: full table scan for {', '.join(check.full_scans)}; the key index is missing.")
        raise typer.Exit(int(ExitCode.PROBLEMS))


if __name__ == "__main__":
    _cli.main(app)
