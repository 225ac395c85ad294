"""What the edge does with one classified resident message, whatever channel it came on.

Reports are published (202/200 only after the PubAck); the other commands change small bits of
state in Redis. Every function returns the Dutch reply to send back, or None.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import HTTPException
from prometheus_client import Counter
from redis.asyncio import Redis

from services.ingest.adapters.keywords import Command, CommandKind
from services.ingest.adapters.texts import (
    HELP_TEXT,
    JOIN_ASK_LOCATION,
    OPT_IN_CONFIRMATION,
    OPT_OUT_CONFIRMATION,
    WELCOME_TEXT,
    answer_112_reply,
    join_confirmation,
    report_reply,
)
from services.ingest.coverage import OUTSIDE_TEXT, Coverage
from services.ingest.locating import Locator
from services.ingest.publishing import AlertPublisher
from shared.addresses import opt_out_key
from shared.moderation import assess
from shared.ratelimit import Limit, RateLimiter
from shared.saar import awaits_answer, record_answer, remember_question
from shared.schemas import AlertReceived, Location, MemberChannel, ReplyRequested, utcnow

NO_PLACE_TEXT = "Waar is het? Stuur de postcode of het adres, of deel uw locatie."
LOCATION_RECEIVED = "Locatie ontvangen. Stuur nu wat u ziet. Bij direct gevaar: bel eerst 112."
ANSWER_WITHOUT_REPORT = "Bedankt. Bij direct gevaar: bel 112."
JOIN_REQUESTS = "ba:join-requests"


@dataclass(frozen=True)
class Sender:
    """Who wrote: the channel, their identity (E.164 or user id) and its opaque reference."""

    channel: MemberChannel
    identity: str
    ref: str


MakeAlert = Callable[[bool | None, Location | None], AlertReceived]


class Conversation:
    """Handles commands from residents on SMS, Telegram and WhatsApp the same way."""

    def __init__(
        self,
        redis: Redis,
        publisher: AlertPublisher,
        limiter: RateLimiter,
        locator: Locator,
        sender_limit: Limit,
        question_ttl_s: int,
        rejected: Counter,
        coverage: Coverage,
        erase: Callable[[MemberChannel, str], Awaitable[object]],
    ) -> None:
        self.redis = redis
        self.publisher = publisher
        self.limiter = limiter
        self.locator = locator
        self.sender_limit = sender_limit
        self.question_ttl_s = question_ttl_s
        self.rejected = rejected
        self.coverage = coverage
        self.erase = erase

    async def handle(
        self, sender: Sender, command: Command, make_alert: MakeAlert, endpoint: str
    ) -> str | None:
        """Carry out one command; the reply text, or None for no reply."""
        kind = command.kind
        if kind is CommandKind.IGNORE:
            return None
        if kind is CommandKind.HELP:
            return HELP_TEXT
        if kind is CommandKind.START:
            return WELCOME_TEXT
        if kind is CommandKind.OPT_OUT:
            # The marker first: should the erasure fail half-way, nothing is sent any more.
            await self.redis.set(opt_out_key(sender.channel, sender.identity), "1")
            await self.erase(sender.channel, sender.identity)
            return OPT_OUT_CONFIRMATION
        if kind is CommandKind.OPT_IN:
            await self.redis.delete(opt_out_key(sender.channel, sender.identity))
            return OPT_IN_CONFIRMATION
        if kind is CommandKind.JOIN:
            return await self._join(sender, command)
        if kind is CommandKind.ANSWER_112 and command.called_112 is not None:
            found = await record_answer(
                self.redis, sender.ref, command.called_112, self.question_ttl_s
            )
            return answer_112_reply(command.called_112) if found else ANSWER_WITHOUT_REPORT
        if kind is CommandKind.LOCATION and command.location is not None:
            await self.locator.remember_shared(sender.ref, command.location)
            return LOCATION_RECEIVED
        return await self._report(sender, command, make_alert, endpoint)

    async def _report(
        self, sender: Sender, command: Command, make_alert: MakeAlert, endpoint: str
    ) -> str:
        decision = await self.limiter.hit(f"sender:{sender.ref}", self.sender_limit)
        if not decision.allowed:
            self.rejected.labels(endpoint, "rate_limited").inc()
            raise HTTPException(
                429,
                "too many reports from this sender; try again later (bij direct gevaar: bel 112)",
                headers={"Retry-After": str(max(1, round(decision.retry_after_s)))},
            )
        location = command.location or await self.locator.locate(
            sender.ref, command.text, sender.channel, sender.identity
        )
        alert = make_alert(command.called_112, location)
        await self.publisher.publish(alert)
        if awaits_answer(alert):
            await remember_question(self.redis, alert, self.question_ttl_s)
        verdict = assess(alert.text)
        if verdict.held:
            return verdict.explanation  # held for the admins by the router, not broadcast
        reply = report_reply(alert.called_112)
        if location is None:
            return f"{reply} {NO_PLACE_TEXT}"
        if not await self.coverage.covers(location.lat, location.lon, sender.channel):
            return f"{reply} {OUTSIDE_TEXT}"
        return reply

    async def _join(self, sender: Sender, command: Command) -> str:
        place = command.text.strip()
        if not place and command.location is None:
            return JOIN_ASK_LOCATION
        # Admins decide on joins (18+, lives in the area): the request waits for them.
        fields: dict[str, str] = {
            "channel": sender.channel,
            "address": sender.identity,
            "place": place[:200],
            "requested_at": datetime.now().astimezone().isoformat(),
        }
        if command.location is not None:
            fields["lat"] = str(command.location.lat)
            fields["lon"] = str(command.location.lon)
        await self.redis.xadd(JOIN_REQUESTS, fields, maxlen=100_000, approximate=True)  # type: ignore[arg-type]
        return join_confirmation(place or "uw locatie")

    async def queue_replies(
        self, channel: MemberChannel, replies: list[tuple[str, str, str]]
    ) -> None:
        """Hand (provider message id, address, text) replies to the notifier, once each."""
        for provider_id, address, text in replies:
            reply_id = uuid.uuid5(_REPLY_NS, f"{channel}:{provider_id}").hex
            await self.publisher.publish_reply(
                ReplyRequested(
                    reply_id=reply_id,
                    channel=channel,
                    address=address,
                    text=text,
                    requested_at=utcnow(),
                )
            )


_REPLY_NS = uuid.UUID("0b7e9f6c-3c1f-4f5e-8a57-6a0c2b8c1d44")
