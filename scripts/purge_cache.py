#!/usr/bin/env python3
"""Purge Cloudflare's cache precisely: URLs, tags, prefixes, hosts, a deploy's changes, the outbox.

Every purge is queued in the outbox first and sent from there in batches that respect the plan's
limits; a batch that fails stays pending and the next run (or `outbox --retry`) sends it.
Exit codes: 0 ok, 1 some items rejected or refused, 2 bad input or config, 75 lock held or API
unavailable (items stay pending), 130/143 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _cli
import typer
from edgecron.cloudflare import CloudflareClient, effective_batch, interruptible_sleep, request_body
from edgecron.config import Settings
from edgecron.errors import ExitCode, InputError
from edgecron.http import make_session
from edgecron.outbox import KINDS, PurgeOutbox
from edgecron.purge import (
    PurgePlan,
    SendReport,
    StateView,
    cached_pages_estimate,
    last_manifest,
    parse_manifest,
    peek_open,
    plan_changed,
    plan_deploy,
    plan_request,
    read_only,
    send_outbox,
)
from edgecron.runner import JobRun
from edgecron.sitemap import SitemapReader
from edgecron.warm import rewarm

app = _cli.new_app(__doc__ or "")
app.info.epilog = _cli.examples(
    "purge_cache.py urls /blog/hello/ /feed.xml --warm",
    "purge_cache.py deploy --manifest public/manifest.json --warm",
    "purge_cache.py tags post-123 --dry-run",
    "purge_cache.py outbox --retry          # what cron runs",
)


DRY_RUN = typer.Option(False, "--dry-run", "-n", help="Print the exact API request bodies; send and change nothing.")
JSON_OUT = typer.Option(False, "--json", help="Print one JSON document (summary and items).")
WARM = typer.Option(False, "--warm", help="After a successful purge, warm the purged URLs.")
MAX_WAIT = typer.Option(300.0, "--max-wait", min=0, help="Longest Retry-After/backoff wait per batch, in seconds.")
LOCK_WAIT = typer.Option(0.0, "--wait", min=0, help="Wait up to SECONDS for another purge run's lock.")
FILE = typer.Option(None, "--file", "-f", help="Read one value per line from PATH ('-' for stdin).")
SUMMARY = typer.Option(False, "--summary", help="Print the summary table even when not on a terminal.")


@dataclass(frozen=True)
class Opts:
    dry_run: bool = False
    json_out: bool = False
    warm: bool = False
    max_wait: float = 300.0
    lock_wait: float = 0.0
    include_held: bool = False
    summary: bool = False


@app.command(
    epilog=_cli.examples(
        "purge_cache.py urls https://www.example.com/blog/ /about --warm",
        "purge_cache.py urls --file changed.txt --dry-run",
        "git diff --name-only | sed 's|^public||' | purge_cache.py urls - --json",
    )
)
def urls(
    values: list[str] = typer.Argument(None, metavar="URL|PATH|-", show_default=False),
    file: str | None = FILE,
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    warm: bool = WARM,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """Purge URLs (absolute, or paths made absolute against SITE_URL); only ALLOWED_HOSTS."""
    _selector("url", values, file, Opts(dry_run, json_out, warm, max_wait, wait, summary=summary))


@app.command(
    epilog=_cli.examples(
        "purge_cache.py tags post-123 home",
        "purge_cache.py tags --file tags.txt --dry-run",
    )
)
def tags(
    values: list[str] = typer.Argument(None, metavar="TAG|-", show_default=False),
    file: str | None = FILE,
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """Purge everything the origin labelled with these Cache-Tag values."""
    _selector("tag", values, file, Opts(dry_run, json_out, False, max_wait, wait, summary=summary))


@app.command(
    epilog=_cli.examples(
        "purge_cache.py prefixes /blog/2026/ www.example.com/docs/",
        "purge_cache.py prefixes /assets/ --dry-run",
    )
)
def prefixes(
    values: list[str] = typer.Argument(None, metavar="PREFIX|-", show_default=False),
    file: str | None = FILE,
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """Purge every URL under a path prefix (host/path, or /path on SITE_URL's host)."""
    _selector("prefix", values, file, Opts(dry_run, json_out, False, max_wait, wait, summary=summary))


@app.command(
    epilog=_cli.examples(
        "purge_cache.py hosts static.example.com",
        "purge_cache.py hosts www.example.com --dry-run",
    )
)
def hosts(
    values: list[str] = typer.Argument(None, metavar="HOST|-", show_default=False),
    file: str | None = FILE,
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """Purge everything cached for whole host names (each must be in ALLOWED_HOSTS)."""
    _selector("host", values, file, Opts(dry_run, json_out, False, max_wait, wait, summary=summary))


@app.command(
    epilog=_cli.examples(
        "purge_cache.py everything --dry-run",
        "purge_cache.py everything --yes-everything",
    )
)
def everything(
    yes_everything: bool = typer.Option(False, "--yes-everything", help="Confirm purging the whole zone."),
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """Purge the whole zone. Every visitor's next request goes to the origin: prefer precise purges."""
    cfg = _cli.settings()
    pages = cached_pages_estimate(read_only(cfg.state_db))
    risk = (
        f"every cached object is refetched from the origin; the last warm run alone fetched {pages} pages"
        if pages
        else "every cached object on the zone is refetched from the origin on its next request"
    )
    if not yes_everything and not dry_run:
        _cli.fail(
            InputError(
                "purging everything needs --yes-everything",
                got=risk,
                expected="--yes-everything, or a precise purge: urls, tags, prefixes, hosts, deploy, changed",
            )
        )
    if _cli.is_tty() and not json_out:
        _cli.say(f"Warning: {risk}.")
    plan = PurgePlan(source="manual", items={"everything": ["everything"]}, notes={"risk": risk})
    _run(cfg, lambda conn: plan, Opts(dry_run, json_out, False, max_wait, wait, summary=summary))


@app.command(
    epilog=_cli.examples(
        "purge_cache.py deploy --manifest public/manifest.json --warm",
        'purge_cache.py deploy --manifest sha256sums.txt --ref "$(git rev-parse --short HEAD)"',
        "purge_cache.py deploy --manifest manifest.json --record-only   # first deploy: baseline",
    )
)
def deploy(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Deploy manifest: URL → content hash."),
    ref: str | None = typer.Option(None, "--ref", help="Deploy ref (commit, release); default: the manifest's."),
    record_only: bool = typer.Option(False, "--record-only", help="Record as the baseline; purge nothing."),
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    warm: bool = WARM,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """Purge what a deploy changed: URLs whose hash changed, new URLs and removed URLs.

    The manifest is compared with the last deployed one (format: notes/deploy-manifest.md); the
    deploy is recorded with its ref and time so log checks can compare before and after it."""
    cfg = _cli.settings()
    with _cli.user_errors():
        try:
            text = manifest.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"deploy manifest {manifest} cannot be read", got=str(exc), expected="a UTF-8 file"
            ) from None
        parsed = parse_manifest(text, source=str(manifest), site_url=cfg["SITE_URL"], allowed_hosts=cfg.allowed_hosts)
    deploy_ref = ref or parsed.ref or _cli.utcnow().strftime("%Y%m%dT%H%M%SZ")

    def make_plan(conn: StateView) -> PurgePlan:
        return plan_deploy(parsed, last_manifest(conn), ref=deploy_ref, record_only=record_only)

    _run(cfg, make_plan, Opts(dry_run, json_out, warm, max_wait, wait, summary=summary))


@app.command(
    epilog=_cli.examples(
        "purge_cache.py changed --warm",
        "purge_cache.py changed --sitemap https://www.example.com/sitemap.xml --dry-run",
    )
)
def changed(
    sitemap: list[str] = typer.Option([], "--sitemap", "-s", help="Sitemap URL (repeatable) [SITEMAP_URLS]."),
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    warm: bool = WARM,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """Purge URLs whose sitemap <lastmod> moved since the last run (the first run only remembers)."""
    cfg = _cli.settings()

    def make_plan(conn: StateView) -> PurgePlan:
        reader = SitemapReader.from_settings(make_session(), cfg)
        sitemaps = sitemap or list(cfg["SITEMAP_URLS"]) or reader.discover(cfg.require("SITE_URL"))
        plan = plan_changed(conn, reader.iter_entries(sitemaps))
        plan.notes["sitemap_problems"] = list(reader.report.problems)
        return plan

    _run(cfg, make_plan, Opts(dry_run, json_out, warm, max_wait, wait, summary=summary))


@app.command(
    "outbox",
    epilog=_cli.examples(
        "purge_cache.py outbox",
        "purge_cache.py outbox --retry",
        "purge_cache.py outbox --retry --dry-run",
    ),
)
def outbox_cmd(
    retry: bool = typer.Option(False, "--retry", help="Send pending and failed items now."),
    dry_run: bool = DRY_RUN,
    json_out: bool = JSON_OUT,
    warm: bool = WARM,
    max_wait: float = MAX_WAIT,
    wait: float = LOCK_WAIT,
    summary: bool = SUMMARY,
) -> None:
    """List pending and failed purges, or send them with --retry (what cron runs)."""
    cfg = _cli.settings("purge")
    if retry:
        _run(
            cfg,
            lambda conn: PurgePlan(source="retry"),
            Opts(dry_run, json_out, warm, max_wait, wait, True, summary=summary),
        )
        return
    items = PurgeOutbox.open_rows(read_only(cfg.state_db))
    if json_out:
        _cli.print_json({"open": len(items), "items": items})
        return
    if not items:
        _cli.out("The outbox is empty: nothing pending.")
        return
    table_rows = [
        (i["kind"], i["value"], "failed" if i.get("held") else i["status"], i["attempts"], i["last_error"] or "")
        for i in items
    ]
    _cli.out(_cli.table(table_rows, ["kind", "value", "status", "attempts", "last error"]))


# --- the shared flow -----------------------------------------------------------------------------


def _selector(kind: str, values: list[str] | None, file: str | None, opts: Opts) -> None:
    cfg = _cli.settings()
    with _cli.user_errors():
        plan = plan_request(
            kind, _read_values(values or [], file), site_url=cfg["SITE_URL"], allowed_hosts=cfg.allowed_hosts
        )
    if not plan.items[kind]:
        _report_rejected(plan)
        _cli.fail(
            InputError(
                f"none of the {kind}s given can be purged",
                expected=f"{kind}s on ALLOWED_HOSTS without wildcards (each rejection is listed above)",
            )
        )
    _run(cfg, lambda conn: plan, opts)


def _read_values(values: list[str], file: str | None) -> list[str]:
    out = [v for v in values if v != "-"]
    if "-" in values or file == "-":
        out += sys.stdin.read().splitlines()
    elif file:
        try:
            out += Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"{file} cannot be read", got=str(exc), expected="a UTF-8 file, one value per line"
            ) from None
    return out


def _run(cfg: Settings, make_plan: Callable[[StateView], PurgePlan], opts: Opts) -> None:
    with _cli.job("purge", cfg, dry_run=opts.dry_run, lock_wait=opts.lock_wait) as run:
        if opts.dry_run:
            plan = make_plan(read_only(cfg.state_db))
            _print_dry_run(cfg, plan, opts)
            if plan.rejected:
                run.exit_code = ExitCode.PROBLEMS
            return
        assert run.state is not None
        client = CloudflareClient.from_settings(
            cfg, max_wait=opts.max_wait, sleep=interruptible_sleep(run.stop), log=run.log
        )
        outbox = PurgeOutbox(run.state)
        recovered = outbox.recover_claimed()  # a run killed mid-send left its batch 'sending'
        plan = make_plan(run.state.conn)
        queued = plan.commit(run.state, now=run.now(), run_id=run.run_id)
        report = send_outbox(
            outbox, client, run_id=run.run_id, now=run.now, stop=run.stop, include_held=opts.include_held
        )
        warmed = None
        if opts.warm and report.error is None and not report.interrupted:
            warmed = _warm(cfg, run, [u for u in report.sent_urls if u not in plan.no_warm])
        run.counts.update(
            queued=queued,
            recovered=recovered,
            sent=sum(report.sent.values()),
            failed=len(report.failed),
            rejected=len(plan.rejected),
            calls=client.stats.calls,
            rate_limited=client.stats.rate_limited,
            waited_s=round(client.stats.waited_s, 1),
            pending=outbox.counts()["pending"],
        )
        _print_result(plan, report, run, warmed, opts)
        if report.error is not None:
            raise report.error
        if plan.rejected or report.failed or (warmed and warmed.get("failed")):
            run.exit_code = ExitCode.PROBLEMS


def _warm(cfg: Settings, run: JobRun, urls: list[str]) -> dict[str, Any] | None:
    assert run.state is not None
    summary = rewarm(urls, settings=cfg, state=run.state, run_id=run.run_id, now=run.now, stop=run.stop)
    if summary is None:
        return None
    return {"requested": summary.requested, "outcomes": dict(summary.outcomes), "failed": summary.outcomes["failed"]}


def _print_dry_run(cfg: Settings, plan: PurgePlan, opts: Opts) -> None:
    """The exact bodies a real run would POST: this plan's items plus what the outbox holds."""
    values: dict[str, dict[str, None]] = {kind: {} for kind in KINDS}
    for kind, value in peek_open(read_only(cfg.state_db), include_held=opts.include_held):
        values[kind].setdefault(value, None)
    for kind, items in plan.items.items():
        for value in items:
            values[kind].setdefault(value, None)
    bodies = []
    for kind in KINDS:
        items = list(values[kind])
        size = effective_batch(kind, plan=cfg["CF_PLAN"], batch_size=cfg["CF_PURGE_BATCH"])
        bodies += [request_body(kind, items[i : i + size]) for i in range(0, len(items), size)]
    endpoint = f"POST {cfg['CF_API_URL']}/zones/{cfg['CF_ZONE_ID'] or '<CF_ZONE_ID>'}/purge_cache"
    rejected = [{"value": r.value, "reason": r.reason} for r in plan.rejected]
    if opts.json_out:
        _cli.print_json({"dry_run": True, "endpoint": endpoint, "requests": bodies, "rejected": rejected, **plan.notes})
        return
    _report_rejected(plan)
    _cli.out(f"# dry run: {len(bodies)} request(s) would be sent; nothing was sent or recorded")
    for body in bodies:
        _cli.out(endpoint)
        _cli.out(_cli.json_text(body))


def _print_result(plan: PurgePlan, report: SendReport, run: JobRun, warmed: dict[str, Any] | None, opts: Opts) -> None:
    if opts.json_out:
        _cli.print_json(
            {
                "summary": run.counts,
                "notes": plan.notes,
                "sent": dict(report.sent),
                "rejected": [{"value": r.value, "reason": r.reason} for r in plan.rejected],
                "failed": [{"kind": k, "value": v, "error": e} for k, v, e in report.failed],
                "warm": warmed,
                "error": report.error.as_dict() if report.error else None,
            }
        )
        return
    _report_rejected(plan)
    for kind, value, error in report.failed:
        _cli.say(f"failed: {kind} {value}: {error}")
    if warmed and warmed.get("failed"):
        _cli.say(
            f"re-warm: {warmed['failed']} of {warmed['requested']} purged URLs could not be fetched "
            "(the purge itself succeeded; they fill on the next visit or warm run). Safe to rerun."
        )
    if opts.summary or _cli.is_tty():
        rows = [(k, v) for k, v in run.counts.items()] + [(k, v) for k, v in plan.notes.items() if v not in ([], None)]
        if warmed:
            rows += [("warmed", warmed["requested"]), ("warm outcomes", warmed["outcomes"])]
        _cli.out(_cli.table(rows, ["purge", "value"]))


def _report_rejected(plan: PurgePlan) -> None:
    for item in plan.rejected:
        _cli.say(f"rejected: {item.value}: {item.reason}")


if __name__ == "__main__":
    _cli.main(app)
