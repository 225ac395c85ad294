"""A send held up after its budget was granted must not crowd a provider's window.

Found in a fresh-clone run: after a notifier restart one Twilio request went out late (its
claim's Redis round trip ran slow while the new process was busy) and shared Twilio's one-second
window with ten sends that left on time: one request over the sender's limit. A request that
would leave more than SEND_LATE_MAX_S after its budget's moment now takes a fresh budget first,
also when the delay came after the check: in the claim's (HTTP) or the commit's (SMTP) round
trip, right before the point of no return.

The delivery service runs in this process on real nats-server and redis-server, sending to the
Twilio and SMTP stubs (their own process, enforcing 10/s); some claims or commits are made slow
on purpose, which is what a busy CPU or Redis does to them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from services.notifier.channels.registry import build_senders
from services.notifier.delivery import DeliveryMetrics, DeliveryService
from services.notifier.jobs import pack, publish
from shared.addresses import recipient_key
from shared.schemas import DeliveryRequested, MemberChannel, delivery_id
from shared.settings import NotifierSettings
from shared.streams import ensure_streams
from tests.integration.test_delivery import TWILIO_TOKEN
from tests.providers import (
    SMTP_LIMIT_RATE,
    TWILIO_LIMIT_SENDER,
    RemoteStubs,
    SmtpConfig,
    StubsConfig,
    TwilioConfig,
    spawn_stubs,
)
from tests.servers import NatsHandle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PEOPLE = 40
PER_SECOND = 10  # Twilio's default sender limit: sends 105 ms apart at limit_share 0.95
SLOW_S = 0.3  # every SLOW_EVERY-th claim (HTTP) or commit (SMTP) answers this late
SLOW_EVERY = 4
#: Per channel: the store call right before the point of no return, and the stub's limit.
CASES = {"sms": ("claim", TWILIO_LIMIT_SENDER), "email": ("commit", SMTP_LIMIT_RATE)}


@pytest.fixture
def stubs() -> Iterator[RemoteStubs]:
    with spawn_stubs(
        StubsConfig(
            twilio=TwilioConfig(auth_token=TWILIO_TOKEN, per_second=PER_SECOND),
            smtp=SmtpConfig(per_second=PER_SECOND),
        )
    ) as running:
        yield running


def _jobs(alert_id: str, channel: MemberChannel) -> list[DeliveryRequested]:
    now = datetime.now(UTC)
    jobs = []
    for i in range(PEOPLE):
        address = f"+3161{i:07d}" if channel == "sms" else f"bewoner{i}@example.nl"
        recipient = recipient_key(channel, address)
        jobs.append(
            DeliveryRequested(
                delivery_id=delivery_id(alert_id, recipient),
                alert_id=alert_id,
                recipient=recipient,
                channel=channel,
                address=address,
                text="Vermist: vrouw (75), rode fiets. Kijk vanuit huis.",
                subject="Vermist",
                priority="police",
                accepted_at=now,
                requested_at=now,
            )
        )
    return jobs


async def _deliver_slowed(settings: NotifierSettings, channel: MemberChannel) -> float:
    """Send PEOPLE messages with some store calls slowed; returns the 'late' re-budgets."""
    await ensure_streams(settings)
    redis = Redis.from_url(settings.redis_url)
    registry = CollectorRegistry()
    deliveries = Counter("d_total", "outcomes", ["channel", "outcome"], registry=registry)
    service = DeliveryService(
        settings, redis, build_senders(settings), DeliveryMetrics.create(registry, deliveries)
    )
    name = CASES[channel][0]
    call = getattr(service.store, name)
    calls = itertools.count(1)

    async def slowed(*args: Any, **kwargs: Any) -> Any:
        found = await call(*args, **kwargs)
        if next(calls) % SLOW_EVERY == 0:
            await asyncio.sleep(SLOW_S)  # the answer comes back late
        return found

    setattr(service.store, name, slowed)
    await service.start()
    try:
        assert service._js is not None
        await publish(service._js, settings, pack(_jobs("late-" + channel, channel), settings))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while _settled(registry) < PEOPLE:
            assert loop.time() < deadline, "not every message settled within 60 s"
            await asyncio.sleep(0.2)
    finally:
        await service.stop()
        await redis.aclose()
    late = registry.get_sample_value(
        "notifier_rate_limited_total", {"channel": channel, "scope": "late"}
    )
    return late or 0.0


def _settled(registry: CollectorRegistry) -> float:
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "d_total"
    )


@pytest.mark.parametrize("channel", list(CASES))
def test_sends_held_up_past_their_budget_take_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
    nats_server: NatsHandle,
    redis_url: str,
    stubs: RemoteStubs,
    channel: MemberChannel,
) -> None:
    for name, value in {
        **stubs.env(),
        "BUURTALERT_NATS_URL": nats_server.url,
        "BUURTALERT_REDIS_URL": redis_url,
        "BUURTALERT_TWILIO_PER_SECOND": str(PER_SECOND),
        "BUURTALERT_EMAIL_PER_SECOND": str(PER_SECOND),
    }.items():
        monkeypatch.setenv(name, value)
    late = asyncio.run(_deliver_slowed(NotifierSettings(), channel))
    got = [d.recipient for d in stubs.received(channel)]
    assert len(got) == PEOPLE, got
    assert len(set(got)) == PEOPLE, "someone got the message twice"
    assert sum(stubs.violations().values()) == 0, stubs.violations()
    assert stubs.usage(CASES[channel][1]).max_in_window <= PER_SECOND
    # The slowed claims did make requests late, and those took fresh budgets.
    assert late >= PEOPLE // SLOW_EVERY - 1, late
