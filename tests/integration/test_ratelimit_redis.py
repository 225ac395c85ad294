"""The Lua token bucket on a real redis-server, shared by several clients (as replicas are)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shared.ratelimit import Limit, RateLimiter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_budget_is_shared_across_clients(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(4)]
    limiters = [RateLimiter(c) for c in clients]
    limit = Limit(capacity=10, per_second=0.001)
    results = await asyncio.gather(*(
        limiters[i % 4].hit("sender:x", limit) for i in range(40)))
    assert sum(d.allowed for d in results) == 10
    refused = [d for d in results if not d.allowed]
    assert all(d.retry_after_s > 0 for d in refused)
    other = await limiters[0].hit("sender:y", limit)
    assert other.allowed  # buckets are per key
    for c in clients:
        await c.aclose()


async def test_bucket_refills_with_time(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(redis)
    limit = Limit(capacity=2, per_second=20)
    assert [(await limiter.hit("k", limit)).allowed for _ in range(3)] == [True, True, False]
    await asyncio.sleep(0.12)
    assert (await limiter.hit("k", limit)).allowed
    assert 0 < await redis.pttl("ba:rl:k") <= 1100
    await redis.aclose()
