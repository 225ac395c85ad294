"""Pure normalisers: one channel's input to the shared AlertReceived event."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from shared.schemas import AlertReceived, Location, ReportIn, new_alert_id

_IDEMPOTENCY_NS = uuid.UUID("6f1f8f0e-52a3-4f0e-9d7c-3b2a1c0d9e8f")


def alert_id_for(channel: str, idempotency_key: str | None) -> str:
    """A fresh id, or one derived from the client's key so a retried request dedups in NATS."""
    if not idempotency_key:
        return new_alert_id()
    return uuid.uuid5(_IDEMPOTENCY_NS, f"{channel}:{idempotency_key}").hex


def sender_ref(channel: str, identity: str) -> str:
    """Opaque, stable sender reference: a hash, never the raw number or address."""
    return f"{channel}:{hashlib.sha256(identity.encode()).hexdigest()[:20]}"


def web_report(
    report: ReportIn, *, received_at: datetime, client: str, idempotency_key: str | None
) -> AlertReceived:
    """A web/JSON report as an AlertReceived."""
    return AlertReceived(
        alert_id=alert_id_for("web", idempotency_key),
        kind="report",
        channel="web",
        sender_ref=sender_ref("web", client),
        text=report.text,
        location=Location(lat=report.location.lat, lon=report.location.lon, source="coordinates"),
        called_112=report.called_112,
        received_at=received_at,
        raw=report.model_dump(mode="json"),
    )
