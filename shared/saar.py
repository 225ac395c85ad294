"""SAAR, 112 first: a report that does not say whether 112 was called waits briefly for the answer.

The edge asks "Is 112 al gebeld? ja/nee" and remembers which report of that sender is waiting;
the JA/NEE answer is stored against the report, and the router, which holds such a report for at
most the hold window, routes it with the answer. No answer in time: it goes out as "onbekend".
The report itself is in JetStream all along, so waiting never risks losing it.
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared.schemas import AlertReceived

#: Channels where we can ask the sender and get an answer back.
ASKING_CHANNELS = frozenset({"sms", "telegram", "whatsapp"})


def pending_key(sender_ref: str) -> str:
    """Redis key of the report awaiting one sender's answer to "Is 112 al gebeld?"."""
    return f"ba:saar:pending:{sender_ref}"


def _answer_key(alert_id: str) -> str:
    return f"ba:saar:answer:{alert_id}"


def awaits_answer(alert: AlertReceived) -> bool:
    """True for a resident report, on a channel we can ask on, that did not say."""
    return (
        alert.kind == "report"
        and alert.called_112 is None
        and alert.channel in ASKING_CHANNELS
        and alert.sender_ref is not None
    )


async def remember_question(redis: Redis, alert: AlertReceived, ttl_s: int) -> None:
    """Note that this sender's latest report awaits a JA/NEE."""
    if alert.sender_ref:
        await redis.set(pending_key(alert.sender_ref), alert.alert_id, ex=ttl_s)


async def record_answer(redis: Redis, sender_ref: str, called_112: bool, ttl_s: int) -> str | None:
    """Store a JA/NEE against the sender's waiting report; the report's id, or None."""
    raw = await redis.get(pending_key(sender_ref))
    if raw is None:
        return None
    alert_id = raw.decode() if isinstance(raw, bytes) else str(raw)
    await redis.set(_answer_key(alert_id), "ja" if called_112 else "nee", ex=ttl_s)
    return alert_id


async def answer_for(redis: Redis, alert_id: str) -> bool | None:
    """The stored answer for a report, or None when there is none (yet)."""
    raw = await redis.get(_answer_key(alert_id))
    if raw is None:
        return None
    return (raw.decode() if isinstance(raw, bytes) else str(raw)) == "ja"
