"""One registry-version check shared by the alerts that ask for the index at the same time.

`IndexCache.get` costs one Redis GET per call, and its lock lets one call at a time make it:
the alerts of a fetched batch, handled concurrently, each waited their turn for their own GET.
Here the callers that ask while no check has started yet share the next one. Every caller still
gets an index checked by a GET sent after it asked, so an alert handled after a 201 sees that
change exactly as before; a batch of alerts now costs one or two GETs instead of one each.
"""

from __future__ import annotations

import asyncio

from shared.index_cache import IndexSource
from shared.routing_index import RoutingIndex


class SharedCheck:
    """An IndexSource whose version checks are shared by the callers waiting for the next one."""

    def __init__(self, source: IndexSource) -> None:
        self.source = source
        self._lock = asyncio.Lock()
        #: The check not started yet: callers arriving now join it.
        self._next: asyncio.Future[RoutingIndex] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self) -> RoutingIndex:
        """An index checked against the registry after this call began."""
        waiter = self._next
        if waiter is None:
            waiter = self._next = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._check(waiter))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A cancelled caller must not cancel the check the others wait for.
        return await asyncio.shield(waiter)

    async def _check(self, waiter: asyncio.Future[RoutingIndex]) -> None:
        try:
            async with self._lock:
                # From here on the check is under way: later callers wait for the one after it.
                if self._next is waiter:
                    self._next = None
                index = await self.source.get()
        except Exception as exc:  # noqa: BLE001 - handed to every caller of this check
            if not waiter.done():
                waiter.set_exception(exc)
                # Retrieved here too, so nobody left waiting means no "never retrieved".
                waiter.exception()
        except BaseException:  # cancelled (shutting down): so are the callers' waits
            if self._next is waiter:
                self._next = None
            waiter.cancel()
            raise
        else:
            if not waiter.done():
                waiter.set_result(index)
