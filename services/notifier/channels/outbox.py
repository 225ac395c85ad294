"""The outbox channel: delivery for members whose channel has no provider account configured.

Entries are kept in Redis and shown by GET /v1/outbox, so `make run` is useful without accounts.
"""

from __future__ import annotations

from services.notifier.fanout import Recipient
from shared.outbox import OutcomeStore
from shared.schemas import AlertReceived, DeliveryAttempted, utcnow


class OutboxChannel:
    """Writes one outbox entry per recipient, atomically with its outcome."""

    name = "outbox"

    def __init__(self, store: OutcomeStore) -> None:
        self.store = store

    async def deliver(self, alert: AlertReceived, recipient: Recipient, text: str) -> bool:
        """Deliver once; False when this recipient already had an outcome for the alert."""
        attempt = DeliveryAttempted(
            alert_id=alert.alert_id,
            recipient=recipient.key,
            group_id=recipient.group_id,
            member_id=recipient.member_id,
            channel="outbox",
            outcome="delivered",
            attempted_at=utcnow(),
        )
        entry = {
            "alert_id": alert.alert_id,
            "kind": alert.kind,
            "recipient": recipient.key,
            "member_id": recipient.member_id,
            "group_id": recipient.group_id,
            "channel": recipient.channel,
            "address": recipient.address,
            "relation": recipient.relation,
            "text": text,
            "delivered_at": attempt.attempted_at.isoformat(),
        }
        return await self.store.record(attempt, entry)
