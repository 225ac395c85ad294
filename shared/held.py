"""Messages held by the house rules, waiting for a group admin to release or reject them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from shared.schemas import AlertReceived

HELD = "ba:held"
#: Held messages from one sender within this window count towards a repeat-offender flag.
OFFENCE_WINDOW_S = 30 * 24 * 3600
REPEAT_OFFENDER_AT = 3


def offences_key(sender_ref: str) -> str:
    """Redis counter of one sender's held messages within the offence window."""
    return f"ba:offences:{sender_ref}"


async def hold(
    redis: Redis, alert: AlertReceived, reason: str, group_ids: Sequence[str] = ()
) -> int:
    """Keep a held message for the admins; the sender's offence count (idempotent per alert)."""
    # One transaction: a listing never sees a held message without its reason and groups.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(HELD, alert.alert_id, alert.model_dump_json())
        pipe.hset(f"{HELD}:reasons", alert.alert_id, reason)
        pipe.hset(f"{HELD}:groups", alert.alert_id, json.dumps(sorted(set(group_ids))))
        added, _, _ = await pipe.execute()
    if not alert.sender_ref:
        return 0
    key = offences_key(alert.sender_ref)
    if added:
        count = int(await redis.incr(key))
        await redis.expire(key, OFFENCE_WINDOW_S)
        return count
    return int(await redis.get(key) or 0)


async def list_held(
    redis: Redis, limit: int = 100, group_id: str | None = None
) -> list[dict[str, Any]]:
    """Held messages with their reason, and whether the sender is a repeat offender.

    With a group id, only the messages that would have reached that group (a group admin's view).
    """
    raw = await redis.hgetall(HELD)
    reasons = await redis.hgetall(f"{HELD}:reasons")
    groups = await redis.hgetall(f"{HELD}:groups")
    out: list[dict[str, Any]] = []
    for alert_id, body in raw.items():
        if len(out) >= limit:
            break
        reached = _groups(groups.get(alert_id))
        if group_id is not None and group_id not in reached:
            continue
        alert = AlertReceived.model_validate_json(body)
        offences = 0
        if alert.sender_ref:
            offences = int(await redis.get(offences_key(alert.sender_ref)) or 0)
        out.append(
            {
                "alert_id": str(alert_id),
                "channel": alert.channel,
                "text": alert.text,
                "reason": str(reasons.get(alert_id, "")),
                "sender_ref": alert.sender_ref,
                "offences": offences,
                "repeat_offender": offences >= REPEAT_OFFENDER_AT,
                "group_ids": reached,
                "received_at": alert.received_at.isoformat(),
            }
        )
    return sorted(out, key=lambda e: str(e["received_at"]), reverse=True)


async def take(redis: Redis, alert_id: str, group_id: str | None = None) -> AlertReceived | None:
    """Remove a held message (release or reject); None when it is not held (in that group)."""
    if group_id is not None and group_id not in _groups(
        await redis.hget(f"{HELD}:groups", alert_id)
    ):
        return None
    # HDEL's count decides who took it, so two admins releasing at once release it once.
    body = await redis.hget(HELD, alert_id)
    if body is None or not await redis.hdel(HELD, alert_id):
        return None
    await redis.hdel(f"{HELD}:reasons", alert_id)
    await redis.hdel(f"{HELD}:groups", alert_id)
    return AlertReceived.model_validate_json(body)


def _groups(raw: bytes | str | None) -> list[str]:
    return list(json.loads(raw)) if raw else []
