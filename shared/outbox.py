"""Delivery outcomes and the local outbox in Redis.

One Lua script records the outcome and appends the outbox entry atomically: HSETNX on the
(alert, recipient) field is the idempotency key, so a JetStream redelivery, or a notifier killed
between two recipients, never writes a second message for the same person.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from shared.schemas import DeliveryAttempted

OUTBOX = "ba:outbox"

_RECORD_ONCE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'entry', ARGV[4])
end
return 1
"""


def outcomes_key(alert_id: str) -> str:
    """Hash of recipient -> DeliveryAttempted JSON for one alert."""
    return f"ba:outcomes:{alert_id}"


class OutcomeStore:
    """Records exactly one outcome per (alert, recipient), with an optional outbox entry."""

    def __init__(self, redis: Redis, ttl_s: int, outbox_max_len: int = 100_000) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.outbox_max_len = outbox_max_len
        self._script = redis.register_script(_RECORD_ONCE)

    async def record(
        self, attempt: DeliveryAttempted, outbox_entry: dict[str, Any] | None = None
    ) -> bool:
        """Store the outcome (and outbox entry); False when one was already recorded."""
        entry = json.dumps(outbox_entry, ensure_ascii=False) if outbox_entry else ""
        written = await self._script(
            keys=[outcomes_key(attempt.alert_id), OUTBOX],
            args=[
                attempt.recipient,
                attempt.model_dump_json(),
                self.ttl_s,
                entry,
                self.outbox_max_len,
            ],
        )
        return bool(written)

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


async def read_outcomes(redis: Redis, alert_id: str) -> list[DeliveryAttempted]:
    """Every recorded outcome of one alert."""
    raw = await redis.hgetall(outcomes_key(alert_id))
    return [DeliveryAttempted.model_validate_json(v) for v in raw.values()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
