#!/usr/bin/env python3
"""Warm Cloudflare's cache: read sitemaps or a URL list, GET each page anonymously, report cf-cache-status."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO
from urllib.parse import urljoin

import _cli
import typer
from edgecron.config import Settings
from edgecron.dropped import REASONS, DroppedUrls
from edgecron.errors import ExitCode, InputError
from edgecron.http import make_session
from edgecron.runner import JobRun
from edgecron.safetext import visible
from edgecron.sitemap import SitemapEntry, SitemapReader
from edgecron.warm import (
    WarmOptions,
    WarmResult,
    WarmResultStore,
    WarmSummary,
    options_from_settings,
    plan_urls,
    warm_urls,
    warmed_urls,
)

app = _cli.new_app(__doc__ or "")


@app.command(
    epilog=_cli.examples(
        "warm_cache.py                                  # sitemaps from SITE_URL/robots.txt",
        "warm_cache.py --sitemap https://www.example.com/sitemap.xml --verify",
        "warm_cache.py --dry-run --limit 20             # what would be requested",
        "warm_cache.py --urls-file changed.txt --concurrency 4 --rate 5",
        "warm_cache.py --json > warm.json               # for scripts and dashboards",
    )
)
def warm(
    sitemap: list[str] = typer.Option([], "--sitemap", "-s", help="Sitemap or sitemap index URL (repeatable)."),
    urls_file: str | None = typer.Option(
        None, "--urls-file", "-f", help="File with one URL or path per line; '-' for stdin."
    ),
    concurrency: int | None = typer.Option(None, min=1, max=256, help="Parallel requests [WARM_CONCURRENCY]."),
    rate: float | None = typer.Option(None, min=0, help="Requests per second, 0 = unlimited [WARM_RATE]."),
    timeout: float | None = typer.Option(None, min=0.1, help="Seconds per request [WARM_TIMEOUT]."),
    max_retry_wait: float = typer.Option(30.0, min=0, help="Longest Retry-After honoured before giving up on a URL."),
    max_failure_rate: float | None = typer.Option(
        None, min=0, max=1, help="Exit 1 above this failed share [WARM_MAX_FAILURE_RATE]."
    ),
    limit: int | None = typer.Option(None, min=1, help="Warm at most N URLs."),
    verify: bool = typer.Option(False, "--verify", help="Second pass: list URLs still not served from cache."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would be requested; request no page."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document (summary and items)."),
    summary_table: bool = typer.Option(False, "--summary", help="Print the summary table even when not on a terminal."),
    wait: float = typer.Option(0.0, min=0, help="Wait up to SECONDS for another warm run's lock."),
) -> None:
    """Warm the cache from sitemaps (discovered via robots.txt by default) or a URL list.

    Requests are anonymous GETs (no Cookie, Authorization or Origin); BYPASS_PATHS and hosts
    outside ALLOWED_HOSTS are skipped. Exit codes: 0 ok, 1 too many failures or sitemap problems,
    2 bad input or config, 75 lock held or site unreachable, 130/143 interrupted.
    """
    cfg = _cli.settings("warm")
    overrides = {"concurrency": concurrency, "rate": rate, "timeout": timeout, "max_retry_wait": max_retry_wait}
    options = options_from_settings(cfg, **overrides)
    threshold = cfg["WARM_MAX_FAILURE_RATE"] if max_failure_rate is None else max_failure_rate
    with _cli.user_errors():  # an unreadable --urls-file is a usage error, not a run of the warm job
        urls_handle = _open_urls_file(urls_file) if urls_file else None
    with _cli.job("warm", cfg, dry_run=dry_run, lock_wait=wait) as run:
        reader = SitemapReader.from_settings(make_session(), cfg, on_sitemap=lambda url: run.log("sitemap", url=url))
        dropped = reader.report.dropped  # one count of drops: the reader's and the plan's
        sources = _sources(cfg, reader, sitemap=sitemap, urls_handle=urls_handle)
        planned = plan_urls(
            sources, allowed_hosts=cfg.allowed_hosts, bypass_paths=cfg["BYPASS_PATHS"], dropped=dropped, limit=limit
        )
        if dry_run:
            _dry_run(planned, reader=reader, run=run, cfg=cfg, json_out=json_out)
            return
        assert run.state is not None  # real runs always have the state database
        progress = _cli.Progress("warming")
        store = WarmResultStore(run.state, run_id=run.run_id, now=run.now)
        summary = warm_urls(
            planned, options=options, stop=run.stop, store=store, on_result=lambda r: progress.advance(note=r.url)
        )
        progress.close()
        still_cold = _verify(run, options) if verify and not run.stop.is_set() else None
        run.counts = {
            "requested": summary.requested,
            **summary.outcomes,
            **_dropped_counts(dropped),
            **({"still_not_cached": len(still_cold)} if still_cold is not None else {}),
        }
        problems = _finish_sources(reader, summary.requested, run)
        if not run.stop.is_set():
            _check_something_planned(summary.requested, dropped, cfg.allowed_hosts)
        _warn_dropped(dropped)
        if summary.failure_rate > threshold or problems:
            run.exit_code = ExitCode.PROBLEMS
        _report(
            summary,
            dropped=dropped,
            problems=problems,
            still_cold=still_cold,
            json_out=json_out,
            threshold=threshold,
            table=summary_table or _cli.is_tty(),
        )


def _dry_run(planned: Iterator[str], *, reader: SitemapReader, run: JobRun, cfg: Settings, json_out: bool) -> None:
    dropped = reader.report.dropped
    listed = _print_dry_run(planned, dropped=dropped, json_out=json_out)
    run.counts = {"would_request": listed, **_dropped_counts(dropped)}
    for message in _finish_sources(reader, listed, run):  # a real run would exit 1 on these too
        _cli.say(f"sitemap problem: {message}")
        run.exit_code = ExitCode.PROBLEMS
    _check_something_planned(listed, dropped, cfg.allowed_hosts)
    _warn_dropped(dropped)


def _dropped_counts(dropped: DroppedUrls) -> dict[str, int]:
    return {f"dropped_{reason}": count for reason, count in dropped.counts.items()}


def _warn_dropped(dropped: DroppedUrls) -> None:
    """One line on stderr, also under cron: the sitemap lists pages that will never be warmed (exit stays 0)."""
    if not dropped.total:
        return
    first = dropped.first[0]
    where = f", in {visible(first.sitemap)}" if first.sitemap else ""
    _cli.say(
        f"warning: {dropped.total} listed URLs were dropped, not warmed: {dropped.summary()} "
        f"(first: {visible(first.url)}: {REASONS[first.reason]}{where}); --json lists the first {dropped.KEEP}."
    )


def _verify(run: JobRun, options: WarmOptions) -> list[dict[str, object]]:
    """Second pass over this run's warmed URLs: those still not served from cache (first 1,000)."""
    assert run.state is not None
    still_cold: list[dict[str, object]] = []

    def collect(result: WarmResult) -> None:
        if result.outcome != "warm" and len(still_cold) < 1000:
            still_cold.append(result.as_dict())

    second = WarmResultStore(run.state, run_id=run.run_id, now=run.now, pass_no=2)
    warm_urls(warmed_urls(run.state, run.run_id), options=options, stop=run.stop, store=second, on_result=collect)
    return still_cold


def _sources(
    cfg: Settings, reader: SitemapReader, *, sitemap: list[str], urls_handle: TextIO | None
) -> Iterator[str | SitemapEntry]:
    """URLs from --urls-file, else --sitemap, else SITEMAP_URLS, else robots.txt discovery."""
    if urls_handle is not None:
        yield from _read_urls_file(urls_handle, site_url=cfg.get("SITE_URL") or "")
        return
    sitemaps = list(sitemap) or list(cfg["SITEMAP_URLS"])
    if not sitemaps:
        sitemaps = reader.discover(cfg.require("SITE_URL"))
    yield from reader.iter_entries(sitemaps)


def _open_urls_file(path: str) -> TextIO:
    try:
        return sys.stdin if path == "-" else Path(path).open(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(
            f"--urls-file {path} cannot be read", got=exc.strerror, expected="a readable text file"
        ) from None


def _read_urls_file(handle: TextIO, *, site_url: str) -> Iterator[str]:
    with handle:
        for line in handle:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            if item.startswith("/"):
                if not site_url:
                    raise InputError(
                        f"relative path {item!r} in --urls-file needs SITE_URL",
                        expected="absolute URLs or SITE_URL set",
                    )
                item = urljoin(site_url + "/", item.lstrip("/"))
            yield item


def _print_dry_run(planned: Iterator[str], *, dropped: DroppedUrls, json_out: bool) -> int:
    count = 0
    if json_out:
        sys.stdout.write('{"dry_run": true, "would_request": [')
    for url in planned:
        if json_out:
            sys.stdout.write(("," if count else "") + _cli.json_text(url))
        else:
            _cli.out(f"[dry-run] GET {url}")
        count += 1
    if json_out:  # the drops are known once the listing is done
        sys.stdout.write(f'], "count": {count}, "dropped": {_cli.json_text(dropped.as_dict())}}}\n')
    if not json_out:  # asked for explicitly, so shown under cron too
        _cli.say(f"[dry-run] {count} URLs would be requested; nothing was requested.")
    return count


def _check_something_planned(planned: int, dropped: DroppedUrls, allowed_hosts: tuple[str, ...]) -> None:
    """URLs were listed but every one was dropped: a host or path misconfiguration, not a quiet success."""
    if planned == 0 and dropped.total:
        raise InputError(
            "no URL was warmed: every URL listed was skipped",
            got=dropped.summary(),
            expected=f"URLs on ALLOWED_HOSTS ({', '.join(allowed_hosts) or 'empty: set SITE_URL'}) outside BYPASS_PATHS",
        )


def _finish_sources(reader: SitemapReader, used: int, run: JobRun) -> list[str]:
    """Report sitemap problems; when nothing at all could be read, the first problem is the error."""
    problems = reader.report.problems
    for problem in problems:
        run.log("sitemap-problem", error=problem.message)
    if problems and used == 0 and reader.report.urls_seen == 0:
        raise problems[0]
    return [p.message for p in problems]


def _report(
    summary: WarmSummary,
    *,
    dropped: DroppedUrls,
    problems: list[str],
    still_cold: list[dict[str, object]] | None,
    json_out: bool,
    threshold: float,
    table: bool,
) -> None:
    failed = [r.as_dict() for r in summary.failures]
    if json_out:
        _cli.print_json(
            {
                "summary": {
                    "requested": summary.requested,
                    "outcomes": dict(summary.outcomes),
                    "cache_status": dict(summary.cache_statuses),
                    "data_centres": dict(summary.data_centres),
                    "failure_rate": round(summary.failure_rate, 4),
                    "interrupted": summary.interrupted,
                },
                "failures": failed,
                "slowest": [r.as_dict() for r in summary.slowest],
                "sitemap_problems": problems,
                "dropped": dropped.as_dict(),
                "still_not_cached": still_cold,
            }
        )
    elif table:
        rows = [(status, count) for status, count in summary.cache_statuses.most_common()]
        _cli.out(_cli.table(rows, ["cf-cache-status", "URLs"]))
        _cli.out("")
        _cli.out(_cli.table(summary.data_centres.most_common(), ["data centre (cf-ray)", "responses"]))
        _cli.out("")
        _cli.out(
            _cli.table(
                [(k, v) for k, v in summary.outcomes.most_common()]
                + [(f"dropped: {REASONS[k]}", v) for k, v in dropped.counts.items()],
                ["outcome", "URLs"],
            )
        )
        _cli.out("")
        _cli.out(
            _cli.table(
                [(f"{r.elapsed_ms:.0f} ms", r.cache_status or "-", r.url) for r in summary.slowest[:5]],
                ["elapsed", "status", "slowest URLs"],
            )
        )
    if still_cold is not None and not json_out:  # asked for explicitly, so shown under cron too
        _cli.out(("\n" if table else "") + f"--verify: {len(still_cold)} URLs still not served from cache")
        for item in still_cold[:20]:
            _cli.out(f"  {item['cache_status'] or '(no cf-cache-status)'}  {item['url']}")
    if not json_out and (failed or problems):
        for item in failed[:20]:
            _cli.say(f"failed: {item['url']}: {item['error'] or item['outcome']}")
        for message in problems[:20]:
            _cli.say(f"sitemap problem: {message}")
        if summary.failure_rate > threshold:
            _cli.say(
                f"{summary.outcomes['failed'] + summary.outcomes['challenge']} of {summary.requested} URLs failed "
                f"({summary.failure_rate:.1%} > {threshold:.1%}). Safe to rerun."
            )


if __name__ == "__main__":
    _cli.main(app)
