"""A loopback origin for benchmarks: answers every GET after a fixed latency, asyncio, keep-alive.

asyncio keeps the origin's CPU per request far below the client's, so the client is what is
measured (a thread-per-connection stdlib server stalls on Nagle and costs more CPU; bench-facts.md).
Run: python bench/origin.py --latency 0.05  → prints `listening on http://127.0.0.1:PORT`.
Also serves files from --root (for sitemap benchmarks) when the path exists there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from pathlib import Path

BODY = b"<!doctype html><title>bench</title>" + b"x" * 1024


class OriginProtocol(asyncio.Protocol):
    def __init__(self, latency: float, root: Path | None) -> None:
        self.latency = latency
        self.root = root
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].decode("latin-1") if b" " in head else "/"
            body, ctype = self._body(path)
            response = (
                b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\ncf-cache-status: MISS\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            if self.latency and ctype.startswith(b"text/html"):
                loop.call_later(self.latency, self._write, response)
            else:
                self._write(response)

    def _body(self, path: str) -> tuple[bytes, bytes]:
        if self.root is not None:
            candidate = (self.root / path.lstrip("/")).resolve()
            if candidate.is_file() and self.root in candidate.parents:
                return candidate.read_bytes(), b"application/octet-stream"
        return BODY, b"text/html"

    def _write(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)


async def serve(latency: float, root: Path | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: OriginProtocol(latency, root), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.latency, args.root.resolve() if args.root else None))


if __name__ == "__main__":
    main()
