"""A real HTTP server on a chosen loopback address that misbehaves on request.

Routes answer with a fixed response, or trickle a body a byte at a time, or send a body that never
ends, or say nothing at all after the request: what a hostile or broken site does. Every request is
logged (path), so a test can assert that a server was never reached. Two sites bound to the same
port on 127.0.0.1 and 127.0.0.2 differ only by host, which is what the URL policy tests need.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    behaviour: str = "plain"  # plain | trickle (a byte per `interval`) | endless (1 KiB per `interval`) | silent
    interval: float = 1.0


class LoopbackSite:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, name: str = "site") -> None:
        self.name = name
        self.routes: dict[str, Route] = {}
        self.default = Route(404, b"not here")  # the answer for a path without a route
        self.hits: list[str] = []
        self.started = threading.Event()  # set when a trickle/endless/silent answer begins
        self.closing = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits.append(self.path)
                # a route for the exact path and query wins (Drupal's sitemap chunks differ only by their
                # query: /sitemap.xml?page=2), else the route for the path
                route = site.routes.get(self.path) or site.routes.get(self.path.split("?")[0], site.default)
                with contextlib.suppress(OSError):  # the client went away: how a cut download looks here
                    site._answer(self, route)

            def log_message(self, *args: object) -> None:
                pass

        server_class = ThreadingHTTPServer
        if ":" in host:  # an IPv6 literal such as ::1
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self.server = server_class((host, port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def _answer(self, handler: BaseHTTPRequestHandler, route: Route) -> None:
        if route.behaviour == "silent":
            self.started.set()
            self.closing.wait(120)
            return
        handler.send_response(route.status)
        for name, value in route.headers.items():
            handler.send_header(name, value)
        if route.behaviour == "endless":
            handler.send_header("Content-Length", str(10**12))
        elif "Location" not in route.headers or route.body:
            handler.send_header("Content-Length", str(len(route.body)))
        else:
            handler.send_header("Content-Length", "0")
        handler.end_headers()
        if route.behaviour == "plain":
            handler.wfile.write(route.body)
            return
        self.started.set()
        if route.behaviour == "trickle":
            for byte in route.body:
                if self.closing.wait(route.interval):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            return
        block = b"x" * 1024
        while not self.closing.wait(route.interval):  # endless, at 1 KiB per interval
            handler.wfile.write(block)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def loopback_pair() -> tuple[LoopbackSite, LoopbackSite]:
    """(allowed on 127.0.0.1, internal on 127.0.0.2), both on the same port number."""
    for _ in range(20):
        allowed = LoopbackSite("127.0.0.1", name="allowed")
        try:
            internal = LoopbackSite("127.0.0.2", allowed.port, name="internal")
        except OSError:  # that port is taken on 127.0.0.2: try another
            allowed.close()
            continue
        return allowed, internal
    raise OSError("no port free on both 127.0.0.1 and 127.0.0.2")


def loopback_has_127_0_0_2() -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.2", 0))
        except OSError:
            return False
    return True
