"""Data retention and erasure: what residents told us is kept only as long as it is useful.

Most keys carry their own TTL (outcomes, reach, incidents, SAAR questions, sessions). What a TTL
cannot cover is swept here: entries of Redis streams (the outbox, join requests) and the held
messages, which hold report texts and addresses. JetStream itself drops events after the
stream's max age. A person who opts out is erased: memberships, their outbox entries and join
requests, their held reports and the keys that follow them. Only the opt-out marker stays, as
a hash, so they are not messaged again (a suppression list, not a record of them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from shared.addresses import recipient_key, whatsapp_session_key
from shared.held import HELD, offences_key
from shared.registry import Registry, memberships_key
from shared.saar import pending_key
from shared.schemas import AlertReceived, MemberChannel

log = logging.getLogger(__name__)

#: Stream entries read per round trip while looking for one person's entries.
SCAN_CHUNK = 1000


@dataclass(frozen=True)
class Swept:
    """What one retention sweep removed."""

    stream_entries: int
    held: int


@dataclass(frozen=True)
class Erased:
    """What erasing one person removed."""

    memberships: int
    stream_entries: int
    held: int
    keys: int


def min_stream_id(now: datetime, keep_s: float) -> str:
    """The oldest stream entry id still kept (entry ids start with their time in ms)."""
    return f"{max(0, int((now.timestamp() - keep_s) * 1000))}-0"


def is_expired(received_at: datetime, now: datetime, keep_s: float) -> bool:
    """True when something received then is older than the retention period."""
    return (now - received_at).total_seconds() > keep_s


async def sweep(
    redis: Redis, *, now: datetime, keep_s: float, streams: Sequence[str]
) -> Swept:
    """Drop stream entries and held messages older than keep_s."""
    cutoff = min_stream_id(now, keep_s)
    trimmed = 0
    for stream in streams:
        trimmed += int(await redis.xtrim(stream, minid=cutoff, approximate=False))
    old = [
        alert_id
        for alert_id, alert in await _held_alerts(redis)
        if is_expired(alert.received_at, now, keep_s)
    ]
    await _drop_held(redis, old)
    return Swept(stream_entries=trimmed, held=len(old))


async def erase_person(
    redis: Redis,
    registry: Registry,
    *,
    channel: MemberChannel,
    address: str,
    sender_ref: str,
    streams: Sequence[str],
    extra_keys: Iterable[str] = (),
) -> Erased:
    """Remove everything kept about one person on one channel (the opt-out marker stays)."""
    rkey = recipient_key(channel, address)
    memberships = 0
    for entry in await redis.smembers(memberships_key(rkey)):
        group_id, _, member_id = _text(entry).partition("/")
        if await registry.remove_member(group_id, member_id):
            memberships += 1
    entries = 0
    for stream in streams:
        entries += await _delete_entries_of(redis, stream, channel, address)
    theirs = [a for a, alert in await _held_alerts(redis) if alert.sender_ref == sender_ref]
    await _drop_held(redis, theirs)
    keys = [
        memberships_key(rkey),
        whatsapp_session_key(rkey),
        pending_key(sender_ref),
        offences_key(sender_ref),
        *extra_keys,
    ]
    removed = int(await redis.delete(*keys))
    log.info(
        "erased a person",
        extra={
            "memberships": memberships,
            "stream_entries": entries,
            "held": len(theirs),
            "keys": removed,
        },
    )
    return Erased(memberships, entries, len(theirs), removed)


async def _held_alerts(redis: Redis) -> list[tuple[str, AlertReceived]]:
    raw = await redis.hgetall(HELD)
    return [(_text(k), AlertReceived.model_validate_json(v)) for k, v in raw.items()]


async def _drop_held(redis: Redis, alert_ids: Sequence[str]) -> None:
    if not alert_ids:
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(HELD, *alert_ids)
        pipe.hdel(f"{HELD}:reasons", *alert_ids)
        pipe.hdel(f"{HELD}:groups", *alert_ids)
        await pipe.execute()


async def _delete_entries_of(redis: Redis, stream: str, channel: str, address: str) -> int:
    """Delete the entries of a stream that name this person; a full scan (erasure is rare)."""
    deleted = 0
    start = "-"
    while True:
        rows = await redis.xrange(stream, min=start, count=SCAN_CHUNK)
        if not rows:
            return deleted
        mine = [
            _text(i) for i, fields in rows if i is not None and _names(fields, channel, address)
        ]
        if mine:
            deleted += int(await redis.xdel(stream, *mine))
        last = rows[-1][0]
        if last is None:
            return deleted
        if len(rows) < SCAN_CHUNK:
            return deleted
        start = "(" + _text(last)


def _names(
    fields: Mapping[bytes | str, bytes | str] | None, channel: str, address: str
) -> bool:
    """An entry's fields name this person: flat fields, or a JSON `entry` (the outbox)."""
    if not fields:
        return False
    flat = {_text(k): _text(v) for k, v in fields.items()}
    if "entry" in flat:
        try:
            flat = json.loads(flat["entry"])
        except ValueError:
            return False
    return flat.get("channel") == channel and flat.get("address") == address


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

