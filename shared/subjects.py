"""NATS subjects and stream names, defined once and versioned.

Subjects stay low-cardinality: ids travel in payloads and headers, never in subject tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Literal

Channel = Literal["web", "sms", "telegram", "whatsapp", "dispatch"]
CHANNELS: Final[tuple[Channel, ...]] = ("web", "sms", "telegram", "whatsapp", "dispatch")

VERSION: Final = "v1"
PREFIX: Final = f"alerts.{VERSION}"

#: Everything a stream named by settings.stream_name holds.
STREAM_SUBJECTS: Final[tuple[str, ...]] = (f"{PREFIX}.>",)

RECEIVED_ALL: Final = f"{PREFIX}.received.>"
ROUTED: Final = f"{PREFIX}.routed"
#: Direct answers to one resident (e.g. WhatsApp, which has no inline webhook reply).
REPLY: Final = f"{PREFIX}.reply"

#: Delivery jobs, one per (alert, recipient), per provider channel and priority.
DELIVER_ALL: Final = f"{PREFIX}.deliver.>"

Priority = Literal["police", "resident"]
#: Police notices pre-empt resident reports: consumers always drain this order.
PRIORITIES: Final[tuple[Priority, ...]] = ("police", "resident")
DeliverChannel = Literal["sms", "telegram", "whatsapp", "email"]
DELIVER_CHANNELS: Final[tuple[DeliverChannel, ...]] = ("sms", "telegram", "whatsapp", "email")

ROUTER_DURABLE: Final = "router"
NOTIFIER_DURABLE: Final = "notifier"
REPLIES_DURABLE: Final = "notifier-replies"

#: Header that JetStream de-duplicates on.
MSG_ID_HEADER: Final = "Nats-Msg-Id"


def received(channel: Channel) -> str:
    """Subject an ingested alert of one channel is published on."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return f"{PREFIX}.received.{channel}"


def deliver(channel: DeliverChannel, priority: Priority) -> str:
    """Subject of the delivery jobs of one provider channel and priority."""
    if channel not in DELIVER_CHANNELS or priority not in PRIORITIES:
        raise ValueError(f"unknown delivery queue {channel!r}/{priority!r}")
    return f"{PREFIX}.deliver.{channel}.{priority}"


def deliver_durable(channel: DeliverChannel, priority: Priority) -> str:
    """Durable consumer name of one delivery queue (shared by every notifier replica)."""
    return f"deliver-{channel}-{priority}"


def delivery_msg_id(delivery_ids: Sequence[str], requeues: int = 0) -> str:
    """Nats-Msg-Id of a message of delivery jobs, so a repeated fan-out publishes it once.

    Made from the jobs it carries (one job: its delivery id; several: a digest of them), so
    the same jobs give the same id and different ones never share one. A job queued again
    carries how often it was, which keeps each new message apart from the one before.
    """
    if len(delivery_ids) == 1:
        base = delivery_ids[0]
    else:
        digest = hashlib.sha256("\n".join(sorted(delivery_ids)).encode()).hexdigest()
        base = f"jobs:{digest[:32]}"
    return f"deliver:{base}:q{requeues}" if requeues else f"deliver:{base}"


def dead_letter(stage: Literal["router", "notifier"]) -> str:
    """Subject a poison message of one stage is parked on."""
    return f"{PREFIX}.deadletter.{stage}"


def expiry_schedule(notice_id: str) -> str:
    """Subject holding the JetStream schedule of one notice's closing message.

    The one place an id is in a subject: JetStream keys a schedule by its subject. Nothing
    subscribes to these subjects and no metric is labelled with them (published with nats-py).
    """
    safe = "".join(c for c in notice_id if c.isalnum() or c in "-_")
    if not safe:
        raise ValueError("notice id has no subject-safe characters")
    return f"{PREFIX}.schedule.expiry.{safe}"


def routed_msg_id(alert_id: str, released: bool = False) -> str:
    """Nats-Msg-Id for the routed event, so a redelivered alert is routed once."""
    return f"routed:{alert_id}:released" if released else f"routed:{alert_id}"
