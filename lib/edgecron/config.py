"""Settings from the environment and `.env` (environment wins), parsed strictly.

Every key lives in `KEYS` (name, default, parser, help); `.env.example` and the README's table are
generated from it, so the documentation cannot drift from the code. A malformed value or an unknown
key in `.env` is a `ConfigError` naming the key, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from .errors import ConfigError
from .redact import register_secret
from .sources import FORMATS


class Secret:
    """A string that never shows itself in repr, str, logs or JSON.

    Its value is also registered with `redact`, so an upstream that echoes it back (an API error
    quoting the Authorization header) cannot carry it into output, state, logs or pings either.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


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
    Key("CONTENT_DB", "", _path, "Content store (default STATE_DIR/content.db).", "import"),
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
# EDGECRON_* variables that are not settings: the crontab and the scheduler set them.
ENV_MARKERS = frozenset({"EDGECRON_ENV_FILE", "EDGECRON_HOME", "EDGECRON_TRIGGER"})
MONITORING_KEYS = ("HEALTHCHECKS_URL", "HEALTHCHECKS_CHECKS")
SCHEDULE_PREFIX = "SCHEDULE_"


@dataclass(frozen=True)
class Settings(Mapping[str, Any]):
    """Parsed settings (a read-only mapping of key → value). Use `require()` for keys a job needs."""

    parsed: Mapping[str, Any]
    env_file: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    warnings: tuple[str, ...] = ()  # loose permissions on secrets or state: the scripts print them

    def __getitem__(self, name: str) -> Any:
        return self.parsed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parsed)

    def __len__(self) -> int:
        return len(self.parsed)

    def require(self, name: str) -> Any:
        value = self.parsed.get(name)
        if value in (None, "", ()):
            key = next((k for k in KEYS if k.name == name), None)
            raise ConfigError(
                f"{name} is not set",
                expected=key.help.rstrip(".").lower() if key else "a value",
            )
        return value

    @property
    def state_dir(self) -> Path:
        raw = self.parsed.get("STATE_DIR") or ""
        if raw:
            return self._resolve(raw)
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(xdg) / "edgecron"

    @property
    def lock_dir(self) -> Path:
        raw = self.parsed.get("LOCK_DIR") or ""
        return self._resolve(raw) if raw else self.state_dir / "locks"

    @property
    def metrics_dir(self) -> Path | None:
        raw = self.parsed.get("METRICS_DIR") or ""
        return self._resolve(raw) if raw else None

    @property
    def content_db(self) -> Path:
        raw = self.parsed.get("CONTENT_DB") or ""
        return self._resolve(raw) if raw else self.state_dir / "content.db"

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        hosts = tuple(self.parsed.get("ALLOWED_HOSTS") or ())
        site = self.parsed.get("SITE_URL") or ""
        if not hosts and site:
            hosts = (urlsplit(site).hostname or "",)
        return hosts

    @property
    def api_token(self) -> Secret:
        token = self.parsed.get("CF_API_TOKEN")
        return token if isinstance(token, Secret) else Secret("")

    @property
    def import_auth(self) -> AuthHeader | None:
        """The feed's credential header (IMPORT_AUTH_HEADER or IMPORT_AUTH_FILE), or None."""
        header = self.parsed.get("IMPORT_AUTH_HEADER")
        return header if isinstance(header, AuthHeader) else None

    def schedules(self) -> dict[str, str]:
        """SCHEDULE_<JOB> overrides, job names lower-case with '-' for '_'."""
        return {
            name[len(SCHEDULE_PREFIX) :].lower().replace("_", "-"): value
            for name, value in self.parsed.items()
            if name.startswith(SCHEDULE_PREFIX) and name != "SCHEDULE_TIMEZONE"
        }

    def redacted(self) -> dict[str, Any]:
        """All values with secrets masked, for `--json` and logs."""
        return {
            k: ("***" if isinstance(v, Secret) and v else v)
            for k, v in self.parsed.items()
            if not isinstance(v, Secret) or v
        }

    def _resolve(self, raw: str) -> Path:
        path = Path(raw).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> Settings:
    """Read `.env` (if it exists) then the environment, which wins; parse every key strictly."""
    environ = os.environ if environ is None else environ
    file_values: dict[str, str] = {}
    try:
        env_present = env_file is not None and env_file.exists()
    except OSError as exc:  # e.g. the directory is not readable by this user
        raise ConfigError(
            f"{env_file} cannot be read", got=exc.strerror, expected="a .env readable by this user"
        ) from None
    if env_file is not None and env_present:
        try:
            raw = _env_file_values(env_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{env_file} cannot be read", got=exc, expected="a readable UTF-8 KEY=value file"
            ) from exc
        for name, value in raw.items():
            _check_known(name, source=str(env_file))
            file_values[name] = value or ""
    for name in environ:
        if name.startswith("EDGECRON_") and name not in ENV_MARKERS:
            _check_known(name, source="the environment")

    merged: dict[str, str] = {k.name: k.default for k in KEYS}
    merged.update(file_values)
    for name, value in environ.items():
        if name in KEY_NAMES or _is_schedule_key(name):
            merged[name] = value

    values: dict[str, Any] = {}
    for key in KEYS:
        text = merged.get(key.name, "")
        values[key.name] = _parse_one(key, text)
    for name, text in merged.items():
        if _is_schedule_key(name):
            values[name] = text.strip()

    token_file = values.get("CF_API_TOKEN_FILE") or ""
    token = merged.get("CF_API_TOKEN", "").strip()
    if token_file:
        if token:
            raise ConfigError(
                "CF_API_TOKEN and CF_API_TOKEN_FILE are both set",
                expected="only one of them",
            )
        token = _read_token_file(Path(token_file).expanduser())
    if re.search(r"\s", token):  # a pasted line break would be sent, refused and retried as "API down"
        raise ConfigError(
            "CF_API_TOKEN" + ("_FILE holds a token" if token_file else "") + " with whitespace inside",
            expected="the token as one word (Cloudflare tokens have no spaces or line breaks)",
        )
    values["CF_API_TOKEN"] = Secret(token)
    values["IMPORT_AUTH_HEADER"] = _import_auth(merged.get("IMPORT_AUTH_HEADER", ""), values["IMPORT_AUTH_FILE"])
    base_dir = env_file.parent.resolve() if env_file is not None else Path.cwd()
    settings = Settings(parsed=values, env_file=env_file, base_dir=base_dir)
    # Anyone who can write .env can point CF_API_URL elsewhere and receive the token; anyone who can
    # write STATE_DIR or LOCK_DIR can plant links or hold a job's lock forever.
    places = [
        (env_file if env_present else None, "settings with the API token", False),
        (Path(token_file).expanduser() if token_file else None, "CF_API_TOKEN_FILE", False),
        (
            Path(auth_file).expanduser() if (auth_file := values["IMPORT_AUTH_FILE"]) else None,
            "IMPORT_AUTH_FILE",
            False,
        ),
        (settings.state_dir, "STATE_DIR", True),
        (settings.lock_dir, "LOCK_DIR", True),
    ]
    warnings = [
        w for path, kind, is_dir in places if path is not None and (w := _loose_permissions(path, kind, is_dir))
    ]
    return Settings(parsed=values, env_file=env_file, base_dir=base_dir, warnings=tuple(warnings))


_PASTED_DIRECTIVE = re.compile(r"(?:export\s+)?LOG_FORMAT\s*=\s*(log_format\s.*)", re.S)
_ENV_KEY_LINE = re.compile(r"\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=")
_HOW_TO_PASTE = (
    "the log_format directive from nginx.conf pasted as is after LOG_FORMAT=, over as many lines as it "
    "takes, ending with its ';' (LOG_FORMAT=log_format main '$remote_addr …' NEWLINE '… $status';), "
    "or the bare format string on one line"
)


def _env_file_values(env_file: Path) -> dict[str, str | None]:
    """`.env` as python-dotenv reads it, except that LOG_FORMAT may be an nginx `log_format`
    directive pasted as is: unquoted and over several lines, it ends at its `;` (dotenv alone
    would read each further line as an unknown key). Its text is taken raw, no `${…}` expanded."""
    lines = env_file.read_text(encoding="utf-8").splitlines(keepends=True)
    for first, line in enumerate(lines):
        match = _PASTED_DIRECTIVE.fullmatch(line.rstrip("\r\n"))
        if not match:
            continue
        block = [match.group(1)]
        last = first
        while not _directive_ended("\n".join(block)):
            last += 1
            if last == len(lines) or _ENV_KEY_LINE.match(lines[last]):
                raise ConfigError(
                    f"LOG_FORMAT in {env_file} (line {first + 1}) is a log_format directive without its closing ';'",
                    expected=_HOW_TO_PASTE,
                )
            block.append(lines[last].rstrip("\r\n"))
        values = dotenv_values(stream=io.StringIO("".join(lines[:first] + lines[last + 1 :])))
        values["LOG_FORMAT"] = "\n".join(block)
        return dict(values)
    return dict(dotenv_values(env_file))


def _directive_ended(text: str) -> bool:
    """True once `text` has a `;` outside quotes and comments (nginx.conf's rules)."""
    quote, i = "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        elif ch == ";":
            return True
        i += 1
    return False


def _loose_permissions(path: Path, kind: str, is_dir: bool) -> str | None:
    """A warning when others can read a secret or write into our state; an error when everyone can write."""
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        return None  # not there yet: it is created private
    fix = f"chmod {'700' if is_dir else '600'} {path}"
    if mode & 0o002:
        raise ConfigError(
            f"{path} ({kind}) is writable by every user", got=f"mode {mode:04o}", expected=f"a private one: {fix}"
        )
    loose = 0o020 if is_dir else 0o064  # a directory others can write into; a file others can read or write
    if mode & loose:
        who = "writable by its group" if is_dir else "readable or writable by others"
        return f"Warning: {path} ({kind}) is {who} (mode {mode:04o}); fix: {fix}"
    return None


def load_monitoring(*, environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings | None:
    """Only the monitoring keys, read leniently, or None: a config error elsewhere can still be pinged."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    try:
        if env_file is not None and env_file.exists():
            raw.update({k: v or "" for k, v in dotenv_values(env_file).items() if k in MONITORING_KEYS})
    except (OSError, UnicodeDecodeError):
        pass
    raw.update({k: v for k, v in environ.items() if k in MONITORING_KEYS})
    keys = {k.name: k for k in KEYS if k.name in MONITORING_KEYS}
    try:
        parsed = {
            name: keys[name].parse(raw.get(name, "").strip()) if raw.get(name, "").strip() else "" for name in keys
        }
    except ValueError:
        return None
    return Settings(parsed=parsed, env_file=env_file) if parsed["HEALTHCHECKS_URL"] else None


def _is_schedule_key(name: str) -> bool:
    return name.startswith(SCHEDULE_PREFIX) and name != "SCHEDULE_TIMEZONE" and len(name) > len(SCHEDULE_PREFIX)


def _parse_one(key: Key, text: str) -> Any:
    if key.secret:
        return text
    if text.strip() == "":
        if key.default:
            return key.parse(key.default)
        try:
            return key.parse("")  # list-valued keys parse "" as ()
        except ValueError:
            return ""
    try:
        return key.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{key.name} is not valid", got=text, expected=str(exc)) from None


def _check_known(name: str, *, source: str) -> None:
    if name in KEY_NAMES or _is_schedule_key(name):
        return
    if name in ENV_MARKERS:  # they say how a process was started; .env cannot
        raise ConfigError(
            f"{name} in {source} is read from the environment only",
            expected="it in the crontab or the environment, not in the settings file",
        )
    close = difflib.get_close_matches(name, sorted(KEY_NAMES | ENV_MARKERS), n=1)
    raise ConfigError(
        f"{name} in {source} is not a known setting" + (f" (did you mean {close[0]}?)" if close else ""),
        expected="one of the keys listed in .env.example",
    )


@dataclass(frozen=True)
class AuthHeader:
    """`Name: value` for the feed API; the value is a Secret (never shown, redacted everywhere)."""

    name: str
    value: Secret

    def __repr__(self) -> str:
        return f"AuthHeader({self.name!r}, ***)"

    __str__ = __repr__


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def _import_auth(text: str, file: str) -> AuthHeader | None:
    """IMPORT_AUTH_HEADER, or the line in IMPORT_AUTH_FILE; its value never appears in an error."""
    line = text.strip()
    if file:
        if line:
            raise ConfigError("IMPORT_AUTH_HEADER and IMPORT_AUTH_FILE are both set", expected="only one of them")
        line = _read_secret_file(Path(file).expanduser(), key="IMPORT_AUTH_FILE", holding="the header line")
    if not line:
        return None
    name, colon, value = line.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _HEADER_NAME.fullmatch(name) or not value:
        raise ConfigError(
            "IMPORT_AUTH_HEADER is not a header line",
            got=f"{len(line)} characters" + ("" if colon else " without a colon"),  # never the secret itself
            expected="'Name: value', such as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'",
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(
            f"IMPORT_AUTH_HEADER's {name} value holds a control character (a newline?)",
            expected="one line of printable characters",
        )
    return AuthHeader(name, Secret(value))


def _read_token_file(path: Path) -> str:
    return _read_secret_file(path, key="CF_API_TOKEN_FILE", holding="the API token")


def _read_secret_file(path: Path, *, key: str, holding: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key} is not text", got=str(path), expected=f"a UTF-8 file holding {holding}") from None
    except OSError as exc:
        raise ConfigError(
            f"{key} cannot be read",
            got=f"{path} ({exc.strerror})",
            expected=f"a readable file holding {holding}",
        ) from None
    if not token:
        raise ConfigError(f"{key} is empty", got=str(path), expected=f"a file holding {holding}")
    return token


def render_env_example() -> str:
    """The text of `.env.example`: every key with its help and default."""
    lines = [
        "# edgecron settings. Copy to .env and edit; the environment wins over this file.",
        "# Generated from lib/edgecron/config.py (KEYS); a test keeps the two equal.",
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
