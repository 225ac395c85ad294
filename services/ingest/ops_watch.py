"""Follows `alerts.v1.routed` while someone watches the ops page, for its live feed.

The routed events in JetStream are the record of what happened; the edge reads them with an
ordered consumer (ephemeral, no acks, nothing for the router or notifier to do) starting
`history_s` back, and folds them into a FeedBook. It starts on the first feed request and stops
after `idle_s` without one, so an edge nobody watches does no work for it. Every edge replica
keeps its own book from the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import ValidationError

from services.ingest.ops_feed import FeedBook
from shared import subjects
from shared.errors import TransientError
from shared.schemas import AlertRouted

log = logging.getLogger(__name__)


class RoutedWatch:
    """A FeedBook kept up to date from JetStream while it is being asked for."""

    def __init__(
        self,
        nats_servers: list[str],
        stream: str,
        history_s: float,
        idle_s: float,
        max_items: int = 300,
    ) -> None:
        self.nats_servers = nats_servers
        self.stream = stream
        self.history_s = history_s
        self.idle_s = idle_s
        self.max_items = max_items
        self.book_ = FeedBook(max_items)
        self.since: datetime | None = None
        self.skipped = 0
        self._nc: Client | None = None
        self._sub: JetStreamContext.PushSubscription | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._used_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def live(self) -> bool:
        """Whether the consumer is running."""
        return self._sub is not None

    async def book(self) -> FeedBook:
        """The current book; starts following the stream first if it is not yet."""
        self._used_at = time.monotonic()
        if self._sub is None:
            async with self._lock:
                if self._sub is None:
                    await self._start()
        return self.book_

    async def _start(self) -> None:
        book = FeedBook(self.max_items)
        since = datetime.now(UTC) - timedelta(seconds=self.history_s)

        async def on_msg(msg: Msg) -> None:
            try:
                book.add(AlertRouted.model_validate_json(msg.data))
            except (ValidationError, ValueError) as exc:
                # An event of a newer schema, or not one at all: the feed skips it.
                self.skipped += 1
                log.debug("ops feed skipped a routed event: %s", type(exc).__name__)

        try:
            nc = await nats.connect(
                self.nats_servers, connect_timeout=5, max_reconnect_attempts=-1, name="ingest-ops"
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise TransientError(f"event stream unreachable: {type(exc).__name__}") from exc
        try:
            sub = await nc.jetstream().subscribe(
                subjects.ROUTED,
                stream=self.stream,
                cb=on_msg,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since
                ),
            )
        except (TimeoutError, nats.errors.Error) as exc:
            await nc.close()
            raise TransientError(f"cannot follow the routed events: {exc}") from exc
        self._nc, self._sub, self.book_, self.since = nc, sub, book, since
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._stop_when_idle(), name="ops-feed-reaper")
        log.info("ops feed following routed events from %s", since.isoformat())

    async def _stop_when_idle(self) -> None:
        while self._sub is not None:
            await asyncio.sleep(max(0.5, self.idle_s / 4))
            if time.monotonic() - self._used_at >= self.idle_s:
                async with self._lock:
                    await self._stop()
                log.info("ops feed stopped: nobody asked for %.0fs", self.idle_s)

    async def _stop(self) -> None:
        sub, nc = self._sub, self._nc
        self._sub = self._nc = None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await sub.unsubscribe()
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.close()

    async def close(self) -> None:
        """Stop following (app shutdown)."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        await self._stop()
