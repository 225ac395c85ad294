"""Delivery counts per channel and outcome in minute buckets, for the ops page.

The outcome scripts in shared.outbox add to these counters inside the Lua step that already
records an outcome (or folds in a receipt), so the notifier pays no extra round trip; the edge
reads the last hour in one pipeline. Keys:
  ba:stats:deliveries:{minute}  HASH "<channel>|<outcome>" -> outcomes that became so in that
                                minute (minutes since the epoch); expires after BUCKET_TTL_S
  ba:stats:deliveries:total     HASH "<channel>|<outcome>" -> outcomes standing so now (a
                                receipt that turns "delivered" into "undelivered" moves one)
The channel "none" holds the alerts that reached nobody (held, merged, no recipients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

TOTAL_KEY = "ba:stats:deliveries:total"
#: Minute buckets outlive the longest window read (an hour) with room for clock skew.
BUCKET_TTL_S = 2 * 3600
WINDOW_MINUTES = 60
#: Channel of the records that stand for "nobody to tell" (recipient "-").
NO_RECIPIENT = "none"

DELIVERED = frozenset({"delivered"})
FAILED = frozenset({"failed_permanent", "failed_transient", "undelivered"})
#: Shown first, in this order; any other channel follows alphabetically.
CHANNEL_ORDER = ("sms", "whatsapp", "telegram", "email", "outbox")


def minute_of(epoch_s: float) -> int:
    """The minute bucket (minutes since the epoch) of a moment."""
    return int(epoch_s // 60)


def minute_key(minute: int) -> str:
    """Hash of the outcomes recorded in one minute."""
    return f"ba:stats:deliveries:{minute}"


def stat_channel(channel: str, recipient: str) -> str:
    """The channel an outcome is counted under: "none" for the record of nobody to tell."""
    return NO_RECIPIENT if recipient == "-" else channel


def _split(field: str) -> tuple[str, str] | None:
    channel, sep, outcome = field.partition("|")
    return (channel, outcome) if sep and channel and outcome else None


def _kind(outcome: str) -> str:
    if outcome in DELIVERED:
        return "delivered"
    return "failed" if outcome in FAILED else "other"


def _channel_sort(channel: str) -> tuple[int, str]:
    order = CHANNEL_ORDER.index(channel) if channel in CHANNEL_ORDER else len(CHANNEL_ORDER)
    return order, channel


def summarise(
    buckets: Sequence[Mapping[str, Any]],
    first_minute: int,
    totals: Mapping[str, Any],
    recent_minutes: int = 5,
) -> dict[str, Any]:
    """Per channel: outcomes in the window, per-minute series, recent rate and failure share.

    `buckets` are the minute hashes from `first_minute` on, oldest first (an empty mapping for a
    minute without deliveries). The last `recent_minutes` give the recent rate per minute.
    """
    n = len(buckets)
    channels: dict[str, dict[str, Any]] = {}

    def entry(channel: str) -> dict[str, Any]:
        if channel not in channels:
            channels[channel] = {
                "channel": channel,
                "window": {},
                "totals": {},
                "per_minute": {k: [0] * n for k in ("delivered", "failed", "other")},
            }
        return channels[channel]

    for i, bucket in enumerate(buckets):
        for field, raw in bucket.items():
            parsed = _split(str(field))
            count = int(raw)
            if parsed is None or count <= 0:
                continue
            channel, outcome = parsed
            e = entry(channel)
            e["window"][outcome] = e["window"].get(outcome, 0) + count
            e["per_minute"][_kind(outcome)][i] += count
    for field, raw in totals.items():
        parsed = _split(str(field))
        if parsed is not None and int(raw) > 0:
            entry(parsed[0])["totals"][parsed[1]] = int(raw)
    out: list[dict[str, Any]] = []
    recent = max(1, min(recent_minutes, n)) if n else 1
    for channel in sorted(channels, key=_channel_sort):
        e = channels[channel]
        window = e["window"]
        delivered = sum(v for k, v in window.items() if k in DELIVERED)
        failed = sum(v for k, v in window.items() if k in FAILED)
        attempted = delivered + failed
        series = e["per_minute"]
        e["delivered"] = delivered
        e["failed"] = failed
        e["failure_rate"] = round(failed / attempted, 4) if attempted else None
        e["recent_per_minute"] = round(
            sum(series["delivered"][-recent:]) / recent + sum(series["failed"][-recent:]) / recent,
            2,
        )
        out.append(e)
    no_recipient = [c for c in out if c["channel"] == NO_RECIPIENT]
    return {
        "first_minute": first_minute,
        "minutes": n,
        "recent_minutes": recent,
        "channels": [c for c in out if c["channel"] != NO_RECIPIENT],
        "no_recipient": no_recipient[0]["window"] if no_recipient else {},
    }


async def read_delivery_stats(
    redis: Redis, now_s: float, minutes: int = WINDOW_MINUTES
) -> dict[str, Any]:
    """The last `minutes` minutes (the current one included) and the totals, summarised."""
    last = minute_of(now_s)
    first = last - minutes + 1
    async with redis.pipeline(transaction=False) as pipe:
        for minute in range(first, last + 1):
            pipe.hgetall(minute_key(minute))
        pipe.hgetall(TOTAL_KEY)
        *buckets, totals = await pipe.execute()
    return summarise([_texts(b) for b in buckets], first, _texts(totals))


def _texts(data: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in (data or {}).items()
    }
