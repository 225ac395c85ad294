"""Keeps the routing index in step with the registry without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from shared.registry import Registry
from shared.routing_index import RoutingIndex

log = logging.getLogger(__name__)


class IndexSource(Protocol):
    """Anything that hands out the current routing index."""

    async def get(self) -> RoutingIndex:
        """The index to route with now."""
        ...


class IndexCache:
    """Rebuilds the RoutingIndex when the registry version moves.

    The version is one Redis GET, checked for every alert by default: the admin API bumps it in
    the same transaction as the change, so an alert posted after a 201 always sees that change.
    """

    def __init__(self, registry: Registry, check_interval_s: float = 0.0) -> None:
        self.registry = registry
        self.check_interval_s = check_interval_s
        self._index: RoutingIndex | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> RoutingIndex:
        """The current index, rebuilt first if the registry changed."""
        now = time.monotonic()
        if self._index is not None and now - self._checked_at < self.check_interval_s:
            return self._index
        async with self._lock:
            version = await self.registry.version()
            self._checked_at = time.monotonic()
            if self._index is None or self._index.version != version:
                started = time.perf_counter()
                areas = await self.registry.all_areas()
                groups = await self.registry.all_groups()
                # Building STRtrees is CPU work; keep the event loop free for acks meanwhile.
                self._index = await asyncio.to_thread(RoutingIndex.build, areas, groups, version)
                log.info(
                    "routing index v%d: %d areas, %d groups, built in %.3fs",
                    version,
                    len(areas),
                    len(groups),
                    time.perf_counter() - started,
                )
            return self._index
