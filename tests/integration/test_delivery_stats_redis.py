"""Delivery counters for the ops page, kept by the outcome scripts on a real redis-server."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from shared.delivery_stats import TOTAL_KEY, minute_key, minute_of, read_delivery_stats
from shared.outbox import OutcomeStore, read_reach
from shared.schemas import DeliveryAttempted, Outcome, utcnow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def attempt(outcome: Outcome, recipient: str, channel: str = "sms") -> DeliveryAttempted:
    return DeliveryAttempted.model_validate({
        "alert_id": "a1", "recipient": recipient, "channel": channel, "outcome": outcome,
        "attempted_at": utcnow(),
    })


async def test_outcomes_and_receipts_are_counted_per_channel_once(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = OutcomeStore(redis, ttl_s=3600)
    await store.plan("a1", 4)
    assert await store.record(attempt("delivered", "sms:a"))
    assert not await store.record(attempt("delivered", "sms:a"))  # a repeat counts nothing
    assert await store.record(attempt("delivered", "sms:b"))
    assert await store.record(attempt("unconfirmed", "telegram:c", "telegram"))
    assert await store.record(attempt("delivered", "telegram:c", "telegram"))  # it did arrive
    assert await store.record(attempt("failed_permanent", "telegram:d", "telegram"))
    assert await store.record(attempt("no_recipients", "-", "outbox"))
    # A failure receipt turns a delivered SMS into undelivered: counted where it now stands.
    assert await store.apply_receipt("a1", "sms:b", "undelivered") == 1
    assert await store.apply_receipt("a1", "sms:b", "failed") == 1  # already there: no move

    totals = await redis.hgetall(TOTAL_KEY)
    assert {k: int(v) for k, v in totals.items() if int(v)} == {
        "sms|delivered": 1, "sms|undelivered": 1, "telegram|delivered": 1,
        "telegram|failed_permanent": 1, "none|no_recipients": 1,
    }
    minute = await redis.hgetall(minute_key(minute_of(time.time())))
    # The minute counts what happened in it: the unconfirmed send and its later arrival both.
    assert int(minute["telegram|unconfirmed"]) == 1
    assert int(minute["telegram|delivered"]) == 1
    assert int(minute["sms|delivered"]) == 2
    assert int(minute["sms|undelivered"]) == 1
    assert 0 < await redis.ttl(minute_key(minute_of(time.time()))) <= 2 * 3600

    stats = await read_delivery_stats(redis, time.time(), minutes=5)
    by = {c["channel"]: c for c in stats["channels"]}
    assert list(by) == ["sms", "telegram"]
    assert (by["sms"]["delivered"], by["sms"]["failed"]) == (2, 1)
    assert by["telegram"]["failure_rate"] == 0.5
    assert stats["no_recipient"] == {"no_recipients": 1}
    # Reach is unchanged by the counters: they ride along in the same scripts.
    assert await read_reach(redis, "a1") == {
        "planned": 4, "delivered": 2, "undelivered": 1, "failed_permanent": 1,
        "no_recipients": 1,
    }
    await redis.aclose()
