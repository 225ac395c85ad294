"""The fan-out's side of delivery: queue one JetStream job per (alert, recipient).

Published with plain nats-py `publish_async` (hundreds in flight, then every PubAck awaited), so
a notice to 100,000 people is queued in seconds; the fan-out acks its routed event only after
that. Each job carries its delivery id as Nats-Msg-Id, so a repeated fan-out queues it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared import subjects
from shared.errors import TransientError
from shared.schemas import DeliveryRequested, MemberChannel
from shared.settings import NotifierSettings

CHUNK = 1000


class JobQueue:
    """Publishes delivery jobs for the channels that have a provider configured."""

    def __init__(self, settings: NotifierSettings, channels: Iterable[MemberChannel]) -> None:
        self.settings = settings
        self.channels: frozenset[MemberChannel] = frozenset(channels)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        """Connect (only when some channel has a provider)."""
        if self.channels:
            self._nc = await nats.connect(self.settings.nats_url, max_reconnect_attempts=-1)
            self._js = self._nc.jetstream(publish_async_max_pending=CHUNK * 2)

    async def stop(self) -> None:
        """Disconnect."""
        if self._nc is not None:
            await self._nc.drain()

    async def enqueue(
        self,
        jobs: list[DeliveryRequested],
        keep_alive: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Store every job in JetStream; TransientError when any PubAck is missing."""
        if not jobs:
            return
        if self._js is None:
            raise TransientError("delivery queue not connected")
        for start in range(0, len(jobs), CHUNK):
            futures = [
                await self._js.publish_async(
                    subjects.deliver(job.channel, job.priority),
                    job.model_dump_json().encode(),
                    stream=self.settings.stream_name,
                    headers={subjects.MSG_ID_HEADER: subjects.delivery_msg_id(job.delivery_id)},
                )
                for job in jobs[start : start + CHUNK]
            ]
            try:
                await asyncio.wait_for(
                    asyncio.gather(*futures), timeout=self.settings.provider_timeout_s
                )
            except (TimeoutError, nats.errors.Error) as exc:
                raise TransientError(f"queueing delivery jobs: {type(exc).__name__}") from exc
            if keep_alive is not None and len(jobs) > CHUNK:
                await keep_alive()  # a long fan-out must not hit ack_wait
