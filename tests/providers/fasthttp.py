"""uvicorn's h11 protocol, stamping each request's arrival and sending each response at once.

Arrival: a provider meters requests as they reach its edge. The stub's handler may run well
after that, when the event loop has other work (callbacks, other connections), and requests
that arrived evenly would then be stamped in a burst. So the time the request's bytes were
read from the socket, taken in data_received on the stub's clock, goes to the handler in the
ASGI scope: `scope["extensions"][ARRIVAL_KEY]` (see common.read_at).

One send per response: uvicorn writes the status line and headers, then the body, as separate
transport writes; on loopback each write is a send() syscall that costs about as much as the
whole handler. Writes made in the same event-loop iteration are joined and sent once, which
raises a stub's throughput by a third without changing a byte on the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Key in the ASGI scope's "extensions": the clock's time when the request was read.
ARRIVAL_KEY = "buurtalert.read_at"


class _CoalescingTransport:
    """Delegates to a transport, but joins writes until the loop's next iteration."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue data; the first write of an iteration schedules the flush."""
        if not data:
            return
        self._buffer.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """Send what is queued, then close."""
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        # Everything else (flow control, extra info, abort) is the real transport's.
        return getattr(self._transport, name)


class CoalescingH11Protocol(H11Protocol):
    """H11Protocol whose responses leave in one send() and whose requests carry their arrival.

    A request's arrival is the read that completed its head (on loopback the whole request
    comes in one or two reads, microseconds apart). A pipelined request that h11 buffered
    while the previous one was answered gets the time of the latest read, when its bytes were
    there at the latest.
    """

    @staticmethod
    def clock() -> float:
        """The clock arrivals are read from (stamping_protocol binds the ledger's)."""
        return time.monotonic()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the transport before uvicorn sees it."""
        self._read_at = self.clock()
        super().connection_made(cast(asyncio.Transport, _CoalescingTransport(transport)))

    def data_received(self, data: bytes) -> None:
        """Stamp the read, before any request in it is parsed or handled."""
        self._read_at = self.clock()
        super().data_received(data)

    def handle_events(self) -> None:
        """Parse as uvicorn does; a request that started here gets the read's time."""
        before = self.scope
        super().handle_events()
        if self.scope is not before and self.scope is not None:
            # The request's task is created but has not run yet: it sees the stamp.
            scope = cast(dict[str, Any], self.scope)
            scope.setdefault("extensions", {})[ARRIVAL_KEY] = self._read_at


def stamping_protocol(clock: Callable[[], float]) -> type[CoalescingH11Protocol]:
    """CoalescingH11Protocol stamping arrivals on `clock` (a stub ledger's, maybe a fake)."""

    class StampingH11Protocol(CoalescingH11Protocol):
        @staticmethod
        def clock() -> float:
            return clock()

    return StampingH11Protocol
