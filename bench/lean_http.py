"""A lean HTTP/1.1 load generator: persistent connections, requests written as bytes.

The benchmark's client shares two cores with the system it measures. httpx spent about 1.1 ms
of CPU per request here, as much as the edge spends answering it, so the client set the pace,
not the system. This client does only what a load generator needs (POST a JSON body, read a
Content-Length response, keep the connection alive) for a small fraction of that, as wrk or
hey would. It is for bench/ only; the product never uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed or the answer was not HTTP/1.1 as expected (retry is safe with an
    Idempotency-Key)."""


@dataclass
class Answer:
    """Status and body of one response."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.writer.close()


class LeanPool:
    """Up to `size` keep-alive connections to one host; each carries one request at a time.

    A connection idle for `keepalive_s` is not used again: uvicorn closes idle connections
    after 5 s, and a request written into one it is closing breaks off (as httpx's
    keepalive_expiry does, 5 s there).
    """

    def __init__(self, base_url: str, size: int, keepalive_s: float = 4.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.size = size
        self.keepalive_s = keepalive_s
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(size)

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise HttpError(f"connect: {exc}") from exc
        return _Conn(reader, writer)

    async def post_json(
        self, path: str, payload: Any, headers: dict[str, str] | None = None, timeout_s: float = 30
    ) -> Answer:
        """POST a JSON body; the answer. HttpError when the exchange broke off."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            + "\r\n"
        ).encode()
        async with self._slots:
            conn = self._take_idle() or await self._connect()
            try:
                answer, keep = await asyncio.wait_for(self._exchange(conn, head + body), timeout_s)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError, ValueError) as exc:
                conn.close()
                raise HttpError(type(exc).__name__) from exc
            if keep:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return answer

    def _take_idle(self) -> _Conn | None:
        # The most recently used first; older ones past their keep-alive are closed.
        fresh_after = time.monotonic() - self.keepalive_s
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_since >= fresh_after:
                return conn
            conn.close()
        return None

    @staticmethod
    async def _exchange(conn: _Conn, request: bytes) -> tuple[Answer, bool]:
        conn.writer.write(request)
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        body = await conn.reader.readexactly(length) if length else b""
        return Answer(status, body), keep

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()


@contextlib.asynccontextmanager
async def lean_pool(base_url: str, size: int) -> AsyncIterator[LeanPool]:
    """A LeanPool closed on exit."""
    pool = LeanPool(base_url, size)
    try:
        yield pool
    finally:
        pool.close()
