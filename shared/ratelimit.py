"""Token-bucket rate limits kept in Redis, so they hold across replicas and processes.

A small Lua script rather than a library: one round trip, atomic, and the clock is Redis's own
TIME, so replicas with skewed clocks still share one budget. `bucket_step` is the same rule in
pure Python, for tests and for reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

_BUCKET_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
else
  now = ts
end
local allowed = 0
local retry_after = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_after = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(retry_after), tostring(tokens)}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """`capacity` requests at once, refilled at `per_second`."""

    capacity: float
    per_second: float

    @classmethod
    def per_minute(cls, n: float, burst: float | None = None) -> Limit:
        """n per minute, with a burst of `burst` (default n)."""
        return cls(capacity=burst if burst is not None else n, per_second=n / 60)

    @classmethod
    def per_hour(cls, n: float, burst: float | None = None) -> Limit:
        """n per hour, with a burst of `burst` (default n)."""
        return cls(capacity=burst if burst is not None else n, per_second=n / 3600)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one request may go now, and if not, after how long."""

    allowed: bool
    retry_after_s: float
    tokens_left: float


def bucket_step(
    tokens: float, ts: float, now: float, limit: Limit, cost: float = 1.0
) -> tuple[Decision, float, float]:
    """One token-bucket step: the decision and the new (tokens, ts) state."""
    if now > ts:
        tokens = min(limit.capacity, tokens + (now - ts) * limit.per_second)
    else:
        now = ts
    if tokens >= cost:
        return Decision(True, 0.0, tokens - cost), tokens - cost, now
    return Decision(False, (cost - tokens) / limit.per_second, tokens), tokens, now


class RateLimiter:
    """Checks buckets in Redis; keys are namespaced under `ba:rl:`."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_BUCKET_SCRIPT)

    async def hit(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        """Take `cost` tokens from the bucket `key` if there are enough."""
        allowed, retry, tokens = await self._script(
            keys=[f"ba:rl:{key}"], args=[limit.capacity, limit.per_second, cost]
        )
        return Decision(bool(int(allowed)), float(retry), float(tokens))
