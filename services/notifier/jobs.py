"""The fan-out's side of delivery: queue the jobs of an alert on JetStream, several per message.

A job is one message to one recipient. JetStream writes (and, with `sync_interval: always`,
syncs) each message it stores, so one message per job would make that write the ceiling of a
fan-out: about 4,500 jobs/s here. Jobs therefore travel as `DeliveryJobs`, up to a couple of
seconds of their channel's provider budget per message (more would only wait in a worker);
each message's Nats-Msg-Id is made from the jobs it carries, so a repeated fan-out stores it
once. Published with plain nats-py `publish_async` (hundreds in flight, then every PubAck
awaited); the fan-out acks its routed event only after that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.notifier.limits import account_bucket
from shared import subjects
from shared.errors import TransientError
from shared.schemas import DeliveryJobs, DeliveryRequested, MemberChannel
from shared.settings import NotifierSettings

#: Messages in flight before their PubAcks are awaited.
CHUNK = 500
#: The most jobs one message carries (a few hundred kB at most).
MAX_JOBS_PER_MESSAGE = 500
#: Seconds of a channel's provider budget one message carries.
SECONDS_PER_MESSAGE = 2.0


@dataclass(frozen=True, slots=True)
class Packed:
    """One message of jobs, ready to publish."""

    subject: str
    data: bytes
    msg_id: str
    jobs: int


def jobs_per_message(channel: MemberChannel, settings: NotifierSettings) -> int:
    """How many jobs of a channel go in one message: a couple of seconds of its budget."""
    per_second = account_bucket(channel, settings).limit.per_second
    return max(1, min(MAX_JOBS_PER_MESSAGE, int(per_second * SECONDS_PER_MESSAGE)))


def pack(jobs: Iterable[DeliveryRequested], settings: NotifierSettings) -> list[Packed]:
    """Group jobs by queue (channel, priority) and alert, in order, into messages."""
    queues: dict[tuple[str, MemberChannel, str], list[DeliveryRequested]] = {}
    for job in jobs:
        queues.setdefault((job.alert_id, job.channel, job.priority), []).append(job)
    packed: list[Packed] = []
    for (_, channel, _), queued in queues.items():
        size = jobs_per_message(channel, settings)
        for start in range(0, len(queued), size):
            packed.append(_packed(queued[start : start + size]))
    return packed


def packed_retry(job: DeliveryRequested) -> Packed:
    """A job handed back, as a message of its own (its `requeues` keeps the id new)."""
    return _packed([job])


def _packed(jobs: Sequence[DeliveryRequested]) -> Packed:
    first = jobs[0]
    return Packed(
        subject=subjects.deliver(first.channel, first.priority),
        data=DeliveryJobs(jobs=list(jobs)).model_dump_json().encode(),
        msg_id=subjects.delivery_msg_id([j.delivery_id for j in jobs], first.requeues),
        jobs=len(jobs),
    )


async def publish(
    js: JetStreamContext,
    settings: NotifierSettings,
    messages: Sequence[Packed],
    keep_alive: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Store every message in JetStream; TransientError when any PubAck is missing."""
    for start in range(0, len(messages), CHUNK):
        futures = [
            await js.publish_async(
                m.subject,
                m.data,
                stream=settings.stream_name,
                headers={subjects.MSG_ID_HEADER: m.msg_id},
            )
            for m in messages[start : start + CHUNK]
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=settings.provider_timeout_s)
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransientError(f"queueing delivery jobs: {type(exc).__name__}") from exc
        if keep_alive is not None and len(messages) > CHUNK:
            await keep_alive()  # a long fan-out must not hit ack_wait


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
            self._nc = await nats.connect(
                self.settings.nats_servers, max_reconnect_attempts=-1, reconnect_time_wait=1
            )
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
        await publish(self._js, self.settings, pack(jobs, self.settings), keep_alive)
