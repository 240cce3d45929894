#!/usr/bin/env python3
"""Check the cache rules in notes/cache-rules.toml against the site, and render them as Markdown."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import _cli
import typer
from edgecron.cache_rules import Outcome, load_rules, plan_probes, render_markdown, run_probes
from edgecron.configtable import parse_site_url
from edgecron.errors import ExitCode, InputError, UpstreamUnavailable
from edgecron.http import make_session

app = _cli.new_app(__doc__ or "")
app.info.epilog = _cli.examples(
    "check_cache_rules.py check                     # every example, anonymous and logged in",
    "check_cache_rules.py check --site http://127.0.0.1:8080 --json",
    "check_cache_rules.py render                    # regenerate notes/cache-rules.md",
)
RULES = _cli.ROOT / "notes" / "cache-rules.toml"
PAGE = _cli.ROOT / "notes" / "cache-rules.md"


@app.command(
    epilog=_cli.examples(
        "check_cache_rules.py check                       # against SITE_URL",
        "check_cache_rules.py check --site http://127.0.0.1:8080 --json",
        "check_cache_rules.py check --dry-run             # list the requests it would make",
    )
)
def check(
    rules: Path = typer.Option(RULES, help="The rules file."),
    site: str = typer.Option(None, help="Site to check (default SITE_URL); its host is allowed."),
    timeout: float = typer.Option(15.0, min=0.1, help="Seconds per request."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List the requests; make none."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    summary: bool = typer.Option(False, "--summary", help="Print the summary table even when not on a terminal."),
) -> None:
    """Request every example anonymously and with the login cookie; report each mismatch.

    Exit codes: 0 every answer agrees with its rule, 1 mismatches (or requests that failed),
    2 bad rules file or config, 75 the site could not be reached at all.
    """
    cfg = _cli.settings("cache-rules")
    with _cli.job("cache-rules", cfg, dry_run=dry_run) as run:
        ruleset = load_rules(rules)
        site_url = _site(site, cfg.get("SITE_URL") or "")
        hosts = (*cfg.allowed_hosts, urlsplit(site_url).hostname or "") if site_url else cfg.allowed_hosts
        probes = plan_probes(ruleset, site_url=site_url, allowed_hosts=hosts)
        if dry_run:
            for probe in probes:
                _cli.out(f"[dry-run] GET {probe.url} as {probe.visitor}: expect {probe.expected} ({probe.rule})")
            return
        outcomes = list(
            run_probes(
                probes,
                session=make_session(retries=1),
                login_cookie=ruleset.login_cookie,
                timeout=timeout,
                stop=run.stop.is_set,
            )
        )
        mismatches = [o for o in outcomes if o.mismatch]
        errors = [o for o in outcomes if o.error]
        for o in mismatches + errors:
            run.log("mismatch" if o.mismatch else "request-failed", **o.as_dict())
        run.counts = {"requests": len(outcomes), "mismatches": len(mismatches), "errors": len(errors)}
        if outcomes and len(errors) == len(outcomes):
            raise UpstreamUnavailable(
                f"no example could be requested from {site_url or 'the site'}",
                got=errors[0].error,
                expected="the site answering",
            )
        if mismatches or errors:
            run.exit_code = ExitCode.PROBLEMS
        _report(outcomes, json_out=json_out, table=summary or _cli.is_tty())


@app.command(
    epilog=_cli.examples(
        "check_cache_rules.py render            # rewrite notes/cache-rules.md",
        "check_cache_rules.py render --check    # exit 1 if the page is out of date (CI)",
    )
)
def render(
    rules: Path = typer.Option(RULES, help="The rules file."),
    output: Path = typer.Option(PAGE, help="Where to write the Markdown."),
    check_only: bool = typer.Option(False, "--check", help="Only compare; exit 1 when different."),
) -> None:
    """Write notes/cache-rules.md from the TOML, so the page never drifts from the rules."""
    with _cli.user_errors():
        text = render_markdown(load_rules(rules))
    current = output.read_text(encoding="utf-8") if output.exists() else ""
    if check_only:
        if current != text:
            _cli.say(f"{output} is out of date: run check_cache_rules.py render")
            raise typer.Exit(int(ExitCode.PROBLEMS))
        return
    if current != text:
        output.write_text(text, encoding="utf-8")
        if _cli.is_tty():
            _cli.out(f"wrote {output}")


def _site(option: str | None, configured: str) -> str:
    if option is None:
        return configured
    try:
        return parse_site_url(option)
    except ValueError as exc:
        raise InputError("--site is not a URL", got=option, expected=str(exc)) from None


def _report(outcomes: list[Outcome], *, json_out: bool, table: bool) -> None:
    mismatches = [o for o in outcomes if o.mismatch or o.error]
    for o in mismatches:  # on stderr in every mode, so cron mail says what is wrong
        _cli.say(f"rule {o.probe.rule}: {o.probe.url} as {o.probe.visitor}: {o.mismatch or o.error}")
    if json_out:
        _cli.print_json(
            {
                "summary": {
                    "requests": len(outcomes),
                    "mismatches": sum(1 for o in outcomes if o.mismatch),
                    "errors": sum(1 for o in outcomes if o.error),
                },
                "mismatches": [o.as_dict() for o in mismatches],
                "results": [o.as_dict() for o in outcomes],
            }
        )
        return
    if table:
        rows = [
            (
                o.probe.rule,
                urlsplit(o.probe.url).path or "/",
                o.probe.visitor,
                o.probe.expected,
                o.cache_status or "-",
                o.cache_control or "-",
                "MISMATCH" if o.mismatch or o.error else "ok",
            )
            for o in outcomes
        ]
        _cli.out(
            _cli.table(rows, ["rule", "path", "visitor", "expected", "cf-cache-status", "cache-control", "result"])
        )
        _cli.out(f"\n{len(outcomes)} requests, {len(mismatches)} mismatches")


if __name__ == "__main__":
    _cli.main(app)
