"""Erasing a person from the edge's side: opt-out (STOP, AFMELDEN) and the admin's request."""

from __future__ import annotations

from redis.asyncio import Redis

from services.ingest.conversation import JOIN_REQUESTS
from services.ingest.locating import last_location_key
from services.ingest.normalise import sender_ref
from shared.outbox import OUTBOX
from shared.registry import Registry
from shared.retention import Erased, erase_person
from shared.schemas import MemberChannel

#: Redis streams whose entries name people: swept by age, searched on erasure.
PERSONAL_STREAMS = (OUTBOX, JOIN_REQUESTS)


class Eraser:
    """Removes one person's data (memberships, outbox entries, reports awaiting review)."""

    def __init__(self, redis: Redis, registry: Registry) -> None:
        self.redis = redis
        self.registry = registry

    async def erase(self, channel: MemberChannel, identity: str) -> Erased:
        """Erase everything kept about this person on this channel."""
        ref = sender_ref(channel, identity)
        return await erase_person(
            self.redis,
            self.registry,
            channel=channel,
            address=identity,
            sender_ref=ref,
            streams=PERSONAL_STREAMS,
            extra_keys=[last_location_key(ref)],
        )
