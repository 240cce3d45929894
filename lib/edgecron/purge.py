"""What to purge and sending it: input validation, deploy manifests, sitemap changes, the send loop.

Every purge becomes a `PurgePlan` (kind → values, plus what was rejected and why). Committing a
plan enqueues its items in the outbox in the same transaction as its record (a deploy, the
sitemap lastmod memory), so a crash never leaves a deploy recorded without its purges.
`send_outbox` then claims batches, sends them with the Cloudflare client and marks each one.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from .cloudflare import CloudflareClient, PurgeRejected, WaitInterrupted, interruptible_sleep
from .config import Settings
from .db import Database
from .errors import EdgecronError, InputError, LockHeld
from .lock import job_lock
from .outbox import OutboxItem, PurgeOutbox
from .state import StateDB, iso, read_only_connection
from .urls import UrlPolicy, UrlRefused

WILDCARD_HINT = "Cloudflare purges exact URLs; use `purge_cache.py prefixes` for a whole path."
MAX_PREFIX_SEPARATORS = 31
MAX_TAG_CHARS = 1024


# The state a plan is made from: the purge job's connection, a read-only one for a dry run, or None
# (no state database yet). Scripts pass it through without knowing it is SQLite.
StateView = Database | None


@dataclass(frozen=True)
class Rejected:
    value: str
    reason: str


@dataclass
class PurgePlan:
    """Values to enqueue per kind, what was refused, and extra writes committed with them."""

    source: str
    items: dict[str, list[str]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    record: Callable[[Database, datetime, str], None] | None = None
    no_warm: set[str] = field(default_factory=set)  # purged but not to be warmed (removed pages)

    def commit(self, state: StateDB, *, now: datetime, run_id: str) -> int:
        """Enqueue every item (and write the record) in one transaction; return newly queued."""
        added = 0
        with state.transaction() as conn:
            for kind, values in self.items.items():
                added += PurgeOutbox.enqueue_in(conn, kind, values, source=self.source, now=now)
            if self.record is not None:
                self.record(conn, now, run_id)
        return added


# --- validation ------------------------------------------------------------------------------


def clean_lines(values: Iterable[str]) -> list[str]:
    """Strip, drop blanks and `#` comments, de-duplicate keeping order."""
    seen: dict[str, None] = {}
    for raw in values:
        value = raw.strip()
        if value and not value.startswith("#"):
            seen.setdefault(value, None)
    return list(seen)


def plan_request(kind: str, values: Iterable[str], *, site_url: str, allowed_hosts: Iterable[str]) -> PurgePlan:
    """Validate user-given URLs/tags/prefixes/hosts; bad ones are rejected with a reason."""
    policy = UrlPolicy(allowed_hosts)
    cleaned = clean_lines(values)
    if not cleaned:
        raise InputError(
            f"no {kind}s to purge were given",
            expected=f"at least one {kind} (arguments, --file PATH, or - for stdin)",
        )
    check = {"url": _url, "tag": _tag, "prefix": _prefix, "host": _host}[kind]
    plan = PurgePlan(source="manual")
    good: dict[str, None] = {}
    for value in cleaned:
        try:
            good.setdefault(check(value, site_url=site_url, policy=policy), None)
        except ValueError as exc:
            plan.rejected.append(Rejected(value, str(exc)))
    plan.items[kind] = list(good)
    return plan


def absolute_url(value: str, *, site_url: str, policy: UrlPolicy) -> str:
    """The URL policy's normalised form (host lower-cased, fragment dropped: it never reaches the
    cache key), so a purge names the URL that a warm request would fetch."""
    if "*" in value:
        raise ValueError("'*' is not allowed in a URL. " + WILDCARD_HINT)
    if value.startswith("/") and not value.startswith("//"):
        if not site_url:
            raise ValueError("a path needs SITE_URL set to become an absolute URL")
        value = urljoin(site_url + "/", value)
    try:
        return policy.check(value)
    except UrlRefused as refused:
        if refused.reason == "not-http":
            raise ValueError("expected an absolute http(s) URL or a path starting with '/'") from None
        raise ValueError(str(refused)) from None


def _url(value: str, *, site_url: str, policy: UrlPolicy) -> str:
    return absolute_url(value, site_url=site_url, policy=policy)


def _tag(value: str, *, site_url: str, policy: UrlPolicy) -> str:
    if len(value) > MAX_TAG_CHARS:
        raise ValueError(f"a cache tag is at most {MAX_TAG_CHARS} characters")
    if not value.isascii() or not value.isprintable() or " " in value or "," in value:
        raise ValueError("a cache tag is printable ASCII without spaces or commas")
    return value


def _prefix(value: str, *, site_url: str, policy: UrlPolicy) -> str:
    if "*" in value:
        raise ValueError("'*' is not allowed: a prefix already covers everything below it")
    if value.startswith("/"):
        if not site_url:
            raise ValueError("a path needs SITE_URL set to know its host")
        value = (urlsplit(site_url).hostname or "") + value
    elif "://" in value:
        value = value.split("://", 1)[1]  # Cloudflare refuses a scheme in a prefix
    if "?" in value or "#" in value:
        raise ValueError("a prefix has no query string or fragment")
    if value.count("/") > MAX_PREFIX_SEPARATORS:
        raise ValueError(f"a prefix has at most {MAX_PREFIX_SEPARATORS} '/' separators")
    try:
        checked = policy.check("https://" + value)
    except UrlRefused as refused:
        raise ValueError(str(refused)) from None
    host_and_path = checked.removeprefix("https://")
    return host_and_path if "/" in value else host_and_path.rstrip("/")


def _host(value: str, *, site_url: str, policy: UrlPolicy) -> str:
    host = value.lower().rstrip(".")
    if "*" in host:
        raise ValueError("'*' is not allowed in a host name")
    try:
        policy.check(f"https://{host}/")
    except UrlRefused as refused:
        raise ValueError(str(refused)) from None
    return host


# --- deploy manifests ------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    urls: dict[str, str]  # absolute URL -> content hash
    ref: str | None = None


def parse_manifest(text: str, *, source: str, site_url: str, allowed_hosts: Iterable[str]) -> Manifest:
    """JSON `{"ref": …, "urls": {url-or-path: hash}}` or sha256sum-style `HASH  PATH` lines.

    Any bad entry refuses the whole manifest (naming the key or line): a half-read manifest
    would purge too little and record a wrong baseline.
    """
    policy = UrlPolicy(allowed_hosts)
    if text.lstrip().startswith("{"):
        return _parse_json_manifest(text, source=source, site_url=site_url, policy=policy)
    urls: dict[str, str] = {}
    ref = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("# ref:"):
            ref = line.split(":", 1)[1].strip() or None
        if not line or line.startswith("#"):
            continue
        digest, _, path = line.partition(" ")
        path = path.strip().lstrip("*")  # sha256sum marks binary mode with '*'
        if not digest or not path:
            raise _manifest_error(source, f"line {number}", line, "'HASH  PATH' (sha256sum output)")
        urls[_manifest_url(path, source=source, where=f"line {number}", site_url=site_url, policy=policy)] = digest
    if not urls:
        raise _manifest_error(source, "the file", "no entries", "at least one 'HASH  PATH' line")
    return Manifest(urls=urls, ref=ref)


def _parse_json_manifest(text: str, *, source: str, site_url: str, policy: UrlPolicy) -> Manifest:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        where = f"line {exc.lineno}" if hasattr(exc, "lineno") else "the file"
        raise _manifest_error(source, where, str(exc), "valid JSON") from None
    unknown = set(doc) - {"version", "ref", "urls"}
    if unknown:
        raise _manifest_error(source, f"key {sorted(unknown)[0]!r}", "unknown key", "version, ref, urls")
    if doc.get("version", 1) != 1:
        raise _manifest_error(source, "key 'version'", doc.get("version"), "1")
    ref = doc.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise _manifest_error(source, "key 'ref'", ref, "a string (commit id or release name)")
    entries = doc.get("urls")
    if not isinstance(entries, dict) or not entries:
        raise _manifest_error(source, "key 'urls'", type(entries).__name__, "a non-empty object")
    urls: dict[str, str] = {}
    for key, digest in entries.items():
        where = f"key 'urls.{key}'"
        if not isinstance(digest, str) or not digest.strip():
            raise _manifest_error(source, where, digest, "a non-empty content hash string")
        urls[_manifest_url(key, source=source, where=where, site_url=site_url, policy=policy)] = digest.strip()
    return Manifest(urls=urls, ref=ref)


def _manifest_url(path: str, *, source: str, where: str, site_url: str, policy: UrlPolicy) -> str:
    """A URL, an absolute path, or a build-dir file path (`./blog/index.html` → `/blog/`)."""
    if "://" not in path and not path.startswith("/"):
        path = "/" + path.removeprefix("./")
    if "://" not in path and path.endswith("/index.html"):
        path = path[: -len("index.html")]
    try:
        return absolute_url(path, site_url=site_url, policy=policy)
    except ValueError as exc:
        raise _manifest_error(source, where, path, str(exc)) from None


def _manifest_error(source: str, where: str, got: object, expected: str) -> InputError:
    return InputError(
        f"deploy manifest {source} is malformed at {where}",
        got=got,
        expected=expected,
        hint="Nothing was recorded or purged; fix the manifest (see notes/deploy-manifest.md).",
    )


@dataclass(frozen=True)
class ManifestDiff:
    changed: list[str]
    added: list[str]
    removed: list[str]
    baseline: bool  # a previous deploy existed to compare with

    @property
    def to_purge(self) -> list[str]:
        return self.changed + self.added + self.removed


def last_manifest(conn: Database | None) -> dict[str, str] | None:
    if conn is None:
        return None
    row = conn.execute("SELECT manifest FROM deploys ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(row[0]) if row else None


def diff_manifests(previous: dict[str, str] | None, current: dict[str, str]) -> ManifestDiff:
    """Changed hashes, new URLs (a cached 404 may wait there) and removed URLs are purged."""
    if previous is None:
        return ManifestDiff(changed=[], added=sorted(current), removed=[], baseline=False)
    changed = sorted(u for u, h in current.items() if u in previous and previous[u] != h)
    added = sorted(u for u in current if u not in previous)
    removed = sorted(u for u in previous if u not in current)
    return ManifestDiff(changed=changed, added=added, removed=removed, baseline=True)


def plan_deploy(manifest: Manifest, previous: dict[str, str] | None, *, ref: str, record_only: bool) -> PurgePlan:
    diff = diff_manifests(previous, manifest.urls)
    urls = [] if record_only else diff.to_purge
    plan = PurgePlan(source=f"deploy:{ref}", items={"url": urls} if urls else {})
    plan.notes = {
        "ref": ref,
        "baseline": diff.baseline,
        "changed": len(diff.changed),
        "added": len(diff.added),
        "removed": len(diff.removed),
        "record_only": record_only,
    }

    def record(conn: Database, now: datetime, run_id: str) -> None:
        conn.execute(
            "INSERT INTO deploys(ref, deployed_at, manifest, changed, removed, run_id) VALUES (?,?,?,?,?,?)",
            (
                ref,
                iso(now),
                json.dumps(manifest.urls, sort_keys=True),
                len(diff.changed) + len(diff.added),
                len(diff.removed),
                run_id,
            ),
        )

    plan.record = record
    plan.no_warm = set(diff.removed)  # warming a removed page would cache its 404
    return plan


# --- sitemap <lastmod> changes ---------------------------------------------------------------


def normalize_lastmod(value: str) -> str:
    """W3C datetimes compared as instants, so '2026-01-01' and '…T00:00:00Z' differ only if moved."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.isoformat()


def plan_changed(conn: Database | None, entries: Iterable[Any]) -> PurgePlan:
    """URLs whose sitemap <lastmod> moved since the last run; the first run only remembers.

    URLs new since a previous run count as changed (a cached 404 may sit there).
    """
    known: dict[str, str] = {}
    if conn is not None:
        known = dict(conn.execute("SELECT url, lastmod FROM sitemap_lastmod").fetchall())
    baseline = bool(known)
    current: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for entry in entries:
        if not entry.lastmod:
            counts["no-lastmod"] += 1
            continue
        current[entry.url] = normalize_lastmod(entry.lastmod)
    moved = [u for u, m in current.items() if u in known and known[u] != m]
    new = [u for u in current if u not in known] if baseline else []
    plan = PurgePlan(source="sitemap-lastmod", items={"url": moved + new} if moved or new else {})
    plan.notes = {
        "baseline": baseline,
        "moved": len(moved),
        "new": len(new),
        "seen": len(current),
        "no_lastmod": counts["no-lastmod"],
    }

    def record(db: Database, now: datetime, run_id: str) -> None:
        db.executemany(
            "INSERT INTO sitemap_lastmod(url, lastmod, seen_at) VALUES (?,?,?) "
            "ON CONFLICT(url) DO UPDATE SET lastmod=excluded.lastmod, seen_at=excluded.seen_at",
            [(url, mod, iso(now)) for url, mod in current.items()],
        )

    plan.record = record
    return plan


# --- reading state without changing it (dry runs) --------------------------------------------


def read_only(location: Path | str) -> Database | None:
    """The state database (a settings' `state_db`) opened read-only, or None when it does not exist yet."""
    return read_only_connection(location)


def cached_pages_estimate(conn: Database | None) -> int | None:
    """Pages the last warm run fetched: what a purge-everything sends back to the origin."""
    if conn is None:
        return None
    row = conn.execute(
        "SELECT count(DISTINCT url) FROM warm_results WHERE run_id = (SELECT run_id FROM runs "
        "WHERE job='warm' AND status IN ('ok','problems') ORDER BY started_at DESC LIMIT 1)"
    ).fetchone()
    return int(row[0]) if row and row[0] else None


def peek_open(conn: Database | None, *, include_held: bool) -> list[tuple[str, str]]:
    """(kind, value) of items a send would pick up, without claiming them."""
    return [(row["kind"], row["value"]) for row in PurgeOutbox.open_rows(conn) if include_held or not row.get("held")]


# --- sending ---------------------------------------------------------------------------------


@dataclass
class SendReport:
    sent: Counter[str] = field(default_factory=Counter)  # kind -> items purged
    sent_urls: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # kind, value, error
    batches: int = 0
    interrupted: bool = False
    error: EdgecronError | None = None  # what stopped the run (auth, API down)


def send_outbox(
    outbox: PurgeOutbox,
    client: CloudflareClient,
    *,
    run_id: str,
    now: Callable[[], datetime],
    stop: threading.Event,
    include_held: bool = False,
) -> SendReport:
    """Send every sendable item, batch by batch; a failure leaves its batch pending."""
    report = SendReport()
    for kind in outbox.sendable_kinds(include_held=include_held):
        while not stop.is_set():
            batch = outbox.claim(kind, client.batch_size(kind), run_id=run_id, now=now(), include_held=include_held)
            if not batch:
                break
            try:
                handle_batch(outbox, client, batch, report=report, now=now)
            except WaitInterrupted:
                report.interrupted = True
                return report
            except EdgecronError as exc:
                report.error = exc
                return report
    report.interrupted = stop.is_set()
    return report


def send_for_another_job(
    outbox: PurgeOutbox,
    settings: Settings,
    *,
    run_id: str,
    now: Callable[[], datetime],
    stop: threading.Event,
    log: Callable[..., None] | None = None,
) -> SendReport | None:
    """Send what the outbox holds from another job's run (`import_stale.py --purge`), under the
    purge job's lock, which the outbox's sender methods require. None when the purge job holds the
    lock: it is sending them."""
    lock = job_lock(settings, "purge")  # fleet-wide too: recover_claimed must not reset a batch in flight elsewhere
    try:
        lock.acquire(now=now())
    except LockHeld:
        return None
    try:
        client = CloudflareClient.from_settings(settings, sleep=interruptible_sleep(stop), log=log)
        outbox.recover_claimed()  # a purge run killed mid-send left its batch 'sending'
        return send_outbox(outbox, client, run_id=run_id, now=now, stop=stop)
    finally:
        lock.release()


def handle_batch(
    outbox: PurgeOutbox,
    client: CloudflareClient,
    batch: list[OutboxItem],
    *,
    report: SendReport,
    now: Callable[[], datetime],
) -> None:
    """Send one claimed batch; mark each sub-batch as soon as Cloudflare answers it."""
    kind = batch[0].kind
    by_value = {item.value: item.id for item in batch}
    unsettled = set(by_value.values())
    try:
        for outcome in client.purge(kind, list(by_value)):
            ids = [by_value[value] for value in outcome.values]
            if outcome.ok:
                outbox.mark_done(ids, result_id=outcome.result_id, now=now())
                report.sent[kind] += len(ids)
                if kind == "url":
                    report.sent_urls.extend(outcome.values)
            else:
                error = outcome.error.message if outcome.error else "refused"
                hold = isinstance(outcome.error, PurgeRejected)
                outbox.mark_failed(ids, error=error, now=now(), hold=hold)
                report.failed.extend((kind, value, error) for value in outcome.values)
            report.batches += 1
            unsettled.difference_update(ids)
    except EdgecronError as exc:
        outbox.mark_failed(unsettled, error=exc.message, now=now())
        raise
