"""The config table: every key in `KEYS` (name, default, parser, help) and the parsers it uses.

`.env.example` and the README's table are generated from it (`make docs`), so the documentation
cannot drift from the code. Reading the environment and `.env` with it is `config.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .db import is_postgres_url
from .redact import register_secret
from .sources import FORMATS

# --- parsers: text -> value, raising ValueError(expected) on bad input -------------------------


def _int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        expected = f"a whole number ≥ {lo}" + (f" and ≤ {hi}" if hi is not None else "")
        if not re.fullmatch(r"[+-]?\d+", text.strip()):
            raise ValueError(expected)
        value = int(text)
        if value < lo or (hi is not None and value > hi):
            raise ValueError(expected)
        return value

    return parse


def _float(lo: float, hi: float | None = None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        expected = f"a number ≥ {lo:g}" + (f" and ≤ {hi:g}" if hi is not None else "")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(expected) from None
        if value != value or value < lo or (hi is not None and value > hi):
            raise ValueError(expected)
        return value

    return parse


def parse_site_url(text: str) -> str:
    expected = "an absolute http(s) URL such as https://www.example.com"
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(expected)
    return text.strip().rstrip("/")


def _url_list(text: str) -> tuple[str, ...]:
    return tuple(parse_site_url(item) for item in _split(text))


def _hosts(text: str) -> tuple[str, ...]:
    hosts = []
    for item in _split(text):
        host = item.lower()
        if not re.fullmatch(r"[a-z0-9.-]+(:\d+)?|\[[0-9a-f:]+\](:\d+)?", host) or "/" in host:
            raise ValueError("host names separated by commas, such as www.example.com,example.com")
        hosts.append(host.split(":")[0] if not host.startswith("[") else host.split("]")[0] + "]")
    return tuple(hosts)


def _paths(text: str) -> tuple[str, ...]:
    paths = _split(text)
    for path in paths:
        if not path.startswith("/"):
            raise ValueError("path prefixes starting with '/', separated by commas, such as /admin,/cart")
    return tuple(paths)


def _names(text: str) -> tuple[str, ...]:
    return tuple(_split(text))


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return value

    return parse


def _zone_name(text: str) -> str:
    name = text.strip()
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone name such as UTC or Europe/Berlin, or empty") from None
    return name


def _zone_id(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", text.strip()):
        raise ValueError("32 hex characters (the zone ID from the dashboard's Overview page, not the domain)")
    return text.strip()


def _path(text: str) -> str:
    return text.strip()


def _state_db(text: str) -> str:
    value = text.strip()
    if value and not is_postgres_url(value):
        raise ValueError("empty (STATE_DIR/state.db) or " + POSTGRES_URL_EXPECTED)
    return hide_password(value)


def _content_db(text: str) -> str:
    value = text.strip()
    return hide_password(value) if is_postgres_url(value) else value


_URL_PASSWORDS = (re.compile(r"://[^:/@?#]*:([^@/?#]*)@"), re.compile(r"(?i)[?&]password=([^&#]*)"))
POSTGRES_URL_EXPECTED = "a postgresql://user@host:5432/dbname URL (options as libpq takes them, e.g. ?sslmode=require)"


def hide_password(url: str) -> str:
    """A PostgreSQL URL's password is registered as a secret first (`redact` hides it wherever it turns
    up, a refused URL's error too), then the URL is checked the way libpq will read it: a typo is a
    config error here, not "server unreachable, retry" at connect time."""
    if not is_postgres_url(url):
        return url
    for pattern in _URL_PASSWORDS:
        for match in pattern.finditer(url):
            register_secret(match.group(1))
            register_secret(unquote(match.group(1)))
    from psycopg import Error as DriverError  # only when a PostgreSQL URL is set
    from psycopg.conninfo import conninfo_to_dict

    try:
        urlsplit(url).port  # noqa: B018 - urlsplit checks the port's range only when asked
        conninfo_to_dict(url)
    except (ValueError, DriverError):
        raise ValueError(POSTGRES_URL_EXPECTED) from None
    return url


def _node_name(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", value):
        raise ValueError("letters, digits, '.', '_' or '-' (at most 63), such as web-1; empty: the host name")
    return value


def _text(text: str) -> str:
    return text.strip()


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _ping_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("an http(s) base URL such as https://hc-ping.com/<ping-key>")
    return text.strip().rstrip("/")


def _check_map(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _split(text):
        job, eq, check = (part.strip() for part in item.partition("="))
        if not eq or not re.fullmatch(r"[a-z][a-z-]*", job) or not re.fullmatch(r"[A-Za-z0-9_.-]+", check):
            raise ValueError("job=slug-or-uuid pairs separated by commas, such as warm=3f1c…,import=nightly-import")
        pairs.append((job, check))
    return tuple(pairs)


@dataclass(frozen=True)
class Key:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    section: str = "general"
    secret: bool = False


KEYS: tuple[Key, ...] = (
    Key("SITE_URL", "", parse_site_url, "Canonical site URL; robots.txt and /sitemap.xml are found under it."),
    Key("ALLOWED_HOSTS", "", _hosts, "Hosts that may be fetched or purged (default: SITE_URL's host)."),
    Key("SITEMAP_URLS", "", _url_list, "Sitemaps to warm, comma-separated (default: discovered from robots.txt)."),
    Key("STATE_DIR", "", _path, "Where state.db, logs and backups live (default ~/.local/state/edgecron)."),
    Key("LOCK_DIR", "", _path, "Where <job>.lock files live (default STATE_DIR/locks)."),
    Key(
        "STATE_DB",
        "",
        _state_db,
        "Empty: STATE_DIR/state.db (SQLite, one VPS). A postgresql://user@host/db URL puts runs, outbox, "
        "log cursors and the job locks in PostgreSQL, shared by every node (notes/scaling.md).",
    ),
    Key("STATE_DB_FILE", "", _path, "A file holding the STATE_DB URL (keeps its password out of .env)."),
    Key(
        "NODE_NAME",
        "",
        _node_name,
        "This node's name in runs, locks and log findings (default: the host name); unique per node.",
    ),
    Key("METRICS_DIR", "", _path, "node_exporter textfile directory; empty disables metrics."),
    Key(
        "HEALTHCHECKS_URL",
        "",
        _ping_url,
        "Healthchecks base URL: https://hc-ping.com/<ping-key> (checks are the job names) or "
        "https://hc-ping.com with HEALTHCHECKS_CHECKS; empty disables pings.",
        "monitoring",
    ),
    Key(
        "HEALTHCHECKS_CHECKS",
        "",
        _check_map,
        "Per-job check slug or UUID, e.g. warm=<uuid>,import=<uuid> (default: the job name as slug).",
        "monitoring",
    ),
    Key("WARM_CONCURRENCY", "8", _int(1, 256), "Parallel warm requests.", "warm"),
    Key("WARM_RATE", "20", _float(0), "Warm requests per second across all workers (0 = unlimited).", "warm"),
    Key("WARM_TIMEOUT", "30", _float(0.1, 600), "Seconds a warm response or sitemap may take in all.", "warm"),
    Key("WARM_MAX_FAILURE_RATE", "0.05", _float(0, 1), "Exit 1 when more than this share of URLs failed.", "warm"),
    Key("WARM_MAX_BYTES", "33554432", _int(1024), "Bytes of a page read at most; more is counted truncated.", "warm"),
    Key(
        "BYPASS_PATHS",
        "/admin,/login,/logout,/account,/cart,/checkout,/wp-admin,/wp-login.php",
        _paths,
        "Path prefixes never warmed (logged-in or personal pages).",
        "warm",
    ),
    Key(
        "LOGIN_COOKIES",
        "sessionid,wordpress_logged_in_",
        _names,
        "Cookie names that mark a logged-in visitor (cache must bypass).",
        "warm",
    ),
    Key(
        "SITEMAP_MAX_BYTES",
        "52428800",
        _int(1024),
        "Cap on one sitemap's decompressed size (protocol limit 50 MiB).",
        "warm",
    ),
    Key("SITEMAP_MAX_DEPTH", "5", _int(0, 20), "How deep sitemap indexes may nest.", "warm"),
    Key("SITEMAP_MAX_URLS", "50000", _int(1), "URLs accepted from one sitemap file (protocol limit 50,000).", "warm"),
    Key("CF_API_TOKEN", "", _text, "Cloudflare API token with Zone → Cache Purge → Purge.", "cloudflare", secret=True),
    Key(
        "CF_API_TOKEN_FILE",
        "",
        _path,
        "File holding the token instead of CF_API_TOKEN (e.g. a systemd credential).",
        "cloudflare",
    ),
    Key("CF_ZONE_ID", "", _zone_id, "The zone ID (32 hex characters).", "cloudflare"),
    Key(
        "CF_API_URL",
        "https://api.cloudflare.com/client/v4",
        parse_site_url,
        "Cloudflare API base URL (the demo points it at the local emulator).",
        "cloudflare",
    ),
    Key(
        "CF_PLAN",
        "free",
        _choice("free", "pro", "business", "enterprise"),
        "Plan, for purge rate limits.",
        "cloudflare",
    ),
    Key(
        "CF_PURGE_BATCH",
        "30",
        _int(1, 500),
        "Items per purge request (halved automatically when Cloudflare says too many).",
        "cloudflare",
    ),
    Key(
        "ACCESS_LOGS",
        "/var/log/nginx/access.log",
        _names,
        "nginx access logs to check: paths or globs, comma-separated.",
        "logs",
    ),
    Key(
        "LOG_FORMAT",
        "combined",
        _text,
        "nginx log_format as in nginx.conf: a preset (combined, edgecron), the format string, or the whole "
        "log_format directive pasted as is (in .env it may span lines; it ends at its ';').",
        "logs",
    ),
    Key(
        "LOG_ESCAPE",
        "",
        _choice("default", "json", "none"),
        "How nginx escaped the values of a bare LOG_FORMAT string: default, json (log_format … escape=json) "
        "or none; a pasted directive says it itself.",
        "logs",
    ),
    Key(
        "LOG_MAX_LINE_BYTES",
        "65536",
        _int(1024, 16 << 20),
        "Access-log lines longer than this are counted as malformed, not parsed.",
        "logs",
    ),
    Key("CHECK_5XX_RATE", "0.01", _float(0, 1), "Breach when 5xx responses exceed this share.", "logs"),
    Key("CHECK_P95_SECONDS", "1.0", _float(0), "Breach when p95 of $request_time exceeds this.", "logs"),
    Key("CHECK_MIN_REQUESTS", "50", _int(0), "Rates are judged only over at least this many requests.", "logs"),
    Key(
        "CHECK_STATIC_ORIGIN_HITS",
        "100",
        _int(0),
        "Breach when one static URL reaches the origin more often than this.",
        "logs",
    ),
    Key(
        "LOG_MAP_VARS",
        "logged_in,sets_cookie",
        _names,
        "Variables your nginx.conf sets with map/set that LOG_FORMAT may use.",
        "logs",
    ),
    Key("CHECK_LOCK_MAX_SECONDS", "3600", _int(1), "Breach when a job has held its lock longer than this.", "logs"),
    Key("CHECK_OUTBOX_MAX_ATTEMPTS", "3", _int(1), "Breach when a purge outbox item failed this many times.", "logs"),
    Key("CHECK_DEPLOY_WINDOW_MINUTES", "60", _int(1), "Minutes compared before and after the last deploy.", "logs"),
    Key(
        "IMPORT_SOURCE",
        "",
        _text,
        "Feed to import: an http(s) URL (JSON API, WordPress REST, RSS, Atom, JSON Feed) or a file path"
        " (.jsonl, .csv, or one saved document: .json, .xml, .rss, .atom).",
        "import",
    ),
    Key(
        "IMPORT_AUTH_HEADER",
        "",
        _text,
        "Header the feed API needs, e.g. 'Authorization: Bearer …'; sent only to IMPORT_SOURCE's host, never stored.",
        "import",
        secret=True,
    ),
    Key("IMPORT_AUTH_FILE", "", _path, "File holding IMPORT_AUTH_HEADER's line instead (e.g. a credential).", "import"),
    Key("IMPORT_FIELD_MAP", "", _text, "Source field names, e.g. id=guid,updated_at=modified.", "import"),
    Key(
        "IMPORT_FORMAT",
        "auto",
        _choice(*FORMATS),
        "How IMPORT_SOURCE is read: auto (from Content-Type and first bytes; a file also by extension), json, jsonl,"
        " csv, wordpress, rss, atom or jsonfeed; field rules per format in `import_stale.py run --help`.",
        "import",
    ),
    Key(
        "IMPORT_NAIVE_TIMEZONE",
        "",
        _zone_name,
        "Time zone of feed timestamps without an offset, e.g. UTC or Europe/Berlin; empty: such items are rejected.",
        "import",
    ),
    Key(
        "CONTENT_DB",
        "",
        _content_db,
        "Content store: a SQLite file (default STATE_DIR/content.db) or a postgresql:// URL.",
        "import",
    ),
    Key("CONTENT_DB_FILE", "", _path, "A file holding the CONTENT_DB URL (keeps its password out of .env).", "import"),
    Key(
        "IMPORT_BATCH", "500", _int(1, 100000), "Items per transaction (rows and checkpoint commit together).", "import"
    ),
    Key(
        "IMPORT_MAX_BODY_BYTES",
        "1048576",
        _int(1),
        "Largest item body (UTF-8 bytes) accepted; bigger items are rejected.",
        "import",
    ),
    Key(
        "IMPORT_MAX_PAGE_BYTES",
        "33554432",
        _int(1024),
        "Largest feed page or API response accepted, decompressed.",
        "import",
    ),
    Key("IMPORT_TIMEOUT", "30", _float(0.1, 600), "Seconds each feed page may take in all (not per read).", "import"),
    Key(
        "IMPORT_OVERLAP", "300", _int(0), "Seconds behind the cursor re-read every run, for late timestamps.", "import"
    ),
    Key(
        "IMPORT_MAX_REJECT_RATE",
        "0.05",
        _float(0, 1),
        "Stop (exit 2) when more than this share of items is rejected.",
        "import",
    ),
    Key(
        "IMPORT_SINCE_PARAM",
        "",
        _text,
        "Query parameter the feed API filters on (e.g. updated_since); empty: read all.",
        "import",
    ),
    Key("BACKUP_KEEP", "7", _int(1, 1000), "Content-store backups kept in STATE_DIR/backups.", "import"),
    Key("SCHEDULE_TIMEZONE", "UTC", _text, "Time zone for schedules.", "schedule"),
    Key(
        "RETAIN_WARM_RUNS",
        "3",
        _int(1, 1000),
        "Warm runs whose per-URL results are kept (each URL's latest status is kept apart).",
        "retention",
    ),
    Key(
        "RETAIN_RUNS_DAYS",
        "30",
        _int(1),
        "Days of run records, log-check slots and deploy records kept (each job's latest run always); an"
        " event log older than this starts a new file.",
        "retention",
    ),
    Key("RETAIN_OUTBOX_DAYS", "7", _int(1), "Days sent purges are kept; pending ones are never dropped.", "retention"),
    Key(
        "RETAIN_VERSIONS_DAYS",
        "30",
        _int(1),
        "Days an import run stays rollback-able: older content versions and rejects are dropped.",
        "retention",
    ),
    Key(
        "EVENT_LOG_MAX_MB",
        "8",
        _int(1, 10000),
        "Size of STATE_DIR/logs/<job>.jsonl before it moves to <job>.jsonl.1 (one old copy is kept).",
        "retention",
    ),
)

KEY_NAMES = frozenset(k.name for k in KEYS)


def render_env_example() -> str:
    """The text of `.env.example`: every key with its help and default."""
    lines = [
        "# edgecron settings. Copy to .env and edit; the environment wins over this file.",
        "# Generated from lib/edgecron/configtable.py (KEYS); a test keeps the two equal.",
    ]
    section = None
    for key in KEYS:
        if key.section != section:
            section = key.section
            lines += ["", f"# --- {section} ---"]
        lines.append(f"# {key.help}")
        lines.append(f"{key.name}={key.default}")
    lines += [
        "",
        "# --- schedule overrides (cron syntax, 5 fields); defaults are in lib/edgecron/schedule.py ---",
        "# SCHEDULE_WARM=*/30 * * * *",
        "",
    ]
    return "\n".join(lines)


def render_config_table() -> str:
    """The README's config table (Markdown), generated from KEYS."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in KEYS:
        default = f"`{key.default}`" if key.default else ""
        rows.append(f"| `{key.name}` | {default} | {key.help} |")
    rows.append("| `SCHEDULE_<JOB>` | see `jobs.py crontab` | Cron expression overriding a job's schedule. |")
    return "\n".join(rows)
