"""Closing messages for notices that expire, as JetStream schedules.

When a notice with `expires` is routed, a closing AlertReceived (a Cancel that references it,
marked expired) is stored as a schedule that JetStream publishes to the dispatch subject at the
expiry time. An Update replaces the schedule; a Cancel removes it. The schedule lives in the
stream, so it survives restarts of every process.
"""

from __future__ import annotations

from datetime import UTC

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared import subjects
from shared.notices import Notice
from shared.schemas import AlertReceived, utcnow


def closing_alert(notice: Notice) -> AlertReceived:
    """The closing message of a notice, sent when it expires."""
    closing = notice.model_copy(update={
        "notice_id": f"{notice.notice_id}-expired",
        "msg_type": "Cancel",
        "references": [notice.notice_id],
        "areas": [],
        "expires": None,
        "expired": True,
        "text": "Dit bericht is verlopen.",
        "sent": notice.expires or utcnow(),
    })
    return AlertReceived(
        alert_id=closing.notice_id, kind="notice", channel="dispatch",
        sender_ref=notice.sender, text=f"{notice.headline}\nDit bericht is verlopen.",
        received_at=notice.expires or utcnow(), raw={"expired": notice.notice_id},
        notice=closing,
    )


class ExpiryScheduler:
    """Keeps one JetStream schedule per notice that has an expiry."""

    def __init__(self, nats_servers: list[str], stream: str) -> None:
        self.nats_servers = nats_servers
        self.stream = stream
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        """Connect (a plain nats-py client: schedule subjects carry ids, keep them off metrics)."""
        self._nc = await nats.connect(
            self.nats_servers, max_reconnect_attempts=-1, reconnect_time_wait=1
        )
        self._js = self._nc.jetstream()

    async def stop(self) -> None:
        """Disconnect."""
        if self._nc is not None:
            await self._nc.drain()

    async def on_routed(self, notice: Notice) -> None:
        """Schedule, replace or remove the closing message of a notice just routed."""
        if self._js is None or notice.expired:
            return
        if notice.msg_type == "Cancel":
            for ref in notice.references:
                await self._clear(ref)
            return
        # An Update may move or drop the expiry of the notices it references.
        for ref in notice.references:
            await self._clear(ref)
        await self._clear(notice.notice_id)
        if notice.expires is None or notice.expires <= utcnow():
            return
        at = notice.expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self._js.publish(
            subjects.expiry_schedule(notice.notice_id),
            closing_alert(notice).model_dump_json().encode(),
            headers={
                "Nats-Schedule": f"@at {at}",
                "Nats-Schedule-Target": subjects.received("dispatch"),
            },
            stream=self.stream,
        )

    async def _clear(self, notice_id: str) -> None:
        assert self._js is not None
        await self._js.purge_stream(self.stream, subject=subjects.expiry_schedule(notice_id))
