"""One Redis round trip per report: the source's rate budget and the registry version together.

A report needs both: the token bucket before it is stored, the registry version after, for the
coverage answer (is the routing index still current?). Asked one after the other they cost two
round trips and two passes through the Redis client, a good part of the edge's CPU per report;
pipelined they cost one. The bucket is RateLimiter's own script, run by its SHA; when Redis does
not know the script (restarted, flushed) RateLimiter.hit runs it, which loads it again.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from shared.ratelimit import Decision, Limit, RateLimiter
from shared.registry import VERSION


class Admission:
    """Takes a token from a source's bucket and reads the registry version, in one round trip."""

    def __init__(self, redis: Redis, limiter: RateLimiter) -> None:
        self.redis = redis
        self.limiter = limiter
        # RateLimiter keeps its script private; without it (renamed) fall back to two trips.
        script = getattr(limiter, "_script", None)
        self._sha: str | None = getattr(script, "sha", None) or None

    async def hit(self, key: str, limit: Limit) -> tuple[Decision, int]:
        """RateLimiter.hit(key, limit) and Registry.version(), as one pipeline."""
        if self._sha is None:
            decision = await self.limiter.hit(key, limit)
            return decision, await self._version()
        pipe = self.redis.pipeline(transaction=False)
        # Keys and arguments exactly as RateLimiter.hit passes them (cost 1).
        pipe.evalsha(self._sha, 1, f"ba:rl:{key}", limit.capacity, limit.per_second, 1.0)
        pipe.get(VERSION)
        bucket, raw_version = await pipe.execute(raise_on_error=False)
        if isinstance(raw_version, Exception):
            raise raw_version
        if isinstance(bucket, NoScriptError):
            decision = await self.limiter.hit(key, limit)
        elif isinstance(bucket, Exception):
            raise bucket
        else:
            allowed, retry, tokens = bucket
            decision = Decision(bool(int(allowed)), float(retry), float(tokens))
        return decision, int(raw_version) if raw_version else 0

    async def _version(self) -> int:
        raw = await self.redis.get(VERSION)
        return int(raw) if raw else 0
