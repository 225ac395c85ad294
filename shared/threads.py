"""Notice threads: who an Alert reached, so its Update and Cancel reach the same people."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from shared.schemas import RouteTarget

_TTL_S = 90 * 24 * 3600


def _key(notice_id: str) -> str:
    return f"ba:notice:{notice_id}:targets"


async def remember_targets(redis: Redis, notice_id: str, targets: list[RouteTarget]) -> None:
    """Record the groups a notice reached (idempotent: a redelivery writes the same)."""
    payload = json.dumps([t.model_dump() for t in targets])
    await redis.set(_key(notice_id), payload, ex=_TTL_S)


async def earlier_targets(redis: Redis, notice_ids: list[str]) -> list[RouteTarget]:
    """The groups the referenced notices reached."""
    out: list[RouteTarget] = []
    for notice_id in notice_ids:
        raw = await redis.get(_key(notice_id))
        if raw:
            out.extend(RouteTarget.model_validate(t) for t in json.loads(raw))
    return out
