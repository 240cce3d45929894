"""Cache rules as code: `notes/cache-rules.toml` → checks against the live site, and the Markdown.

Each rule has a name, an owner, what it matches, the expected result, a rollback note, and
example URLs that should be cached and that should bypass. Every example is requested
anonymously and then with a login cookie (in that order, so a rule that wrongly caches logged-in
pages shows up as a HIT), and each answer is judged by its `cf-cache-status` and `Cache-Control`:

- expected cached: a BYPASS or DYNAMIC status, or `Cache-Control: private/no-store`, is a mismatch;
- expected bypass: a status the edge stores (HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED) or a
  public `Cache-Control` is a mismatch.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from .errors import InputError
from .http import host_allowed

RULE_TEXT_KEYS = ("name", "owner", "match", "expected", "rollback")
RULE_KEYS = frozenset((*RULE_TEXT_KEYS, "logged_in", "cached", "bypass", "notes"))
TOP_KEYS = frozenset(("login_cookie", "rules"))
LOGGED_IN_CHOICES = ("bypass", "cached", "any")
DEFAULT_LOGIN_COOKIE = "sessionid=edgecron-cache-check"
STORED_STATUSES = frozenset(("HIT", "MISS", "EXPIRED", "STALE", "UPDATING", "REVALIDATED"))
NOT_CACHED_STATUSES = frozenset(("BYPASS", "DYNAMIC"))
VISITORS = ("anonymous", "logged-in")


@dataclass(frozen=True)
class Rule:
    name: str
    owner: str
    match: str
    expected: str
    rollback: str
    logged_in: str  # what the cached examples must get with the login cookie
    cached: tuple[str, ...]
    bypass: tuple[str, ...]
    notes: str = ""


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    login_cookie: str


@dataclass(frozen=True)
class Probe:
    """One request to make: a rule's example, as one kind of visitor, with what it must get."""

    rule: str
    url: str
    visitor: str
    expected: str  # cached | bypass


@dataclass(frozen=True)
class Outcome:
    probe: Probe
    http_status: int | None
    cache_status: str | None
    cache_control: str | None
    mismatch: str | None  # why the answer contradicts the rule; None when it agrees
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        out = asdict(self.probe)
        out.update(
            http_status=self.http_status,
            cache_status=self.cache_status,
            cache_control=self.cache_control,
            mismatch=self.mismatch,
            error=self.error,
        )
        return out


def load_rules(path: Path) -> RuleSet:
    """Parse and validate; an InputError names the rule and the key at fault."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(
            f"rules file {path} cannot be read", got=exc.strerror, expected="a readable TOML file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"rules file {path} is not valid TOML", got=str(exc), expected="TOML syntax") from None
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown top-level key {unknown[0]!r}", expected="login_cookie and [[rules]]")
    cookie = data.get("login_cookie", DEFAULT_LOGIN_COOKIE)
    if not isinstance(cookie, str) or "=" not in cookie:
        raise InputError(f"{path}: login_cookie is not a cookie", got=cookie, expected="name=value, e.g. sessionid=x")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise InputError(f"{path} has no rules", expected="at least one [[rules]] table")
    rules = [_rule(raw, index, path) for index, raw in enumerate(raw_rules, 1)]
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise InputError(f"{path}: rule {rule.name!r} appears twice", expected="unique rule names")
        seen.add(rule.name)
    return RuleSet(tuple(rules), cookie)


def _rule(raw: object, index: int, path: Path) -> Rule:
    if not isinstance(raw, dict):
        raise InputError(f"{path}: rule #{index} is not a table", expected="[[rules]] with keys")
    label = f"rule {raw['name']!r}" if isinstance(raw.get("name"), str) and raw["name"].strip() else f"rule #{index}"

    def bad(key: str, expected: str) -> InputError:
        return InputError(f"{path}: {label} key {key!r} is missing or empty", expected=expected)

    unknown = sorted(set(raw) - RULE_KEYS)
    if unknown:
        raise InputError(
            f"{path}: {label} has unknown key {unknown[0]!r}", expected="one of " + ", ".join(sorted(RULE_KEYS))
        )
    for key in RULE_TEXT_KEYS:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise bad(key, "a non-empty string (every rule needs an owner and a rollback note)")
    logged_in = raw.get("logged_in", "bypass")
    if logged_in not in LOGGED_IN_CHOICES:
        raise InputError(
            f"{path}: {label} key 'logged_in' is not valid", got=logged_in, expected=" or ".join(LOGGED_IN_CHOICES)
        )
    lists = {}
    for key in ("cached", "bypass"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise InputError(f"{path}: {label} key {key!r} is not a list of URLs", got=value, expected='["/path", …]')
        lists[key] = tuple(v.strip() for v in value)
    if not lists["cached"] and not lists["bypass"]:
        raise bad("cached", "at least one example in 'cached' or 'bypass'")
    return Rule(
        name=raw["name"].strip(),
        owner=raw["owner"].strip(),
        match=raw["match"].strip(),
        expected=raw["expected"].strip(),
        rollback=raw["rollback"].strip(),
        logged_in=logged_in,
        cached=lists["cached"],
        bypass=lists["bypass"],
        notes=str(raw.get("notes", "")).strip(),
    )


def plan_probes(ruleset: RuleSet, *, site_url: str, allowed_hosts: Iterable[str]) -> list[Probe]:
    """Every request to make, in order; an example off the allowed hosts is an InputError."""
    hosts = tuple(allowed_hosts)
    probes = []
    for rule in ruleset.rules:
        for kind, examples in (("cached", rule.cached), ("bypass", rule.bypass)):
            for example in examples:
                url = _absolute(example, site_url=site_url, rule=rule.name)
                if not host_allowed(url, hosts):
                    raise InputError(
                        f"rule {rule.name!r} example {example} is on another host",
                        got=urlsplit(url).hostname,
                        expected="one of ALLOWED_HOSTS: " + (", ".join(hosts) or "(none: set SITE_URL)"),
                    )
                logged = rule.logged_in if kind == "cached" else "bypass"
                probes.append(Probe(rule.name, url, "anonymous", kind))
                if logged != "any":
                    probes.append(Probe(rule.name, url, "logged-in", logged))
    return probes


def _absolute(example: str, *, site_url: str, rule: str) -> str:
    if example.startswith("/"):
        if not site_url:
            raise InputError(
                f"rule {rule!r} example {example} is a path but no site is set",
                expected="SITE_URL in .env, --site URL, or absolute example URLs",
            )
        return urljoin(site_url.rstrip("/") + "/", example.lstrip("/"))
    parts = urlsplit(example)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"rule {rule!r} example is not a URL", got=example, expected="/path or an http(s) URL")
    return example


def run_probes(
    probes: Sequence[Probe],
    *,
    session: requests.Session,
    login_cookie: str,
    timeout: float = 15.0,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Outcome]:
    for probe in probes:
        if stop():
            return
        yield check_one(probe, session=session, login_cookie=login_cookie, timeout=timeout)


def check_one(probe: Probe, *, session: requests.Session, login_cookie: str, timeout: float) -> Outcome:
    """Request one example as one visitor and judge the answer (the unit of work)."""
    headers = {"Cookie": login_cookie} if probe.visitor == "logged-in" else {}
    try:
        with session.get(probe.url, headers=headers, timeout=timeout, allow_redirects=False, stream=True) as resp:
            status = resp.status_code
            cache_status = (resp.headers.get("cf-cache-status") or "").upper() or None
            cache_control = resp.headers.get("Cache-Control")
    except requests.RequestException as exc:
        return Outcome(probe, None, None, None, None, error=f"{type(exc).__name__}: request failed")
    return Outcome(probe, status, cache_status, cache_control, judge(probe.expected, cache_status, cache_control))


def judge(expected: str, cache_status: str | None, cache_control: str | None) -> str | None:
    """Why this answer contradicts the expectation, or None."""
    directives = {d.strip().split("=")[0].lower() for d in (cache_control or "").split(",") if d.strip()}
    if expected == "cached":
        if cache_status is None:
            return "no cf-cache-status header (is the request going through Cloudflare?)"
        if cache_status in NOT_CACHED_STATUSES:
            return f"expected cached, got cf-cache-status {cache_status}"
        if directives & {"private", "no-store"}:
            return f"expected cached, got Cache-Control: {cache_control}"
        return None
    if cache_status in STORED_STATUSES:
        return f"expected bypass, got cf-cache-status {cache_status} (the edge stores this response)"
    if "public" in directives or ("s-maxage" in directives and "private" not in directives):
        return f"expected bypass, got a public Cache-Control: {cache_control}"
    return None


def render_markdown(ruleset: RuleSet, *, source: str = "notes/cache-rules.toml") -> str:
    """The human page for the rules; generated, so it never drifts from the TOML."""
    lines = [
        "# Cache rules",
        "",
        f"<!-- Generated from {source} by `scripts/check_cache_rules.py render`. Edit the TOML. -->",
        "",
        "`scripts/check_cache_rules.py check` requests every example below anonymously and then with",
        f"the login cookie `{ruleset.login_cookie.split('=')[0]}`, and reports each answer that contradicts",
        "its rule (by `cf-cache-status` and `Cache-Control`).",
        "",
        "| rule | owner | anonymous | with login cookie |",
        "|---|---|---|---|",
    ]
    for rule in ruleset.rules:
        anon = "cached" if rule.cached else "bypass"
        logged = {"any": "not checked"}.get(rule.logged_in, rule.logged_in) if rule.cached else "bypass"
        lines.append(f"| [{rule.name}](#{rule.name}) | {rule.owner} | {anon} | {logged} |")
    for rule in ruleset.rules:
        lines += [
            "",
            f"## {rule.name}",
            "",
            f"- **Owner:** {rule.owner}",
            f"- **Matches:** {rule.match}",
            f"- **Expected:** {rule.expected}",
            f"- **Rollback:** {rule.rollback}",
        ]
        if rule.cached:
            lines.append("- **Should be cached:** " + ", ".join(f"`{u}`" for u in rule.cached))
            logged = {"any": "not checked"}.get(rule.logged_in, rule.logged_in)
            lines.append(f"- **Same examples with the login cookie:** {logged}")
        if rule.bypass:
            lines.append("- **Should bypass (anonymous and logged in):** " + ", ".join(f"`{u}`" for u in rule.bypass))
        if rule.notes:
            lines.append(f"- **Notes:** {rule.notes}")
    return "\n".join(lines) + "\n"
