"""Publishing accepted alerts to JetStream; the edge answers 202 only after the PubAck."""

from __future__ import annotations

import logging

from faststream.nats import NatsBroker
from prometheus_client import CollectorRegistry, Counter

from shared import subjects
from shared.errors import TransientError
from shared.observability import latency_histogram, set_correlation_id
from shared.schemas import AlertReceived, ReplyRequested

log = logging.getLogger(__name__)


class AlertPublisher:
    """Publishes AlertReceived with Nats-Msg-Id, so a retried request is stored once."""

    def __init__(
        self, broker: NatsBroker, stream: str, timeout_s: float, metrics: CollectorRegistry
    ) -> None:
        self.broker = broker
        self.stream = stream
        self.timeout_s = timeout_s
        self.accepted = Counter(
            "ingest_alerts_accepted_total",
            "Alerts stored in JetStream",
            ["channel", "kind"],
            registry=metrics,
        )
        self.duplicates = Counter(
            "ingest_alerts_duplicate_total",
            "Requests JetStream recognised as repeats",
            ["channel"],
            registry=metrics,
        )
        self.seconds = latency_histogram(
            metrics, "ingest_publish_seconds", "Publish until PubAck", ("channel",)
        )

    async def publish(self, event: AlertReceived, msg_id: str | None = None) -> bool:
        """Store the event; True when new, False when JetStream saw this id already."""
        set_correlation_id(event.alert_id)
        with self.seconds.labels(event.channel).time():
            try:
                ack = await self.broker.publish(
                    event.model_dump_json().encode(),
                    subjects.received(event.channel),
                    headers={subjects.MSG_ID_HEADER: msg_id or event.alert_id},
                    correlation_id=event.alert_id,
                    stream=self.stream,
                    timeout=self.timeout_s,
                )
            except Exception as exc:
                # Any failure here means "not stored": the client must retry, never a 2xx.
                log.warning("publish failed: %s", type(exc).__name__)
                raise TransientError("alert store unavailable") from exc
        if ack is not None and ack.duplicate:
            self.duplicates.labels(event.channel).inc()
            return False
        self.accepted.labels(event.channel, event.kind).inc()
        log.info("accepted alert", extra={"alert_id": event.alert_id, "channel": event.channel})
        return True

    async def publish_reply(self, reply: ReplyRequested) -> None:
        """Store a direct reply for the notifier to send."""
        try:
            await self.broker.publish(
                reply.model_dump_json().encode(),
                subjects.REPLY,
                headers={subjects.MSG_ID_HEADER: reply.reply_id},
                stream=self.stream,
                timeout=self.timeout_s,
            )
        except Exception as exc:
            log.warning("reply publish failed: %s", type(exc).__name__)
            raise TransientError("alert store unavailable") from exc
