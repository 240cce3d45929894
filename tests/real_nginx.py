"""A throwaway real nginx (the Debian binary) on loopback, for tests that need what nginx really does.

`with start_nginx(prefix, http=..., servers=[...]) as server:` writes a config of its own under `prefix` (pid file, error log,
temp paths, every path inside `prefix`), runs nginx in the foreground (`daemon off`) as a child of
the test process and waits until every port answers. `stop()` asks for a graceful stop (SIGQUIT:
requests finish, logs are flushed), then SIGTERM, then SIGKILL. Ports are taken free just before
the start; the rare port taken in between is retried with new ones.

Also here: raw requests over a socket (clients such as requests/urllib3 refuse control bytes in
a header, which is exactly what the tests must send) and nginx's two log escapings undone.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NGINX_BINARY = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None
)
START_SECONDS = 15.0


def require_nginx() -> str:
    """The nginx binary, or skip: these tests need the real one."""
    if NGINX_BINARY is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it when missing)")
    return NGINX_BINARY


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now (all held open until each is chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass
class RealNginx:
    prefix: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes]
    extra: dict[str, int] = field(default_factory=dict)

    def __enter__(self) -> RealNginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, server: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[server]}{path}"

    @property
    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGQUIT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _main_config(prefix: Path, http: str) -> str:
    """The whole nginx.conf: nothing outside `prefix`, workers able to read it when run as root."""
    user = ""
    if os.geteuid() == 0:  # workers would run as `nobody`, unable to enter pytest's 0700 tmp dirs
        st = prefix.stat()
        user = f"user {pwd.getpwuid(st.st_uid).pw_name} {grp.getgrgid(st.st_gid).gr_name};"
    temp = "\n".join(
        f"    {name}_temp_path {prefix / ('tmp_' + name)};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}
daemon off;
master_process on;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 128; }}
http {{
{temp}
    access_log off;
    types {{ text/html html; text/xml xml; application/gzip gz; text/plain txt; }}
    default_type application/octet-stream;
{http}
}}
"""


def start_nginx(
    prefix: Path, *, http: str, servers: Iterable[str], timezone: str = "UTC", attempts: int = 3
) -> RealNginx:
    """Start nginx with `http` (the http{} body, `{port_NAME}` placeholders for each of `servers`).

    Placeholders: `{port_NAME}` for the listening ports, `{dead}` for a port that refuses
    connections, `{prefix}` for the directory. Literal braces in `http` are written `{{ }}`.
    """
    binary = require_nginx()
    prefix.mkdir(parents=True, exist_ok=True)
    names = list(servers)
    last_error = ""
    for _ in range(attempts):
        *chosen, dead = free_ports(len(names) + 1)  # `dead`: nobody listens there, connections are refused
        ports = dict(zip(names, chosen, strict=True))
        body = http.format(prefix=prefix, dead=dead, **{f"port_{n}": p for n, p in ports.items()})
        conf = prefix / "nginx.conf"
        conf.write_text(_main_config(prefix, body))
        (prefix / "error.log").write_text("")
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"TZ": timezone},
        )
        server = RealNginx(prefix, ports, proc, extra={"dead": dead})
        if _wait_ready(server):
            return server
        server.stop()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        last_error = stderr + server.error_log
        if "Address already in use" not in last_error:
            break
    raise AssertionError(f"nginx did not start:\n{last_error}")


def _wait_ready(server: RealNginx) -> bool:
    deadline = time.monotonic() + START_SECONDS
    waiting = set(server.ports.values())
    while waiting and time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        for port in list(waiting):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                waiting.discard(port)
        if waiting:
            time.sleep(0.05)
    return not waiting


# --- raw HTTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def raw_request(port: int, request: bytes, *, host: str = "127.0.0.1", timeout: float = 10) -> RawResponse:
    """Send `request` bytes as they are (`Connection: close` in them) and read the answer to EOF.

    nginx writes the access log line before it closes the connection, so at EOF the line is there.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)


def wait_for_lines(path: Path, count: int, *, seconds: float = 10) -> list[bytes]:
    """The log's lines once it has `count` of them (nginx writes each at the end of its request)."""
    deadline = time.monotonic() + seconds
    lines: list[bytes] = []
    while time.monotonic() < deadline:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    return lines


# --- nginx's log escaping, undone -------------------------------------------------------------------

_DEFAULT_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_JSON_ESCAPE = re.compile(rb'\\(u00[0-9A-Fa-f]{2}|["\\/bfnrt])')
_JSON_SHORT = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t"}


def unescape(value: bytes, escape: str) -> bytes:
    """A logged value back to the bytes nginx received: `\\xXX` (default) or JSON escapes (json).

    Unambiguous because nginx escapes the backslash itself (`\\x5C`, `\\\\`).
    """
    if escape == "json":
        return _JSON_ESCAPE.sub(
            lambda m: bytes([int(m.group(1)[3:], 16)]) if m.group(1)[:1] == b"u" else _JSON_SHORT[m.group(1)], value
        )
    return _DEFAULT_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value)
