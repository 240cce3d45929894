"""The one URL policy: which URLs may be fetched or purged, and the exact URL then requested.

Every URL that reaches a request (a sitemap `<loc>`, a sitemap-index child, a redirect `Location`,
a feed `next` link, a feed item re-warmed, `purge … --warm`, a deploy-manifest key) goes through
`UrlPolicy.check()`. The host is the one urllib3 connects to (`urllib3.util.parse_url`, which
requests uses too), and anything two parsers could read differently is refused outright:
`urlsplit` reads `http://127.0.0.2:8002\\@127.0.0.1:8001/x` as host 127.0.0.1 while urllib3
connects to 127.0.0.2. So the authority must be a plain host (name, dotted IPv4 or `[IPv6]`) and
an optional port: no userinfo `@`, `\\`, `%`, whitespace or control characters, and our own split
of the authority must agree with urllib3's. The URL returned is rebuilt from urllib3's parse (or
recognised as already in that form), so what was checked is what is requested.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

SCHEMES = ("http", "https")
# A reg-name of letters, digits, '.', '-', '_' (no trailing dot: it names a different cache key)
# or a bracketed IPv6 literal without a zone, then an optional port.
AUTHORITY = re.compile(r"(?P<host>[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
AUTHORITY_END = re.compile(r"[/?#]")
# Backslash, C0/C1 controls and DEL anywhere: urlsplit strips some, urllib3 quotes others, browsers
# read '\\' as '/'. (A space is refused in the authority only; in a path urllib3 quotes it.)
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


# A URL exactly as parse_url would rebuild it: lower-case scheme and host, a port without leading
# zeros, a path (no "." or ".." segment: checked apart) and query of the characters urllib3 leaves
# alone (RFC 3986 unreserved, sub-delims, ':', '@', '/', '?' in the query) or upper-case %XX.
# Runs of plain characters are matched possessively (one step per run, not per character: this
# check runs on every sitemap <loc>); '%' and '?' are outside the runs, so nothing is given back.
_SAFE_CHARS = r"A-Za-z0-9\-._~!$&'()*+,;=:@/"
_PATH = r"(?:[" + _SAFE_CHARS + r"]++|%[0-9A-F]{2})*+"
_QUERY = r"(?:[" + _SAFE_CHARS + r"?]++|%[0-9A-F]{2})*+"


# 1-65535 without leading zeros (what check() takes as `[1-9][0-9]{0,4}` below 65536); five digits
# first: the last branch would take four of a five-digit port and have to give them back
_PORT = r"(?:[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]|[1-9][0-9]{0,3})"


def _normal_form(hosts: list[str]) -> re.Pattern[str]:
    host = "(?:" + "|".join(re.escape(h) for h in hosts) + ")"
    return re.compile(r"https?://" + host + r"(?::(?P<port>[1-9][0-9]{0,4}))?/" + _PATH + r"(?:\?" + _QUERY + r")?")


def _unchanged_url(hosts: list[str], *, amp: str) -> str:
    """`_normal_form` with a port below 65536 and each '&' written as `amp`; no group."""
    host = "(?:" + "|".join(re.escape(h) for h in hosts) + ")"
    safe = _SAFE_CHARS.replace("&", "")
    piece = r"|%[0-9A-F]{2}|" + re.escape(amp)
    path = r"(?:[" + safe + r"]++" + piece + r")*+"
    query = r"(?:[" + safe + r"?]++" + piece + r")*+"
    return r"https?://" + host + r"(?::" + _PORT + r")?/" + path + r"(?:\?" + query + r")?"


class UrlRefused(ValueError):
    """A URL the policy will not request. `reason` is a short counter name; str() says why."""

    def __init__(self, message: str, *, reason: str, host: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # "not-http", "unsafe-url" or "off-host"
        self.host = host


def host_key(host: str) -> str:
    """How a host is compared: lower case, IPv6 without brackets and in its compressed form."""
    bare = host.strip().lower()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    if ":" in bare:
        try:
            return str(ipaddress.IPv6Address(bare))
        except ValueError:
            return bare
    return bare


class UrlPolicy:
    """Allowed hosts (ALLOWED_HOSTS, IPv6 literals with or without brackets) and the check itself."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self.hosts = frozenset(host_key(h) for h in allowed_hosts if h and h.strip())
        names = sorted(h for h in self.hosts if AUTHORITY.fullmatch(h))  # IPv6 literals take the long way
        self._normal = _normal_form(names) if names else None
        self._names = names

    def expected(self) -> str:
        if not self.hosts:
            return "a host in ALLOWED_HOSTS, which is empty (set SITE_URL or ALLOWED_HOSTS)"
        return "one of ALLOWED_HOSTS: " + ", ".join(sorted(self.hosts))

    def allows_host(self, host: str) -> bool:
        return host_key(host) in self.hosts

    def check(self, url: str) -> str:
        """The normalised URL to request (fragment dropped), or UrlRefused saying why not.

        A URL already in the normal form on an allowed host is returned as it is: parsing it
        gives it back unchanged (test_url_policy checks this against `parse_and_check`), and
        parse_url costs ~10 µs, 20x the match, on every sitemap `<loc>`.
        """
        if self._normal is not None and "/." not in url:
            normal = self._normal.fullmatch(url)
            if normal is not None and (normal["port"] is None or int(normal["port"]) < 65536):
                return url
        return self.parse_and_check(url)

    def unchanged_source(self, *, amp: str = "&") -> str | None:
        """A regular expression (source, no group) for the URLs `check()` returns as they are, once those
        holding "/." are set apart (check() parses them all), each '&' written as `amp` ("&amp;" in XML
        text); None when no host name is allowed (IPv6 literals take the long way). Sitemap `<loc>`s
        are checked by it while they are read (test_sitemap_fast checks it against `check()`)."""
        return _unchanged_url(self._names, amp=amp) if self._names else None

    def parse_and_check(self, url: str) -> str:
        """`check()` the long way: our split of the authority against urllib3's parse."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in SCHEMES:
            raise UrlRefused("expected an absolute http(s) URL", reason="not-http")
        if UNSAFE_CHARS.search(url):
            raise UrlRefused(
                "a URL with a backslash or a control character is refused (parsers read it differently)",
                reason="unsafe-url",
            )
        end = AUTHORITY_END.search(rest)
        authority = (rest[: end.start()] if end else rest).lower()
        plain = AUTHORITY.fullmatch(authority)
        if plain is None:
            raise UrlRefused(
                f"the host part {authority!r} is not a plain host[:port] (no user@, '%' or other characters)",
                reason="unsafe-url",
            )
        try:
            parsed = parse_url(url)
        except LocationParseError:
            raise UrlRefused("the URL cannot be parsed", reason="unsafe-url") from None
        host = (parsed.host or "").lower()
        port = parsed.port
        ours_port = int(plain["port"]) if plain["port"] else None
        if host != plain["host"] or port != ours_port or parsed.auth is not None:
            raise UrlRefused(  # never expected: the two readings of the authority differ, so trust neither
                f"the host part {authority!r} reads differently to the HTTP client", reason="unsafe-url", host=host
            )
        if ours_port is not None and not 0 < ours_port < 65536:
            raise UrlRefused(f"port {ours_port} is out of range", reason="unsafe-url", host=host)
        if not self.allows_host(host):
            raise UrlRefused(
                f"host {host} is not in ALLOWED_HOSTS ({', '.join(sorted(self.hosts)) or 'empty'})",
                reason="off-host",
                host=host,
            )
        netloc = host if port is None else f"{host}:{port}"
        query = "" if parsed.query is None else "?" + parsed.query
        return f"{scheme.lower()}://{netloc}{parsed.path or '/'}{query}"

    def allows(self, url: str) -> bool:
        try:
            self.check(url)
        except UrlRefused:
            return False
        return True


__all__ = ["UrlPolicy", "UrlRefused", "host_key"]
