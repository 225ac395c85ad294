"""One Redis round trip per report: the source's rate budget and the registry version together.

A report needs both: the token bucket before it is stored, the registry version after, for the
coverage answer (is the routing index still current?). Asked one after the other they cost two
round trips and two passes through the Redis client, a good part of the edge's CPU per report;
pipelined they cost one, and the reports of concurrent requests share that one pipeline
(RateLimiter's AutoPipeline, which also reloads the script when Redis has lost it).
"""

from __future__ import annotations

from redis.asyncio.client import Pipeline

from shared.ratelimit import Decision, Limit, RateLimiter
from shared.registry import VERSION


class Admission:
    """Takes a token from a source's bucket and reads the registry version, in one round trip."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def hit(self, key: str, limit: Limit) -> tuple[Decision, int]:
        """RateLimiter.hit(key, limit) and Registry.version(), as one pipeline."""

        def build(pipe: Pipeline) -> None:
            self.limiter.queue_hit(pipe, key, limit)
            pipe.get(VERSION)

        bucket, raw_version = await self.limiter.auto.run(build)
        return self.limiter.decision(bucket), int(raw_version) if raw_version else 0
