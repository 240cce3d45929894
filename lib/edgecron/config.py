"""Settings from the environment and `.env` (environment wins), parsed strictly.

Every key lives in the config table (`configtable.KEYS`: name, default, parser, help), which also
generates `.env.example` and the README's table. A malformed value or an unknown key in `.env` is a
`ConfigError` naming the key, what was expected and what was found. `.env` itself is read by
`envfile.py`; the token and the feed's header become `credentials.py`'s `Secret`s.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .configtable import KEY_NAMES, KEYS, Key, hide_password
from .credentials import AuthHeader, Secret, read_import_auth, read_secret_file, read_token_file
from .db import is_postgres_url, safe_dsn
from .envfile import read_env_file
from .errors import ConfigError

# EDGECRON_* variables that are not settings: the crontab and the scheduler set them.
ENV_MARKERS = frozenset({"EDGECRON_ENV_FILE", "EDGECRON_HOME", "EDGECRON_TRIGGER", "EDGECRON_SLOT"})
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
    def content_db(self) -> Path | str:
        """The content store: a SQLite file, or a PostgreSQL URL (CONTENT_DB or CONTENT_DB_FILE)."""
        raw = self.parsed.get("CONTENT_DB") or ""
        if is_postgres_url(raw):
            return str(raw)
        return self._resolve(raw) if raw else self.state_dir / "content.db"

    @property
    def state_db(self) -> Path | str:
        """The state database: STATE_DIR/state.db, or the PostgreSQL URL of STATE_DB (or STATE_DB_FILE)."""
        url = self.parsed.get("STATE_DB") or ""
        return str(url) if url else self.state_dir / "state.db"

    @property
    def node_name(self) -> str:
        return str(self.parsed.get("NODE_NAME") or "") or socket.gethostname()

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
            k: ("***" if isinstance(v, Secret) and v else safe_dsn(v) if is_postgres_url(v) else v)
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
            raw = read_env_file(env_file)
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
        token = read_token_file(Path(token_file).expanduser())
    if re.search(r"\s", token):  # a pasted line break would be sent, refused and retried as "API down"
        raise ConfigError(
            "CF_API_TOKEN" + ("_FILE holds a token" if token_file else "") + " with whitespace inside",
            expected="the token as one word (Cloudflare tokens have no spaces or line breaks)",
        )
    values["CF_API_TOKEN"] = Secret(token)
    for name in ("STATE_DB", "CONTENT_DB"):
        values[name] = _store_url(name, merged, values)
    values["IMPORT_AUTH_HEADER"] = read_import_auth(merged.get("IMPORT_AUTH_HEADER", ""), values["IMPORT_AUTH_FILE"])
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


def _store_url(key: str, merged: Mapping[str, str], values: Mapping[str, Any]) -> Any:
    """STATE_DB or CONTENT_DB, or the URL held in its `_FILE` key (one of the two, not both)."""
    file = values.get(f"{key}_FILE") or ""
    if not file:
        return values[key]
    if merged.get(key, "").strip():
        raise ConfigError(f"{key} and {key}_FILE are both set", expected="only one of them")
    text = read_secret_file(Path(file).expanduser(), key=f"{key}_FILE", holding="a postgresql:// URL")
    if not is_postgres_url(text):
        raise ConfigError(f"{key}_FILE does not hold a PostgreSQL URL", got=file, expected="postgresql://user@host/db")
    try:
        return hide_password(text)
    except ValueError as exc:
        raise ConfigError(f"{key}_FILE holds a URL libpq cannot read", got=file, expected=str(exc)) from None


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
