"""Delivery outcomes, reach, receipts and the local outbox in Redis.

One Lua script records the outcome, counts it towards the alert's reach, clears the delivery's
in-flight marker and appends the outbox entry, atomically: the (alert, recipient) field is the
idempotency key, so a JetStream redelivery, or a notifier killed between two recipients, never
writes a second outcome (or message) for the same person. Provider receipts are folded into the
recorded outcome by a second script (see delivery.py for the in-flight protocol).
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from shared.schemas import DeliveryAttempted

OUTBOX = "ba:outbox"

# Receipt rules shared by the scripts below: a status only moves forward (sent < delivered <
# read); a failure receipt turns a sent message into "undelivered"; any sign of life turns an
# "unconfirmed" send (notifier died mid-request) into "delivered". Reach counters follow.
_RECEIPT_LUA = """
local RANK = {accepted=0, queued=0, sending=0, sent=1, delivered=2, read=3}
local FAILED = {failed=true, undelivered=true}
local function apply_receipt(outcomes, reach, recipient, status)
  local raw = redis.call('HGET', outcomes, recipient)
  if not raw then return 0 end
  local o = cjson.decode(raw)
  local before = o['outcome']
  if FAILED[status] then
    if before == 'delivered' or before == 'unconfirmed' then o['outcome'] = 'undelivered' end
    o['receipt'] = status
  elseif RANK[status] ~= nil then
    local now_rank = RANK[o['receipt']] or -1
    if RANK[status] > now_rank and not FAILED[o['receipt']] then o['receipt'] = status end
    if before == 'unconfirmed' and RANK[status] >= 1 then o['outcome'] = 'delivered' end
  else
    return 0
  end
  redis.call('HSET', outcomes, recipient, cjson.encode(o))
  if o['outcome'] ~= before then
    redis.call('HINCRBY', reach, before, -1)
    redis.call('HINCRBY', reach, o['outcome'], 1)
  end
  return 1
end
"""

# KEYS: outcomes hash, outbox stream, reach hash, in-flight key, early receipts hash
# ARGV: recipient, outcome JSON, ttl, outbox entry ("" for none), outbox max length, outcome
_RECORD_ONCE = (
    _RECEIPT_LUA
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  local old = cjson.decode(existing)
  if not (old['outcome'] == 'unconfirmed' and ARGV[6] == 'delivered') then
    return 0
  end
  -- A send we thought lost did complete (its worker was only slow): it was delivered.
  redis.call('HINCRBY', KEYS[3], 'unconfirmed', -1)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
if KEYS[4] ~= '' then redis.call('DEL', KEYS[4]) end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'entry', ARGV[4])
end
local early = redis.call('HGET', KEYS[5], ARGV[1])
if early then
  apply_receipt(KEYS[1], KEYS[3], ARGV[1], early)
  redis.call('HDEL', KEYS[5], ARGV[1])
end
return 1
"""
)

# KEYS: outcomes hash, reach hash, early receipts hash; ARGV: recipient, status, ttl
_RECEIPT = (
    _RECEIPT_LUA
    + """
if apply_receipt(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) == 1 then return 1 end
local known = RANK[ARGV[2]] ~= nil or FAILED[ARGV[2]]
if known and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  -- The receipt beat our own record of the send: keep it until the outcome is written.
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
  return 2
end
return 0
"""
)

# KEYS: outcomes hash, in-flight key; ARGV: recipient, owner token, ttl
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'done', ''} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return {'held', holder} end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
return {'claimed', ''}
"""


def outcomes_key(alert_id: str) -> str:
    """Hash of recipient -> DeliveryAttempted JSON for one alert."""
    return f"ba:outcomes:{alert_id}"


def reach_key(alert_id: str) -> str:
    """Hash of one alert's reach: planned recipients and a count per outcome."""
    return f"ba:reach:{alert_id}"


def inflight_key(delivery_id: str) -> str:
    """Set while a provider request for one delivery is under way; names its notifier."""
    return f"ba:inflight:{delivery_id}"


def _early_key(alert_id: str) -> str:
    return f"ba:receipts-early:{alert_id}"


class OutcomeStore:
    """Records exactly one outcome per (alert, recipient), with an optional outbox entry."""

    def __init__(self, redis: Redis, ttl_s: int, outbox_max_len: int = 100_000) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.outbox_max_len = outbox_max_len
        self._script = redis.register_script(_RECORD_ONCE)
        self._receipt = redis.register_script(_RECEIPT)
        self._claim = redis.register_script(_CLAIM)

    async def record(
        self,
        attempt: DeliveryAttempted,
        outbox_entry: dict[str, Any] | None = None,
        *,
        inflight: str = "",
    ) -> bool:
        """Store the outcome (and outbox entry); False when one was already recorded.

        The one exception: "delivered" replaces "unconfirmed" (the send did complete).
        `inflight` names the in-flight marker to clear in the same step.
        """
        entry = json.dumps(outbox_entry, ensure_ascii=False) if outbox_entry else ""
        written = await self._script(
            keys=[
                outcomes_key(attempt.alert_id),
                OUTBOX,
                reach_key(attempt.alert_id),
                inflight,
                _early_key(attempt.alert_id),
            ],
            args=[
                attempt.recipient,
                attempt.model_dump_json(),
                self.ttl_s,
                entry,
                self.outbox_max_len,
                attempt.outcome,
            ],
        )
        return bool(written)

    async def claim(self, alert_id: str, recipient: str, owner: str) -> tuple[str, str]:
        """Take a delivery before its provider request.

        ("done", "") when it already has an outcome, ("held", owner) when another notifier
        marked it in flight, ("claimed", "") when it is ours to send now.
        """
        state, holder = await self._claim(
            keys=[outcomes_key(alert_id), inflight_key(f"{alert_id}.{recipient}")],
            args=[recipient, owner, self.ttl_s],
        )
        return str(state), str(holder)

    async def has_outcome(self, alert_id: str, recipient: str) -> bool:
        """Whether this (alert, recipient) already has its outcome."""
        return bool(await self.redis.hexists(outcomes_key(alert_id), recipient))

    async def release(self, delivery_id: str) -> None:
        """Clear an in-flight marker after a failed request that will be retried."""
        await self.redis.delete(inflight_key(delivery_id))

    async def plan(self, alert_id: str, recipients: int) -> bool:
        """Record how many recipients an alert was meant to reach; True the first time."""
        first = bool(await self.redis.hsetnx(reach_key(alert_id), "planned", recipients))
        await self.redis.expire(reach_key(alert_id), self.ttl_s)
        return first

    async def apply_receipt(self, alert_id: str, recipient: str, status: str) -> int:
        """Fold a provider status into the recorded outcome.

        1 applied, 2 kept until the outcome is recorded (receipt came first), 0 ignored.
        """
        return int(
            await self._receipt(
                keys=[outcomes_key(alert_id), reach_key(alert_id), _early_key(alert_id)],
                args=[recipient, status.lower(), self.ttl_s],
            )
        )

    async def recorded(self, alert_id: str) -> set[str]:
        """Recipients that already have an outcome for this alert."""
        return {_text(k) for k in await self.redis.hkeys(outcomes_key(alert_id))}


async def read_outbox(redis: Redis, limit: int = 50) -> list[dict[str, Any]]:
    """Newest outbox entries first."""
    rows = await redis.xrevrange(OUTBOX, count=limit) or []
    out: list[dict[str, Any]] = []
    for entry_id, fields in rows:
        if not fields or entry_id is None:
            continue
        entry = json.loads(fields["entry"])
        entry["outbox_id"] = _text(entry_id)
        out.append(entry)
    return out


async def read_reach(redis: Redis, alert_id: str) -> dict[str, int]:
    """Planned recipients and the count of each outcome of one alert (empty when unknown)."""
    raw = await redis.hgetall(reach_key(alert_id))
    counts = {_text(k): int(v) for k, v in raw.items()}
    return {k: v for k, v in counts.items() if v or k == "planned"}


async def read_outcomes(redis: Redis, alert_id: str) -> list[DeliveryAttempted]:
    """Every recorded outcome of one alert."""
    raw = await redis.hgetall(outcomes_key(alert_id))
    return [DeliveryAttempted.model_validate_json(v) for v in raw.values()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
