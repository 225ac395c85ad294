"""Token-bucket rate limits kept in Redis, so they hold across replicas and processes.

A small Lua script rather than a library: one round trip, atomic, and the clock is Redis's own
TIME, so replicas with skewed clocks still share one budget. `bucket_step` is the same rule in
pure Python, for tests and for reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.autopipe import AutoPipeline

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
        #: Checks made in the same event-loop turn (concurrent requests) share one pipeline.
        self.auto = AutoPipeline(redis)

    async def hit(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        """Take `cost` tokens from the bucket `key` if there are enough."""
        (reply,) = await self.auto.run(lambda pipe: self.queue_hit(pipe, key, limit, cost))
        return self.decision(reply)

    def queue_hit(self, pipe: Pipeline, key: str, limit: Limit, cost: float = 1.0) -> None:
        """Queue the check on a pipeline of `self.auto`; `decision` reads its reply."""
        self.auto.queue_script(
            pipe, self._script, [f"ba:rl:{key}"], [limit.capacity, limit.per_second, cost]
        )

    @staticmethod
    def decision(reply: list[bytes | str | int]) -> Decision:
        """The reply of one queued check, as a Decision."""
        allowed, retry, tokens = reply
        return Decision(bool(int(allowed)), float(retry), float(tokens))


# Several buckets taken all-or-nothing (a Telegram message needs the bot's, the chat's and maybe
# the group's budget at once), with police pre-emption: while police traffic on a channel is under
# way (a flag any replica refreshes), resident messages wait, so the budget goes to police first.
# A grant may be a reservation: when every bucket has its token within `max_reserve` seconds, the
# tokens are taken now (going negative) and the caller sends after `wait`. Sends then keep to an
# absolute schedule (one every 1/rate s), instead of each losing the caller's own round trip.
# Every bucket is charged as of that send, not of the ask: a chat whose message waits 0.2 s for
# the bot's budget must not count it as sent now (its next message would follow 0.2 s too soon).
# KEYS: bucket keys..., then the police flag. ARGV: priority, flag ttl ms, max reserve seconds,
# then capacity and rate per bucket.
# Returns {allowed, wait seconds, index of the bucket that said no (0 = flag, -1 = none)}.
_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS - 1
local flag = KEYS[#KEYS]
if ARGV[1] == 'police' then
  redis.call('SET', flag, '1', 'PX', tonumber(ARGV[2]))
elseif redis.call('EXISTS', flag) == 1 then
  return {0, '0.05', '0'}
end
local tokens = {}
local wait = 0
local denied = -1
local reserve = tonumber(ARGV[3])
for i = 1, n do
  local cap = tonumber(ARGV[2 + 2 * i])
  local rate = tonumber(ARGV[3 + 2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tk = tonumber(state[1]) or cap
  local ts = tonumber(state[2]) or now
  if now > ts then tk = math.min(cap, tk + (now - ts) * rate) end
  tokens[i] = tk
  if tk < 1 then
    local w = (1 - tk) / rate
    if w > wait then wait = w; denied = i end
  end
end
if denied > 0 and wait > reserve then
  return {0, tostring(wait), tostring(denied)}
end
for i = 1, n do
  local cap = tonumber(ARGV[2 + 2 * i])
  local rate = tonumber(ARGV[3 + 2 * i])
  -- Charged at the send (now + wait), stated as of now: what the bucket will hold then, less
  -- the token, less the refill until then. At most cap - 1, so no refill is clamped meanwhile.
  local left = math.min(cap, tokens[i] + wait * rate) - 1 - wait * rate
  redis.call('HSET', KEYS[i], 'tokens', tostring(left), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate * 1000) + 60000)
end
return {1, tostring(wait), '-1'}
"""

# A provider said 429 with retry_after: empty the bucket so nobody sends before that time.
_PENALISE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local tokens = 1 - tonumber(ARGV[2]) * rate
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local current = tonumber(state[1])
if current == nil or current > tokens then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 60000)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One budget a send draws from: a Redis key (under `ba:rl:`), its limit and a label."""

    key: str
    limit: Limit
    scope: str  # bounded metric label: account, chat, group


@dataclass(frozen=True, slots=True)
class Grant:
    """Whether a send may go now; if not, how long to wait and which budget said no."""

    allowed: bool
    wait_s: float  # denied: try again after this; allowed: send after this (a reservation)
    denied_by: str  # a Bucket.scope, "police" (pre-empted) or "" when allowed


class MultiLimiter:
    """Takes one token from several buckets at once, police first."""

    def __init__(self, redis: Redis, flag_ttl_ms: int = 1000, max_reserve_s: float = 0.0) -> None:
        self.redis = redis
        self.flag_ttl_ms = flag_ttl_ms
        self.max_reserve_s = max_reserve_s
        self._acquire = redis.register_script(_ACQUIRE_SCRIPT)
        self._penalise = redis.register_script(_PENALISE_SCRIPT)

    async def acquire(self, buckets: list[Bucket], priority: str, flag: str) -> Grant:
        """Take a token from every bucket, or none; residents wait while police traffic runs."""
        args: list[str | float] = [priority, self.flag_ttl_ms, self.max_reserve_s]
        for b in buckets:
            args += [b.limit.capacity, b.limit.per_second]
        allowed, wait, denied = await self._acquire(
            keys=[f"ba:rl:{b.key}" for b in buckets] + [f"ba:rl:{flag}"], args=args
        )
        index = int(denied)
        if int(allowed):
            return Grant(True, float(wait), "")
        return Grant(False, float(wait), "police" if index == 0 else buckets[index - 1].scope)

    async def penalise(self, bucket: Bucket, seconds: float) -> None:
        """Nobody takes from this bucket for `seconds` (a provider's retry_after)."""
        await self._penalise(keys=[f"ba:rl:{bucket.key}"], args=[bucket.limit.per_second, seconds])


# At most `max` distinct alerts per person in a sliding window. Idempotent per alert: asking again
# for an alert already counted says yes, so a redelivered fan-out gives the same answer.
# KEYS: one sorted set per person; ARGV: alert id, window seconds, max. Returns 1/0 per key.
_CAP_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[1]) then
    out[i] = 1
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    if redis.call('ZCARD', key) < max then
      redis.call('ZADD', key, now, ARGV[1])
      redis.call('EXPIRE', key, math.ceil(window))
      out[i] = 1
    else
      out[i] = 0
    end
  end
end
return out
"""


class RecipientCap:
    """Caps the resident alerts one person receives per hour (police notices are exempt)."""

    def __init__(self, redis: Redis, per_hour: float, window_s: float = 3600.0) -> None:
        self.redis = redis
        self.max = per_hour * window_s / 3600.0
        self.window_s = window_s
        self._script = redis.register_script(_CAP_SCRIPT)
        self._auto = AutoPipeline(redis)

    async def allow(self, alert_id: str, recipients: list[str]) -> set[str]:
        """The recipients who may still receive this alert (in chunks of 500, one pipeline)."""
        chunks = [recipients[i : i + 500] for i in range(0, len(recipients), 500)]
        if not chunks:
            return set()
        args = (alert_id, self.window_s, self.max)

        def build(pipe: Pipeline) -> None:
            for chunk in chunks:
                keys = [f"ba:cap:{r}" for r in chunk]
                self._auto.queue_script(pipe, self._script, keys, args)

        replies = await self._auto.run(build)
        return {
            r
            for chunk, flags in zip(chunks, replies, strict=True)
            for r, ok in zip(chunk, flags, strict=True)
            if int(ok)
        }
